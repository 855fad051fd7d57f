"""Importing the authors' AMED predictor snapshots (amed.authors) from self-made files in their format.

The files are written by the minimal code below, which reproduces the *format* of
``zju-pi/diff-sampler`` snapshots (EDM ``torch_utils.persistence``: every persistent object pickled as
``torch_utils.persistence._reconstruct_persistent_obj(meta)`` with ``module_src``, ``class_name`` and
``state``; tensors as torch storages, the loss's grid tagged for a CUDA device; the loss's solver
functions as ``solvers_amed.*`` globals), with none of their code.
"""

import collections
import io
import json
import math
import os
import pickle
import sys
import types
import zipfile
from unittest import mock

import pytest
import torch

import amed
from amed.authors import parse_run_name, read_authors_snapshot
from amed.cli import main
from amed.plugin import student_grid
from amed.predictor import AMEDConfig, AMEDPredictor, sha256_file
from amed.schedules import DiscreteVP, get_schedule

MARKER = "AMED_TEST_AUTHORS_MODULE_SRC_EXECUTED"
EVIL_SRC = f"import os\nos.environ[{MARKER!r}] = '1'\nraise RuntimeError('module_src was executed')\n"


# --- minimal stand-ins with the authors' object layout ---------------------------------------------------
class Linear(torch.nn.Module):
    def __init__(self, weight, bias):
        super().__init__()
        self.in_features, self.out_features = weight.shape[1], weight.shape[0]
        self.weight = torch.nn.Parameter(weight.clone(), requires_grad=False)
        self.bias = torch.nn.Parameter(bias.clone(), requires_grad=False)


class PositionalEmbedding(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.num_channels, self.max_positions, self.endpoint = 8, 10000, True


class Predictor(torch.nn.Module):
    """The AMED_predictor object: run settings as attributes, the layers, a plain Sigmoid module."""

    def __init__(self, state_dict, settings):
        super().__init__()
        self.settings = dict(settings)
        for k, v in settings.items():
            setattr(self, k, v)
        self.map_noise = PositionalEmbedding()
        for name in ("map_layer0", "enc_layer0", "enc_layer1", "fc_r", "fc_scale_dir", "fc_scale_time"):
            if f"{name}.weight" in state_dict:
                setattr(self, name, Linear(state_dict[f"{name}.weight"], state_dict[f"{name}.bias"]))
        self.sigmoid = torch.nn.Sigmoid()


class Loss:
    """The AMED_loss object (plain, persistent): settings, solver functions, the CUDA grid, buffers."""

    def __init__(self, settings, grid, stu="amed_sampler", tea="heun_sampler"):
        self.settings = dict(settings)
        self.__dict__.update(settings)
        self.solver_stu, self.solver_tea = stu, tea  # replaced by the fake solvers_amed functions when written
        self.num_steps_teacher = None
        self.tea_slice = None
        self.t_steps = grid
        self.buffer_model, self.buffer_t = [], []


class Evil:
    """An object whose unpickling would call ``fn(arg)``."""

    def __init__(self, fn, arg):
        self.fn, self.arg = fn, arg

    def __reduce__(self):
        return self.fn, (self.arg,)


class _CudaStorage:
    """A tensor's storage as torch pickles it from a CUDA device: legacy torch.save bytes tagged 'cuda:0'."""

    def __init__(self, tensor):
        typed = torch.storage.TypedStorage(wrap_storage=tensor.untyped_storage(), dtype=tensor.dtype, _internal=True)
        buf = io.BytesIO()
        with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
            torch.save(typed, buf, _use_new_zipfile_serialization=False)
        self.payload = buf.getvalue()


def _fake_modules():
    pkg, persistence, solvers = (types.ModuleType(n) for n in ("torch_utils", "torch_utils.persistence",
                                                               "solvers_amed"))

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - only referenced by name
        raise AssertionError("never called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    persistence._reconstruct_persistent_obj = _reconstruct_persistent_obj
    pkg.persistence = persistence
    for fn in ("amed_sampler", "euler_sampler", "ipndm_sampler", "dpm_2_sampler", "dpm_pp_sampler", "heun_sampler"):
        f = lambda *a, **k: None  # noqa: E731
        f.__module__, f.__name__, f.__qualname__ = "solvers_amed", fn, fn
        setattr(solvers, fn, f)
    return {"torch_utils": pkg, "torch_utils.persistence": persistence, "solvers_amed": solvers}


def _pickler_class(mods, cuda_tensors=(), module_src=EVIL_SRC):
    names = {Linear: "Linear", PositionalEmbedding: "PositionalEmbedding", Predictor: "AMED_predictor",
             Loss: "AMED_loss"}
    reconstruct = mods["torch_utils.persistence"]._reconstruct_persistent_obj
    solvers = mods["solvers_amed"]

    class SnapshotPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if any(obj is t for t in cuda_tensors):
                return torch._utils._rebuild_tensor_v2, (_CudaStorage(obj), obj.storage_offset(), tuple(obj.shape),
                                                         obj.stride(), False, collections.OrderedDict())
            if isinstance(obj, _CudaStorage):
                return torch.storage._load_from_bytes, (obj.payload,)
            if type(obj) not in names:
                return NotImplemented
            state = dict(obj.__dict__)
            init_kwargs = state.pop("settings", {})
            if isinstance(obj, Loss):
                state["solver_stu"] = getattr(solvers, state["solver_stu"])
                state["solver_tea"] = getattr(solvers, state["solver_tea"])
            state["_init_args"], state["_init_kwargs"] = (), dict(init_kwargs)
            meta = dict(type="class", version=6, module_src=module_src, class_name=names[type(obj)], state=state)
            return reconstruct, (meta,)

    return SnapshotPickler


def write_snapshot(path, data, cuda_tensors=(), fmt="pkl"):
    """Pickle ``data`` as the authors' training loop does (``.pkl``), or torch.save it (``.pt``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    mods = _fake_modules()
    with mock.patch.dict(sys.modules, mods):
        pickler = _pickler_class(mods, cuda_tensors if fmt == "pkl" else ())  # .pt: storage ids say cuda:0
        if fmt == "pkl":
            buf = io.BytesIO()
            pickler(buf, protocol=4).dump(data)
            path.write_bytes(buf.getvalue())
        else:
            module = types.SimpleNamespace(Pickler=pickler, Unpickler=pickle.Unpickler, __name__="fake_pickle")
            with mock.patch.object(torch.serialization, "location_tag", lambda storage: "cuda:0"):
                torch.save(data, path, pickle_module=module)
    assert not any(k in sys.modules for k in mods)
    return path


# --- snapshots built from this project's predictor -------------------------------------------------------
NEW = dict(dataset_name="digits-8", img_resolution=8, num_steps=4, sampler_stu="amed", sampler_tea="heun", M=1,
           guidance_type=None, guidance_rate=0.0, schedule_type="time_uniform", schedule_rho=1.0, afs=True,
           scale_dir=0.01, scale_time=0.2, max_order=3, predict_x0=True, lower_order_final=True)
LOSS_KEYS = ("num_steps", "M", "schedule_type", "schedule_rho", "afs", "max_order", "predict_x0", "lower_order_final")
FUNCS = {"amed": "amed_sampler", "ipndm": "ipndm_sampler", "dpmpp": "dpm_pp_sampler", "heun": "heun_sampler",
         "euler": "euler_sampler", "dpm": "dpm_2_sampler"}


def _weights(cfg: AMEDConfig, seed: int) -> dict:
    """A predictor with non-trivial heads (c, a far from 1), so a misplaced layer changes the samples."""
    p = AMEDPredictor(cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 100)
    with torch.no_grad():
        for name in ("fc_r", "fc_scale_dir", "fc_scale_time"):
            layer = getattr(p, name)
            if layer is not None:
                layer.weight.mul_(3.0)
                layer.bias.copy_(torch.randn(1, generator=g))
    return {k: v.clone() for k, v in p.state_dict().items()}


def make_snapshot(directory, settings=None, weights=None, loss=True, sigma=(0.002, 80.0), grid=None, drop=(),
                  loss_overrides=None, fmt="pkl", extra_state=None, name="network-snapshot-000010"):
    settings = {**NEW, **(settings or {})}
    for k in drop:
        settings.pop(k, None)
    if weights is None:
        # Which heads exist (the first release always has the c head).
        sd = 0.01 if settings.get("scale_dir", 0.01) else 0.0
        weights = _weights(AMEDConfig(scale_dir=sd, scale_time=0.2 if settings.get("scale_time") else 0.0), seed=3)
    pred = Predictor(weights, settings)
    for k, v in (extra_state or {}).items():
        setattr(pred, k, v)
    data = {"model": pred.eval().requires_grad_(False)}
    cuda = []
    if loss:
        n = settings.get("num_steps", 4)
        if grid is None and "schedule_type" in settings:
            grid = get_schedule(settings["schedule_type"], n, sigma[0], sigma[1],
                                None if settings["schedule_type"] == "logsnr" else settings.get("schedule_rho"))
        lset = {k: settings[k] for k in LOSS_KEYS if k in settings}
        lset.update(sigma_min=sigma[0], sigma_max=sigma[1])
        lset.update(loss_overrides or {})
        loss_obj = Loss(lset, grid, FUNCS[settings.get("sampler_stu", "amed")],
                        FUNCS[settings.get("sampler_tea", "heun")])
        data["loss_fn"] = loss_obj
        if grid is not None:
            cuda.append(grid)
    return write_snapshot(directory / f"{name}.{fmt}", data, cuda_tensors=cuda, fmt=fmt), weights


RUN = "00012-digits-8-4-5-amed-heun-1-time_uniform-afs"


@pytest.fixture(scope="module")
def model():
    return amed.load_model("digits-8")


def _noise(model, n=6):
    return amed.randn_seeds(range(n), model.info.shape)


def _expected(**kw) -> AMEDConfig:
    base = dict(solver="amed", nfe=5, schedule="time_uniform", rho=1.0, afs=True, sigma_min=0.002, sigma_max=80.0,
                scale_dir=0.01, scale_time=0.2, solver_options={}, teacher="heun", teacher_options={}, M=1,
                model="digits-8", guidance=None, shape=None)
    base.update(kw)
    return AMEDConfig(**base)


# The three kinds of released predictor: AMED-Solver (current format), the iPNDM plugin in the first
# release's format (no scale_dir attribute, a bool scale_time), and a DPM-Solver++ plugin.
CASES = {
    "amed-solver": (dict(), RUN, _expected()),
    "ipndm-plugin-first-release": (
        dict(sampler_stu="ipndm", sampler_tea="ipndm", M=2, schedule_type="polynomial", schedule_rho=7.0,
             max_order=4, scale_time=True), "00013-digits-8-4-5-ipndm-ipndm-2-poly7.0-afs",
        _expected(solver="ipndm", schedule="polynomial", rho=7.0, solver_options={"max_order": 4}, teacher="ipndm",
                  teacher_options={"max_order": 4}, M=2)),
    "dpmpp-plugin": (
        dict(sampler_stu="dpmpp", sampler_tea="dpmpp", M=2, schedule_type="logsnr", schedule_rho=1.0, afs=False,
             num_steps=4, scale_time=0.0), "00014-digits-8-4-6-dpmpp-dpmpp-2-logsnr",
        _expected(solver="dpmpp3m", nfe=6, afs=False, schedule="logsnr", rho=None, scale_time=0.0, teacher="dpmpp3m",
                  solver_options=(opts := {"max_order": 3, "predict_x0": True, "lower_order_final": True,
                                           "thresholding": True}), teacher_options=opts, M=2)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_imported_snapshot_samples_like_the_project_format(tmp_path, model, case):
    settings, run, want = CASES[case]
    drop = ("scale_dir",) if case.startswith("ipndm") else ()
    path, weights = make_snapshot(tmp_path / run, settings, drop=drop)
    assert b"cuda:0" in path.read_bytes() and b"module_src" in path.read_bytes()
    imported = amed.load_predictor(path)
    assert imported.config == want
    assert imported.source["file"] == path.name and imported.source["sha256"] == sha256_file(path)

    own = AMEDPredictor(want)
    own.load_state_dict(weights)
    own_loaded = amed.load_predictor(own.save(tmp_path / "own"))
    converted = amed.load_predictor(imported.save(tmp_path / "converted"))
    assert converted.source == imported.source and converted.config == want
    noise = _noise(model)
    x_own = amed.sample(model, noise, predictor=own_loaded)
    x_imp = amed.sample(model, noise, predictor=imported)
    assert torch.equal(x_imp, x_own) and torch.equal(amed.sample(model, noise, predictor=converted), x_own)
    # The weights reach the layers they came from: compare with the authors' head formulas.
    h = torch.randn(5, 8, 8, generator=torch.Generator().manual_seed(0))
    t_cur, t_next = torch.full((5,), 6.95, dtype=torch.float64), torch.full((5,), 1.29, dtype=torch.float64)
    with torch.no_grad():
        r, c, a = imported(h, t_cur, t_next)
    r_ref, c_ref, a_ref = _authors_forward(weights, h, 6.95, 1.29, want.scale_dir, want.scale_time)
    torch.testing.assert_close(r, r_ref, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(c, c_ref, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(a, a_ref, rtol=1e-6, atol=1e-7)
    if want.scale_time:
        assert float((a - 1).abs().max()) > 0.01  # the a head is live, so the comparison above means something


def _authors_forward(w, h, t_cur, t_next, scale_dir, scale_time):
    """The authors' predictor head formulas (authors-code.md Sec. 2), in float64 from the raw weights."""
    w = {k: v.double() for k, v in w.items()}
    freqs = (1 / 10000) ** (torch.arange(4, dtype=torch.float64) / 3)

    def emb(t):
        e = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)])  # cos/sin, then swapped
        return torch.nn.functional.silu(w["map_layer0.weight"] @ e + w["map_layer0.bias"])

    x = h.reshape(h.shape[0], -1).double()
    z = torch.nn.functional.silu(x @ w["enc_layer0.weight"].T + w["enc_layer0.bias"]) @ w["enc_layer1.weight"].T
    z = torch.cat([z + w["enc_layer1.bias"], emb(t_cur).expand(len(x), 8), emb(t_next).expand(len(x), 8)], 1)

    def head(name):
        return torch.sigmoid(z @ w[f"{name}.weight"].T + w[f"{name}.bias"]).squeeze(1)

    ones = torch.ones(len(x), dtype=torch.float64)
    c = 1 - scale_dir + 2 * scale_dir * head("fc_scale_dir") if scale_dir else ones
    a = 1 - scale_time + 2 * scale_time * head("fc_scale_time") if scale_time else ones
    return head("fc_r"), c, a


def test_first_release_ranges_and_dpmpp_data_prediction(tmp_path):
    # First release: c = sigmoid/50 + 0.99 always, sigmoid/10 + 0.95 for DPM++ with predict_x0; a = sigmoid/2.5 + 0.8.
    base = dict(sampler_stu="dpmpp", sampler_tea="dpmpp", M=2, schedule_type="logsnr", afs=True, scale_time=False,
                max_order=2, predict_x0=True)
    path, _ = make_snapshot(tmp_path / "00001-digits-8-4-5-dpmpp-dpmpp-2-logsnr-afs", base, drop=("scale_dir",))
    cfg = amed.load_predictor(path).config
    assert (cfg.scale_dir, cfg.scale_time) == (0.05, 0.0)
    assert cfg.solver == "dpmpp2m" and cfg.solver_options == {"max_order": 2, "predict_x0": True,
                                                               "lower_order_final": True, "thresholding": True}
    path, _ = make_snapshot(tmp_path / "00002-digits-8-4-5-dpmpp-dpmpp-2-logsnr-afs", {**base, "predict_x0": False},
                            drop=("scale_dir",))
    cfg = amed.load_predictor(path).config
    assert cfg.scale_dir == 0.01 and cfg.solver_options["thresholding"] is False


def test_paper_predictors_map_to_registered_models(tmp_path):
    """The released runs' names and settings, read without loading any diffusion model."""
    path, _ = make_snapshot(tmp_path / "00012-cifar10-4-5-amed-heun-1-time_uniform-afs",
                            dict(dataset_name="cifar10", img_resolution=32, scale_time=0.0))
    cfg = amed.load_predictor(path).config
    assert (cfg.model, cfg.shape, cfg.solver, cfg.nfe, cfg.schedule, cfg.rho) == ("cifar10", (3, 32, 32), "amed", 5,
                                                                                 "time_uniform", 1.0)
    assert (cfg.sigma_min, cfg.sigma_max, cfg.teacher, cfg.M, cfg.guidance) == (0.002, 80.0, "heun", 1, None)
    # Stable Diffusion (a .pt): 6 points without AFS, DPM++ in noise prediction, CFG 7.5, discrete schedule;
    # the run name doubles the NFE for CFG as their train.py does.
    table = DiscreteVP.scaled_linear()
    sd = dict(dataset_name="ms_coco", img_resolution=64, num_steps=6, sampler_stu="dpmpp", sampler_tea="dpmpp", M=2,
              guidance_type="cfg", guidance_rate=7.5, schedule_type="discrete", schedule_rho=1.0, afs=False,
              scale_dir=0.01, scale_time=0.2, max_order=2, predict_x0=False)
    run = tmp_path / "00027-ms_coco-6-20-dpmpp-dpmpp-2-discrete"
    path, _ = make_snapshot(run, sd, fmt="pt", sigma=(table.sigma_min, table.sigma_max))
    assert zipfile.is_zipfile(path)
    cfg = amed.load_predictor(path).config
    assert (cfg.model, cfg.shape, cfg.solver, cfg.nfe, cfg.guidance) == ("sd-v1-5", (4, 64, 64), "dpmpp2m", 10, 7.5)
    assert cfg.solver_options == {"max_order": 2, "predict_x0": False, "lower_order_final": True, "thresholding": False}
    assert (cfg.schedule, cfg.rho) == ("discrete", 1.0) and cfg.sigma_max == pytest.approx(14.614641, rel=1e-6)
    assert amed.load_predictor(path, model="sd-v1-4").config.model == "sd-v1-4"
    with pytest.raises(ValueError, match="dataset_name='ms_coco'.*got model='cifar10'"):
        amed.load_predictor(path, model="cifar10")
    # A .pt holding only the predictor: the sigma range is SD's table range.
    path, _ = make_snapshot(run, sd, fmt="pt", loss=False, name="predictor-only")
    assert amed.load_predictor(path).config.sigma_min == pytest.approx(table.sigma_min)


def test_pt_archive_samples_like_the_pickle(tmp_path, model):
    a, weights = make_snapshot(tmp_path / RUN, fmt="pkl")
    b, _ = make_snapshot(tmp_path / RUN, weights=weights, fmt="pt")
    pa, pb = amed.load_predictor(a), amed.load_predictor(b)
    assert pa.config == pb.config
    noise = _noise(model, 4)
    assert torch.equal(amed.sample(model, noise, predictor=pa), amed.sample(model, noise, predictor=pb))


def test_cuda_grid_loads_on_the_cpu(tmp_path):
    path, _ = make_snapshot(tmp_path / RUN)
    snap = read_authors_snapshot(path)
    want = student_grid(_expected())
    assert snap["loss_grid"].device.type == "cpu" and torch.allclose(snap["loss_grid"], want, rtol=1e-12)
    assert snap["kimg"] == 10 and snap["has_loss"]
    # A grid that is not this project's grid for the mapped schedule is refused.
    path, _ = make_snapshot(tmp_path / "other" / RUN, grid=get_schedule("polynomial", 4, rho=7.0))
    with pytest.raises(ValueError, match=r"loss_fn.t_steps .* not this project's time_uniform grid"):
        amed.load_predictor(path)


def test_module_src_is_never_run(tmp_path, model):
    path, _ = make_snapshot(tmp_path / RUN)
    os.environ.pop(MARKER, None)
    amed.load_predictor(path)
    assert MARKER not in os.environ
    assert not any(k in sys.modules for k in ("torch_utils", "torch_utils.persistence", "solvers_amed"))


@pytest.mark.parametrize("fn,label", [(os.system, "system"), (exec, "exec"), (eval, "eval")])
@pytest.mark.parametrize("fmt", ["pkl", "pt"])
def test_malicious_globals_are_refused_and_nothing_runs(tmp_path, fn, label, fmt):
    flag = tmp_path / "ran"
    arg = {os.system: f"touch {flag}", exec: f"open({str(flag)!r}, 'w').close()",
           eval: f"open({str(flag)!r}, 'w').close()"}[fn]
    path, _ = make_snapshot(tmp_path / RUN, extra_state={"payload": Evil(fn, arg)}, fmt=fmt)
    raw = path.read_bytes() if fmt == "pkl" else zipfile.ZipFile(path).read(
        next(n for n in zipfile.ZipFile(path).namelist() if n.endswith("/data.pkl")))
    assert label.encode() in raw  # the stream really asks for the global
    with pytest.raises(ValueError, match=f"refused: refusing to load global .*{label}") as err:
        amed.load_predictor(path)
    assert "\n" not in str(err.value) and not flag.exists()
    # The command line says it in one line, exits 2 and writes nothing.
    assert main(["import-predictor", str(path), "--out", str(tmp_path / "out")]) == 2
    assert not flag.exists() and not list(tmp_path.glob("out*"))


def test_malicious_storage_payload_and_torchscript_are_refused(tmp_path):
    flag = tmp_path / "ran"
    # A storage whose inner bytes are a pickle calling os.system: torch's weights-only reader refuses it.
    inner = pickle.dumps(Evil(os.system, f"touch {flag}"), protocol=2)

    class Payload:
        def __reduce__(self):
            return torch.storage._load_from_bytes, (inner,)

    path, _ = make_snapshot(tmp_path / RUN, extra_state={"payload": Payload()})
    with pytest.raises(ValueError, match=r"refusing a tensor storage .*GLOBAL posix\.system") as err:
        amed.load_predictor(path)
    assert "\n" not in str(err.value) and not flag.exists()
    # A TorchScript archive (torch.load would hand it to torch.jit.load) is refused unread.
    script = tmp_path / "script.pt"
    torch.jit.save(torch.jit.script(torch.nn.Linear(2, 2)), str(script))
    with pytest.raises(ValueError, match="TorchScript"):
        amed.load_predictor(script)
    junk = tmp_path / "junk.pkl"
    junk.write_bytes(b"not a pickle")
    with pytest.raises(ValueError, match="neither a pickle"):
        amed.load_predictor(junk)


@pytest.mark.parametrize("change,message", [
    (dict(max_order=5, sampler_stu="ipndm"), r"max_order=5 cannot be mapped: ipndm takes 1\.\.4"),
    (dict(sampler_stu="unipc"), r"sampler_stu='unipc' cannot be mapped"),
    (dict(guidance_type="cg", guidance_rate=1.0), r"guidance_type='cg' cannot be mapped"),
    (dict(schedule_type="discrete"), r"schedule_type='discrete' cannot be mapped for model 'digits-8'"),
    (dict(scale_time=1.5), r"scale_time=1.5 cannot be mapped"),
    (dict(dataset_name="lsun_bedroom_ldm"), r"dataset_name='lsun_bedroom_ldm' cannot be mapped: the LDM"),
    (dict(dataset_name="mnist"), r"dataset_name='mnist' cannot be mapped to a model here"),
])
def test_unmappable_settings_are_refused_naming_the_field(tmp_path, change, message):
    path, _ = make_snapshot(tmp_path / "run", change, loss=False)
    with pytest.raises(ValueError, match=message) as err:
        amed.load_predictor(path)
    assert "\n" not in str(err.value)


def test_architecture_other_than_the_released_one_is_refused(tmp_path):
    weights = _weights(AMEDConfig(scale_dir=0.01, scale_time=0.2), seed=0)
    weights["enc_layer0.weight"] = torch.zeros(32, 64)
    weights["enc_layer0.bias"] = torch.zeros(32)
    path, _ = make_snapshot(tmp_path / RUN, weights=weights)
    with pytest.raises(ValueError, match=r"enc_layer0.weight has shape \(32, 64\)"):
        amed.load_predictor(path)
    # Heads that do not fit the recorded ranges (an a head with scale_time=0).
    path, _ = make_snapshot(tmp_path / "b" / RUN, dict(scale_time=0.0),
                            weights=_weights(AMEDConfig(scale_dir=0.01, scale_time=0.2), seed=0))
    with pytest.raises(ValueError, match=r"do not fit scale_dir=0.01, scale_time=0.*unexpected \['fc_scale_time"):
        amed.load_predictor(path)


def test_missing_settings_are_asked_for(tmp_path, model):
    # No dataset name anywhere: the model must be given.
    path, _ = make_snapshot(tmp_path / "run", dict(dataset_name=None))
    with pytest.raises(ValueError, match=r"does not record dataset_name; pass model=\.\.\. \(--model\)"):
        amed.load_predictor(path)
    assert amed.load_predictor(path, model="digits-8").config == _expected()
    # No loss object (so no sigma range) for a model that is not one of the paper's.
    path, _ = make_snapshot(tmp_path / "run", loss=False, name="no-loss")
    with pytest.raises(ValueError, match=r"does not record sigma_min; pass sigma_min=\.\.\. \(--sigma-min\)"):
        amed.load_predictor(path)
    assert amed.load_predictor(path, sigma_min=0.002, sigma_max=80.0).config == _expected()
    # A setting the predictor lacks (a max_order for the iPNDM plugin).
    path, _ = make_snapshot(tmp_path / "run", dict(sampler_stu="ipndm", sampler_tea="ipndm", max_order=None),
                            loss=False, name="no-order")
    with pytest.raises(ValueError, match=r"does not record max_order; pass solver_options=\.\.\. \(--opt"):
        amed.load_predictor(path, sigma_min=0.002, sigma_max=80.0)
    # The command line names the flag too.
    rc = main(["import-predictor", str(tmp_path / "run" / "no-loss.pkl"), "--out", str(tmp_path / "x")])
    assert rc == 2
    assert main(["import-predictor", str(tmp_path / "run" / "no-loss.pkl"), "--out", str(tmp_path / "x"),
                 "--sigma-min", "0.002", "--sigma-max", "80"]) == 0
    assert amed.load_predictor(tmp_path / "x.json").config == _expected()


@pytest.mark.parametrize("run,settings,loss_overrides,message", [
    ("00012-digits-8-4-5-amed-heun-2-time_uniform-afs", {}, None,
     r"M conflicts: the pickled predictor says 1 but the run directory name '00012-.*' says 2"),
    ("00012-digits-8-4-6-amed-heun-1-time_uniform", {}, None, r"afs conflicts: the pickled predictor says True"),
    ("00012-digits-8-4-5-amed-heun-1-poly7.0-afs", {}, None, r"schedule_type conflicts"),
    ("00012-digits-8-4-5-ipndm-heun-1-time_uniform-afs", {}, None, r"sampler_stu conflicts"),
    ("00012-digits-8-4-7-amed-heun-1-time_uniform-afs", {}, None,
     r"the run name says NFE=7 but num_steps=4, afs=True give NFE=5"),
    ("00012-cifar10-4-5-amed-heun-1-time_uniform-afs", {}, None, r"dataset_name conflicts"),
    (RUN, {}, {"num_steps": 5}, r"num_steps conflicts: the pickled predictor says 4 but the pickled loss says 5"),
])
def test_conflicting_settings_are_refused(tmp_path, run, settings, loss_overrides, message):
    path, _ = make_snapshot(tmp_path / run, settings, loss_overrides=loss_overrides)
    with pytest.raises(ValueError, match=message):
        amed.load_predictor(path)


def test_caller_settings_fill_gaps_but_never_contradict(tmp_path):
    path, _ = make_snapshot(tmp_path / RUN)
    assert amed.load_predictor(path, nfe=5, afs=True, model="digits-8").config == _expected()
    for kw, message in [(dict(nfe=7), r"the snapshot says nfe=5, got nfe=7"),
                        (dict(model="cifar10"), r"dataset_name='digits-8' \(model 'digits-8'\), got model='cifar10'"),
                        (dict(sigma_max=14.6), r"the snapshot says sigma_max=80.0"),
                        (dict(solver_options={"max_order": 2}), r"solver_options=\{\}")]:
        with pytest.raises(ValueError, match=message):
            amed.load_predictor(path, **kw)
    with pytest.raises(TypeError, match="unknown import options"):
        amed.load_predictor(path, lr=1.0)
    # The project's own files take no import options.
    own = AMEDPredictor(_expected()).save(tmp_path / "own")
    with pytest.raises(ValueError, match="apply to imported authors' snapshots"):
        amed.load_predictor(own, model="digits-8")


def test_run_names():
    assert parse_run_name("00012-cifar10-4-5-amed-heun-1-time_uniform-afs") == dict(
        run="00012-cifar10-4-5-amed-heun-1-time_uniform-afs", dataset_name="cifar10", num_steps=4, nfe=5,
        sampler_stu="amed", sampler_tea="heun", M=1, afs=True, schedule_type="time_uniform")
    sd = parse_run_name("00027-ms_coco-6-20-dpmpp-dpmpp-2-discrete")
    assert (sd["dataset_name"], sd["afs"], sd["schedule_type"], sd["M"]) == ("ms_coco", False, "discrete", 2)
    poly = parse_run_name("00003-lsun_bedroom_ldm-5-7-ipndm-ipndm-2-poly7.0-afs")
    assert (poly["dataset_name"], poly["schedule_type"], poly["schedule_rho"]) == ("lsun_bedroom_ldm", "polynomial",
                                                                                   7.0)
    assert parse_run_name("00003-digits-8-4-5-amed-heun-1-uni1.0-afs")["dataset_name"] == "digits-8"
    assert parse_run_name("network-snapshot-000010") is None
    assert parse_run_name("00012-cifar10-4-5-amed-heun-1-time_uniform-afsfoo") is None


def test_cli_import_and_sample(tmp_path, capsys):
    path, _ = make_snapshot(tmp_path / RUN)
    assert main(["import-predictor", str(path), "--out", str(tmp_path / "conv")]) == 0
    assert "amed NFE=5 time_uniform" in capsys.readouterr().out
    rec = json.loads((tmp_path / "conv.json").read_text())
    assert rec["source"]["file"] == path.name and rec["source"]["run"] == RUN
    assert rec["source"]["sha256"] == sha256_file(path) and rec["source"]["authors_settings"]["sampler_stu"] == "amed"
    # `amed sample --predictor X.pkl` without --model uses the predictor's model; same images as the converted pair.
    common = ["--seeds", "0-3", "--quiet", "--compile", "off"]
    assert main(["sample", "--predictor", str(path), "--out", str(tmp_path / "a.npz"), *common]) == 0
    assert main(["sample", "--predictor", str(tmp_path / "conv.json"), "--model", "digits-8",
                 "--out", str(tmp_path / "b.npz"), *common]) == 0
    import numpy as np

    with np.load(tmp_path / "a.npz") as a, np.load(tmp_path / "b.npz") as b:
        assert np.array_equal(a["images"], b["images"])
    capsys.readouterr()
    assert main(["sample", "--predictor", str(path), "--nfe", "7", "--out", str(tmp_path / "c.npz"), *common]) == 2
    assert "the snapshot says nfe=5, got nfe=7" in capsys.readouterr().err
    assert main(["import-predictor", str(tmp_path / "conv.json"), "--out", str(tmp_path / "d")]) == 2


def test_sigma_range_helper_values():
    # Sanity of the Stable Diffusion range used for a .pt without its loss object (authors-code.md Sec. 5).
    table = DiscreteVP.scaled_linear()
    assert math.isclose(table.sigma_min, 0.029167, rel_tol=1e-4) and math.isclose(table.sigma_max, 14.614641,
                                                                                   rel_tol=1e-6)


@pytest.mark.slow
def test_workflow_samples_with_an_imported_predictor_instead_of_training(tmp_path, model):
    """`imported: {5: snapshot}` on a method: its NFE-5 cell takes the authors' predictor (no teacher cache, no
    training) and samples exactly as the same snapshot loaded by hand; a snapshot whose settings disagree with
    the method's is refused by the job, naming the field."""
    import subprocess

    import numpy as np
    import yaml

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    snap, _ = make_snapshot(tmp_path / RUN)
    method = {"kind": "amed_solver", "solver": "amed", "schedule": "time_uniform", "rho": 1, "afs": "auto",
              "imported": {"5": str(snap)},
              "train": {"teacher": "heun", "M": 1, "scale_dir": 0.01, "scale_time": 0.2, "seeds": 1}}
    cfg = {"datasets": {"digits": {"model": "digits-8", "metric": "fd-digits", "num_samples": 16, "shard_size": 16,
                                   "batch": 16, "nfe": [5], "methods": {"amed_solver": method}}}}
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([root, os.environ.get("PYTHONPATH", "")])}
    target = "results/digits/amed_solver/nfe5/seed0/samples/000000.npz"

    def run(*extra):
        return subprocess.run([sys.executable, "-m", "snakemake", "-s", os.path.join(root, "Snakefile"),
                               "--directory", str(tmp_path), f"--configfile={tmp_path / 'cfg.yaml'}", "--cores", "1",
                               *extra, target], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)

    r = run()
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    assert not (tmp_path / "results/digits/teacher").exists()
    assert "rule train:" in r.stdout + r.stderr and "rule teacher:" not in r.stdout + r.stderr
    got = amed.load_predictor(tmp_path / "results/digits/amed_solver/nfe5/seed0/predictor.json")
    want = amed.load_predictor(snap)
    assert got.config.nfe == 5 and got.config.teacher == "heun" and got.source["sha256"] == sha256_file(snap)
    with np.load(tmp_path / target) as z:
        images, seeds = z["images"], z["seeds"]
    x = amed.sample(model, amed.randn_seeds(seeds.tolist(), model.info.shape), predictor=want)
    np.testing.assert_array_equal(images, model.images(x).numpy())
    # A snapshot trained with another teacher than the method says: the job refuses it and writes nothing.
    method["train"]["teacher"] = "dpm2"
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    for p in (tmp_path / "results").rglob("predictor.*"):
        p.unlink()
    r = run("--forceall")
    assert r.returncode != 0
    log = (tmp_path / "results/logs/train/digits/amed_solver/nfe5/seed0.log").read_text()
    assert "teacher" in log and "Traceback" not in log, log
    assert not (tmp_path / "results/digits/amed_solver/nfe5/seed0/predictor.json").exists()
