"""The authors' released AMED predictors (zju-pi/diff-sampler), imported without running their code.

Their ``train.py`` writes ``network-snapshot-<kimg>.pkl`` = ``{'model': AMED_predictor, 'loss_fn': AMED_loss}``
with EDM's ``torch_utils.persistence`` (class source embedded, ``loss_fn.t_steps`` a CUDA tensor) into a run
directory ``<exp>-<dataset>-<num_steps>-<NFE>-<stu>-<tea>-<M>-<sched>[-afs]`` (authors-code.md Sec. 3, 7).
The Stable Diffusion predictor is a ``torch.save`` zip (``.pt``) holding the same objects.

Both are read with the restricted unpickler of ``amed.models.safe_pickle``, extended by exactly the globals a
predictor snapshot adds (the ``Sigmoid`` module and the loss's solver-function references, all replaced by
inert stand-ins); ``module_src`` is never looked at, CUDA storages load onto the CPU, and any other global,
a TorchScript archive or a malformed file is refused before anything from it is called. The run settings
stored on the predictor (``sample.py`` reads them from there), on the loss object and in the run name must
agree; they are mapped to an ``AMEDConfig`` (Sec. 4's correspondences), and what cannot be mapped is refused
naming the field. Settings the files do not record are taken from the caller's keyword arguments, which
may fill a gap but never contradict the files.
"""

from __future__ import annotations

import io
import math
import pickle
import re
import zipfile
from pathlib import Path

import torch

from ._io import sha256_file
from .models.safe_pickle import PersistentStub, RestrictedUnpickler, _load_from_bytes, stub_state_dict
from .predictor import AMEDConfig, AMEDPredictor
from .errors import AmedValueError

__all__ = ["DATASET_MODELS", "is_authors_snapshot", "read_authors_snapshot", "authors_settings", "authors_config",
           "load_authors_predictor", "import_authors_predictor"]

# The authors' dataset_name -> this project's model names (first = default) and sample shape.
DATASET_MODELS: dict[str, tuple[str, ...]] = {
    "cifar10": ("cifar10",), "ffhq": ("ffhq",), "afhqv2": ("afhqv2",), "imagenet64": ("imagenet64",),
    "lsun_bedroom": ("lsun_bedroom",),
    "ms_coco": ("sd-v1-5", "sd-v1-4"),  # their code loads SD v1.5; the paper names v1.4
}
_SHAPES = {"cifar10": (3, 32, 32), "ffhq": (3, 64, 64), "afhqv2": (3, 64, 64), "imagenet64": (3, 64, 64),
           "lsun_bedroom": (3, 256, 256), "ms_coco": (4, 64, 64)}
_NOT_HERE = {
    "lsun_bedroom_ldm": "the LDM VQ-f4 LSUN Bedroom model is not in this project's registry",
    "imagenet256": "the ADM ImageNet 256 model with classifier guidance is not in this project's registry",
    "lsun_cat": "no LSUN Cat model is in this project's registry",
}
_SD_MODELS = ("sd-v1-4", "sd-v1-5")

# Their sampler names -> ours (authors-code.md Sec. 4). dpmpp depends on max_order.
_SOLVERS = {"amed": "amed", "euler": "ddim", "dpm": "dpm2", "ipndm": "ipndm", "heun": "heun"}
_SAMPLER_FUNCTIONS = {"amed_sampler": "amed", "euler_sampler": "euler", "ipndm_sampler": "ipndm",
                      "dpm_2_sampler": "dpm", "dpm_pp_sampler": "dpmpp", "heun_sampler": "heun"}
_STUDENTS = ("amed", "dpm", "dpmpp", "euler", "ipndm")
_TEACHERS = ("heun", "dpm", "dpmpp", "euler", "ipndm")

# Settings as the predictor object stores them (training/networks.py::AMED_predictor).
_PREDICTOR_FIELDS = ("dataset_name", "img_resolution", "num_steps", "sampler_stu", "sampler_tea", "M",
                     "guidance_type", "guidance_rate", "schedule_type", "schedule_rho", "afs", "scale_dir",
                     "scale_time", "max_order", "predict_x0", "lower_order_final")
_LOSS_FIELDS = ("num_steps", "M", "schedule_type", "schedule_rho", "afs", "max_order", "sigma_min", "sigma_max",
                "predict_x0", "lower_order_final")
# Where a caller's keyword comes from on the command line.
FLAGS = {"model": "--model", "solver": "--solver", "nfe": "--nfe", "schedule": "--schedule", "rho": "--rho",
         "afs": "--afs/--no-afs", "sigma_min": "--sigma-min", "sigma_max": "--sigma-max",
         "scale_dir": "--scale-dir", "scale_time": "--scale-time", "solver_options": "--opt KEY=VALUE",
         "teacher": "--teacher", "teacher_options": "--teacher-opt KEY=VALUE", "M": "--M", "guidance": "--guidance",
         "shape": "shape"}


class SamplerFunction:
    """Stand-in for a pickled reference to one of the authors' ``solvers_amed.*_sampler`` functions."""

    def __init__(self, name: str):
        self.name = name

    def __call__(self, *args, **kwargs):
        raise pickle.UnpicklingError(f"refusing to call solvers_amed.{self.name}")

    def __repr__(self):
        return f"solvers_amed.{self.name}"


class _ModuleStub(PersistentStub):
    """A plain (non-persistent) torch module pickled by NEWOBJ + BUILD; keeps its state only."""

    class_name = "Sigmoid"
    state: dict = {}


class _StorageType:
    """Stand-in for ``torch.FloatStorage`` & co. in a ``torch.save`` archive's storage ids."""

    def __init__(self, dtype: torch.dtype):
        self.dtype = dtype


_STORAGE_DTYPES = {"FloatStorage": torch.float32, "DoubleStorage": torch.float64, "HalfStorage": torch.float16,
                   "BFloat16Storage": torch.bfloat16, "LongStorage": torch.int64, "IntStorage": torch.int32,
                   "ShortStorage": torch.int16, "CharStorage": torch.int8, "ByteStorage": torch.uint8,
                   "BoolStorage": torch.bool}


def _latin1_bytes(text, encoding="latin1"):
    """Protocol-2 pickles (torch.save's default) write bytes as ``_codecs.encode(text, 'latin1')``."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise pickle.UnpicklingError(f"refusing _codecs.encode with encoding {encoding!r}")
    return text.encode("latin1")


def _set(items=()):
    """Protocol 2 writes a set (a module's _non_persistent_buffers_set) as ``set(list)``."""
    if not isinstance(items, (list, tuple)):
        raise pickle.UnpicklingError(f"refusing set() of a {type(items).__name__}")
    return set(items)


def _storage_from_bytes(data):
    """One pickled storage (legacy torch.save bytes, a CUDA tag included), read onto the CPU by torch's
    weights-only reader; its refusal is reported in one line (without torch's advice to turn it off)."""
    try:
        return _load_from_bytes(data)
    except Exception as exc:  # noqa: BLE001 - whatever torch raises, the storage is refused
        # torch's first line advises weights_only=False; the reason is on a later line.
        lines = [ln.strip() for ln in str(exc).splitlines()[1:] if ln.strip() and not ln.startswith("Check the doc")]
        why = lines[0] if lines else _first_line(exc)
        raise pickle.UnpicklingError(f"refusing a tensor storage that torch's weights-only reader rejects ({why})") \
            from None


_EXTRA = {("torch.nn.modules.activation", "Sigmoid"): _ModuleStub,
          ("torch.storage", "_load_from_bytes"): _storage_from_bytes,
          ("builtins", "set"): _set, ("__builtin__", "set"): _set,
          ("_codecs", "encode"): _latin1_bytes,
          **{("solvers_amed", fn): SamplerFunction(fn) for fn in _SAMPLER_FUNCTIONS}}


class _SnapshotUnpickler(RestrictedUnpickler):
    """The EDM allow-list plus the globals an AMED predictor snapshot adds; nothing else resolves."""

    def find_class(self, module, name):
        if (module, name) in _EXTRA:
            return _EXTRA[(module, name)]
        try:
            return super().find_class(module, name)
        except pickle.UnpicklingError:
            raise pickle.UnpicklingError(
                f"refusing to load global {module}.{name}: not one of the globals an AMED predictor snapshot uses "
                "(nothing from the file was executed)") from None


class _ArchiveUnpickler(_SnapshotUnpickler):
    """``data.pkl`` of a ``torch.save`` zip: storages come from the archive's ``data/<key>`` records."""

    def __init__(self, file, archive: zipfile.ZipFile, prefix: str):
        super().__init__(file)
        self.archive, self.prefix, self.storages = archive, prefix, {}

    def find_class(self, module, name):
        if module in ("torch", "torch.cuda") and name in _STORAGE_DTYPES:
            return _StorageType(_STORAGE_DTYPES[name])
        if (module, name) == ("torch", "UntypedStorage"):
            return _StorageType(torch.uint8)
        return super().find_class(module, name)

    def persistent_load(self, pid):
        if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage" and isinstance(pid[1], _StorageType)
                and isinstance(pid[2], str) and isinstance(pid[4], int)):
            raise pickle.UnpicklingError(f"refusing persistent id {str(pid)[:80]!r}: not a torch storage record")
        stype, key, numel = pid[1], pid[2], pid[4]
        if key not in self.storages:
            try:
                raw = self.archive.read(f"{self.prefix}data/{key}")
            except KeyError:
                raise pickle.UnpicklingError(f"storage record data/{key} is missing from the archive") from None
            size = torch.empty((), dtype=stype.dtype).element_size()
            if len(raw) != numel * size:
                raise pickle.UnpicklingError(f"storage data/{key} holds {len(raw)} bytes, its record says "
                                             f"{numel} x {size}")
            flat = torch.frombuffer(bytearray(raw), dtype=torch.uint8) if raw else torch.empty(0, dtype=torch.uint8)
            self.storages[key] = torch.storage.TypedStorage(wrap_storage=flat.untyped_storage(), dtype=stype.dtype,
                                                            _internal=True)
        return self.storages[key]


def is_authors_snapshot(path) -> bool:
    """True for the authors' file kinds (``.pkl`` persistence pickle, ``.pt`` torch.save archive)."""
    return Path(path).suffix in (".pkl", ".pt")


def _unpickle(path: Path) -> dict:
    """The snapshot's top-level dict of stubs; a refused or malformed file is a one-line ValueError."""
    blob = path.read_bytes()
    try:
        if blob.startswith(b"PK\x03\x04"):
            data = _load_archive(path, blob)
        elif blob.startswith(b"\x80\x02\x8a\x0a\x6c\xfc\x9c\x46\xf9\x20\x6a\xa8\x50\x19"):
            raise AmedValueError("a legacy (pre-1.6) torch.save file; only persistence pickles and torch.save zip "
                             "archives are read")
        elif blob[:1] == b"\x80" and 2 <= blob[1] <= 5:
            data = _SnapshotUnpickler(io.BytesIO(blob)).load()
        else:
            raise AmedValueError("neither a pickle nor a torch.save archive")
    except pickle.UnpicklingError as exc:
        raise AmedValueError(f"{path.name}: refused: {_first_line(exc)}") from None
    except ValueError as exc:
        raise AmedValueError(f"{path.name}: {_first_line(exc)}") from None
    except (EOFError, TypeError, AttributeError, IndexError, KeyError, RuntimeError, zipfile.BadZipFile) as exc:
        raise AmedValueError(f"{path.name}: not a readable predictor snapshot ({type(exc).__name__}: "
                         f"{_first_line(exc)})") from None
    if not isinstance(data, dict):
        raise AmedValueError(f"{path.name}: a predictor snapshot is a dict, got {type(data).__name__}")
    return data


def _load_archive(path: Path, blob: bytes):
    with zipfile.ZipFile(io.BytesIO(blob)) as archive:
        names = archive.namelist()
        pkl = [n for n in names if n.endswith("/data.pkl") and n.count("/") == 1]
        if any(n.endswith("/constants.pkl") or "/code/" in n for n in names):
            raise AmedValueError("a TorchScript archive; refusing it (loading it would run TorchScript code)")
        if len(pkl) != 1:
            raise AmedValueError("not a torch.save archive (no single <name>/data.pkl record)")
        prefix = pkl[0][: -len("data.pkl")]
        order = prefix + "byteorder"
        if order in names and archive.read(order).strip() not in (b"little",):
            raise AmedValueError("a big-endian torch.save archive; only little-endian files are read")
        return _ArchiveUnpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix).load()


def _first_line(exc) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


# ------------------------------------------------------------------------------------------ reading
_RUN = re.compile(r"^(?P<exp>\d+)-(?P<dataset_name>.+)-(?P<num_steps>\d+)-(?P<nfe>\d+)"
                  r"-(?P<sampler_stu>amed|dpmpp|dpm|euler|ipndm)-(?P<sampler_tea>heun|dpmpp|dpm|euler|ipndm)"
                  r"-(?P<M>\d+)-(?P<sched>polynomial|logsnr|time_uniform|discrete|poly[0-9.]+|uni[0-9.]+"
                  r"|discrete[0-9.]+)(?P<afs>-afs)?$")
_SNAPSHOT = re.compile(r"^network-snapshot-(\d+)$")


def parse_run_name(name: str) -> dict | None:
    """Settings in a run directory name ``<exp>-<dataset>-<N>-<NFE>-<stu>-<tea>-<M>-<sched>[-afs]``, or None."""
    m = _RUN.match(name)
    if not m:
        return None
    out = {"run": name, "dataset_name": m["dataset_name"], "num_steps": int(m["num_steps"]), "nfe": int(m["nfe"]),
           "sampler_stu": m["sampler_stu"], "sampler_tea": m["sampler_tea"], "M": int(m["M"]),
           "afs": m["afs"] is not None}
    sched, rho = m["sched"], None
    for prefix, full in (("poly", "polynomial"), ("uni", "time_uniform"), ("discrete", "discrete")):
        if sched.startswith(prefix) and sched != full and sched[len(prefix):]:
            try:
                rho = float(sched[len(prefix):])
            except ValueError:
                return None
            sched = full
    out["schedule_type"] = sched
    if rho is not None:
        out["schedule_rho"] = rho
    return out


def _plain(value):
    """0-d tensors to Python numbers (sigma_min of some wrappers), everything else as stored."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and value.ndim == 0:
        return value.item()
    return value


def _same(a, b) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or a is None or b is None:
        return a == b if type(a) is type(b) else (a is b)
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return math.isclose(float(a), float(b), rel_tol=1e-9, abs_tol=0.0)
    return a == b


def _stub(data: dict, key: str, class_name: str, path: Path, required: bool):
    value = data.get(key)
    if value is None and not required:
        return None
    if not isinstance(value, PersistentStub) or value.class_name != class_name:
        got = value.class_name if isinstance(value, PersistentStub) else type(value).__name__
        what = "has no" if key not in data else f"holds {got!r} under"
        raise AmedValueError(f"{path.name}: the snapshot {what} '{key}'; expected the authors' {class_name}")
    return value


def read_authors_snapshot(path) -> dict:
    """Read a snapshot without executing it: ``{'state_dict', 'sources', 'loss_grid', 'sha256', 'kimg'}``.

    ``sources`` is a list of (where, settings) pairs: the pickled predictor's attributes and constructor
    arguments, the loss object's, and the run directory's (or file's) name.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"predictor snapshot {path} does not exist")
    data = _unpickle(path)
    model = _stub(data, "model", "AMED_predictor", path, required=True)
    loss = _stub(data, "loss_fn", "AMED_loss", path, required=False)
    state = model.state
    sources = [("the pickled predictor", {k: _plain(state[k]) for k in _PREDICTOR_FIELDS if k in state})]
    init = state.get("_init_kwargs")
    if isinstance(init, dict):
        sources.append(("the predictor's constructor arguments",
                        {k: _plain(init[k]) for k in _PREDICTOR_FIELDS if k in init}))
    arch = {k: init[k] for k in ("hidden_dim", "output_dim", "bottleneck_input_dim", "bottleneck_output_dim",
                                 "noise_channels", "embedding_type") if isinstance(init, dict) and k in init}
    emb = (state.get("_modules") or {}).get("map_noise")
    if isinstance(emb, PersistentStub):
        arch.update({f"map_noise.{k}": emb.state[k] for k in ("num_channels", "max_positions", "endpoint")
                     if k in emb.state})
    grid = None
    if loss is not None:
        ls = loss.state
        got = {k: _plain(ls[k]) for k in _LOSS_FIELDS if k in ls}
        for attr, field in (("solver_stu", "sampler_stu"), ("solver_tea", "sampler_tea")):
            fn = ls.get(attr)
            if isinstance(fn, SamplerFunction):
                got[field] = _SAMPLER_FUNCTIONS[fn.name]
        sources.append(("the pickled loss", got))
        linit = ls.get("_init_kwargs")
        if isinstance(linit, dict):
            sources.append(("the loss's constructor arguments",
                            {k: _plain(linit[k]) for k in _LOSS_FIELDS + ("sampler_stu", "sampler_tea") if k in linit}))
        if isinstance(ls.get("t_steps"), torch.Tensor):
            grid = ls["t_steps"].detach().to("cpu", torch.float64).reshape(-1)
    for name, where in ((path.parent.name, "the run directory name"), (path.stem, "the file name")):
        parsed = parse_run_name(name)
        if parsed:
            sources.append((f"{where} {name!r}", parsed))
    kimg = _SNAPSHOT.match(path.stem)
    return {"state_dict": stub_state_dict(model), "sources": sources, "architecture": arch, "loss_grid": grid,
            "sha256": sha256_file(path), "kimg": int(kimg.group(1)) if kimg else None, "has_loss": loss is not None}


def authors_settings(sources: list, path: Path) -> tuple[dict, dict]:
    """Merge the sources' settings (their names); any two that disagree are an error naming the field."""
    merged, origin = {}, {}
    for where, settings in sources:
        for key, value in settings.items():
            if key == "run":
                continue
            if key in merged and not _same(merged[key], value):
                raise AmedValueError(f"{path.name}: {key} conflicts: {origin[key]} says {merged[key]!r} but {where} "
                                 f"says {value!r}")
            if key not in merged:
                merged[key], origin[key] = value, where
    return merged, origin


# ------------------------------------------------------------------------------------------ mapping
class _Missing:
    """A setting the files do not record; the caller must supply ``field``."""

    def __init__(self, what: str):
        self.what = what


def _dpmpp_key(max_order) -> str:
    return "dpmpp3m" if max_order == 3 else "dpmpp2m"


def _solver(kind: str, field: str, theirs: dict, name: str):
    """Their sampler name -> (our key, options), or _Missing; refuses what does not correspond."""
    if field not in theirs:
        return _Missing(field), _Missing(field)
    their = theirs[field]
    allowed = _STUDENTS if kind == "student" else _TEACHERS
    if their not in allowed:
        raise AmedValueError(f"{name}: {field}={their!r} cannot be mapped: their {kind} solvers are {list(allowed)}")
    if their in ("ipndm", "dpmpp"):
        if "max_order" not in theirs or theirs["max_order"] is None:
            return (_Missing("max_order") if their == "dpmpp" else "ipndm"), _Missing("max_order")
        mo = theirs["max_order"]
        top = 4 if their == "ipndm" else 3
        if isinstance(mo, bool) or not isinstance(mo, int) or not 1 <= mo <= top:
            raise AmedValueError(f"{name}: max_order={mo!r} cannot be mapped: {their} takes 1..{top}")
        if their == "ipndm":
            return "ipndm", {"max_order": mo}
        opts = {"max_order": mo}
        for key in ("predict_x0", "lower_order_final"):
            if key not in theirs:
                return _dpmpp_key(mo), _Missing(key)
            opts[key] = bool(theirs[key])
        # Their DPM-Solver++ thresholds every data prediction (authors-code.md Sec. 4.1, pitfall 7).
        opts["thresholding"] = opts["predict_x0"]
        return _dpmpp_key(mo), opts
    return _SOLVERS[their], {}


def _model(theirs: dict, given, name: str):
    dataset = theirs.get("dataset_name")
    if dataset is None:
        return given if given is not None else _Missing("dataset_name")
    # A dataset_name that is one of this project's model names (a snapshot made on it) maps to itself.
    allowed = DATASET_MODELS.get(dataset) or ((dataset,) if _is_project_model(dataset) else None)
    if allowed:
        if given is not None and given not in allowed:
            raise AmedValueError(f"{name}: trained on dataset_name={dataset!r} (model {' or '.join(map(repr, allowed))}), "
                             f"got model={given!r}")
        return given if given is not None else allowed[0]
    if given is not None:
        return given
    if dataset in _NOT_HERE:
        raise AmedValueError(f"{name}: dataset_name={dataset!r} cannot be mapped: {_NOT_HERE[dataset]}")
    raise AmedValueError(f"{name}: dataset_name={dataset!r} cannot be mapped to a model here (known: "
                     f"{', '.join(DATASET_MODELS)}); pass model=NAME (--model) if you have an adapter for it")


def _is_project_model(name: str) -> bool:
    from .models.registry import is_registered  # noqa: PLC0415

    return is_registered(name)


def _scales(theirs: dict, name: str) -> tuple:
    """(scale_dir, scale_time): floats since 9067ff0; before it, c in [0.99, 1.01] ([0.95, 1.05] for
    DPM++ with predict_x0) always, and a in [0.8, 1.2] when the bool scale_time was set (Sec. 2, History)."""
    st = theirs.get("scale_time", _Missing("scale_time"))
    if "scale_dir" in theirs:
        sd = theirs["scale_dir"]
        if isinstance(st, bool):
            raise AmedValueError(f"{name}: scale_time={st!r} is a flag of the first release, but scale_dir={sd!r} "
                             f"is a range of the later one")
    else:  # first release (87fb889): no scale_dir attribute
        x0_dpmpp = theirs.get("sampler_stu") == "dpmpp" and bool(theirs.get("predict_x0", True))
        sd = 0.05 if x0_dpmpp else 0.01
        if isinstance(st, bool):
            st = 0.2 if st else 0.0
    for field, v in (("scale_dir", sd), ("scale_time", st)):
        if isinstance(v, _Missing):
            continue
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
            raise AmedValueError(f"{name}: {field}={v!r} cannot be mapped: this project's heads take ranges in [0, 1)")
    return (sd if isinstance(sd, _Missing) else float(sd)), (st if isinstance(st, _Missing) else float(st))


def _schedule(theirs: dict, model, name: str):
    if "schedule_type" not in theirs:
        return _Missing("schedule_type"), _Missing("schedule_rho")
    sched = theirs["schedule_type"]
    if sched not in ("polynomial", "logsnr", "time_uniform", "discrete"):
        raise AmedValueError(f"{name}: schedule_type={sched!r} cannot be mapped: their schedules are polynomial, "
                         f"logsnr, time_uniform, discrete")
    if sched == "logsnr":
        return sched, None
    rho = theirs.get("schedule_rho", _Missing("schedule_rho"))
    if rho is None:
        rho = _Missing("schedule_rho")
    if not isinstance(rho, _Missing):
        if isinstance(rho, bool) or not isinstance(rho, (int, float)) or not rho > 0:
            raise AmedValueError(f"{name}: schedule_rho={rho!r} cannot be mapped: it must be a positive number")
        rho = float(rho)
    if sched == "discrete":
        if isinstance(model, str) and model not in _SD_MODELS:
            raise AmedValueError(f"{name}: schedule_type='discrete' cannot be mapped for model {model!r}: this project's "
                             f"discrete schedule uses Stable Diffusion's DDPM table ({', '.join(_SD_MODELS)})")
        if not isinstance(rho, _Missing) and rho != 1.0:
            raise AmedValueError(f"{name}: schedule_rho={rho!r} cannot be mapped with schedule_type='discrete': their "
                             f"discrete grid is only right for rho=1 (authors-code.md Sec. 5)")
    return sched, rho


def _guidance(theirs: dict, name: str):
    if "guidance_type" not in theirs:
        return _Missing("guidance_type")
    kind = theirs["guidance_type"]
    if kind is None:
        return None
    if kind == "cfg":
        w = theirs.get("guidance_rate")
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            return _Missing("guidance_rate")
        return float(w)
    raise AmedValueError(f"{name}: guidance_type={kind!r} cannot be mapped: this project binds classifier-free "
                     f"guidance ('cfg') only (their 'cg' is ADM classifier guidance, 'uncond' the LDM bedroom)")


def _nfe(theirs: dict, name: str):
    n, afs = theirs.get("num_steps"), theirs.get("afs")
    if n is None:
        return _Missing("num_steps"), (_Missing("afs") if afs is None else bool(afs))
    if isinstance(n, bool) or not isinstance(n, int) or n < 2:
        raise AmedValueError(f"{name}: num_steps={n!r} cannot be mapped: a run needs at least 2 time points")
    if afs is None:
        return _Missing("afs"), _Missing("afs")
    nfe = 2 * (n - 1) - int(bool(afs))
    if "nfe" in theirs:  # the run name's NFE (doubled for Stable Diffusion's CFG, as their train.py counts)
        named = nfe * (2 if theirs.get("dataset_name") == "ms_coco" else 1)
        if theirs["nfe"] != named:
            raise AmedValueError(f"{name}: the run name says NFE={theirs['nfe']} but num_steps={n}, afs={bool(afs)} give "
                             f"NFE={named}")
    return nfe, bool(afs)


def _sigmas(theirs: dict, name: str):
    lo, hi = theirs.get("sigma_min"), theirs.get("sigma_max")
    dataset = theirs.get("dataset_name")
    if lo is None and hi is None and dataset in DATASET_MODELS:
        # Their sample.py sets sigma 0.002..80 on every EDM model (CM's wrapper has the same range); for
        # Stable Diffusion it is the DDPM table's range (sigma at tau = 1e-3 and 1).
        if dataset == "ms_coco":
            from .schedules import DiscreteVP  # noqa: PLC0415

            table = DiscreteVP.scaled_linear()
            return table.sigma_min, table.sigma_max
        return 0.002, 80.0
    out = []
    for field, v in (("sigma_min", lo), ("sigma_max", hi)):
        if v is None:
            out.append(_Missing(field))
        elif isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
            raise AmedValueError(f"{name}: {field}={v!r} cannot be mapped: it must be a positive finite number")
        else:
            out.append(float(v))
    return tuple(out)


def authors_config(snapshot: dict, path, **given) -> tuple[AMEDConfig, dict]:
    """Map a read snapshot to an ``AMEDConfig``; ``given`` fills settings the files lack and must agree with the
    rest. Returns the config and the merged settings in the authors' names."""
    path = Path(path)
    name = path.name
    unknown = sorted(set(given) - set(FLAGS))
    if unknown:
        raise TypeError(f"unknown import options {unknown}; known: {sorted(FLAGS)}")
    given = {k: v for k, v in given.items() if v is not None}
    theirs, _origin = authors_settings(snapshot["sources"], path)

    model = _model(theirs, given.pop("model", None), name)
    if "img_resolution" in theirs and theirs.get("dataset_name") in _SHAPES:
        want = _SHAPES[theirs["dataset_name"]][-1]
        if theirs["img_resolution"] != want:
            raise AmedValueError(f"{name}: img_resolution={theirs['img_resolution']!r} conflicts with dataset_name="
                             f"{theirs['dataset_name']!r} (resolution {want})")
    shape = _SHAPES.get(theirs.get("dataset_name"))
    if shape is None and isinstance(model, str):  # a paper model named by the caller
        shape = next((_SHAPES[d] for d, names in DATASET_MODELS.items() if model in names), None)
    solver, options = _solver("student", "sampler_stu", theirs, name)
    teacher, teacher_options = _solver("teacher", "sampler_tea", theirs, name)
    if solver in ("amed", "ddim", "dpm2"):
        options = {}  # max_order, predict_x0 and lower_order_final do not act on these (Sec. 4.2-4.3)
    schedule, rho = _schedule(theirs, model, name)
    nfe, afs = _nfe(theirs, name)
    sigma_min, sigma_max = _sigmas(theirs, name)
    scale_dir, scale_time = _scales(theirs, name)
    M = theirs.get("M", _Missing("M"))
    if not isinstance(M, _Missing) and (isinstance(M, bool) or not isinstance(M, int) or M < 0):
        raise AmedValueError(f"{name}: M={M!r} cannot be mapped: it must be a non-negative integer")
    mapped = dict(model=model, solver=solver, nfe=nfe, schedule=schedule, rho=rho, afs=afs, sigma_min=sigma_min,
                  sigma_max=sigma_max, scale_dir=scale_dir, scale_time=scale_time, solver_options=options,
                  teacher=teacher, teacher_options=teacher_options, M=M, guidance=_guidance(theirs, name), shape=shape)
    for key, value in given.items():
        if key == "shape":
            value = tuple(value)
        have = mapped[key]
        if isinstance(have, _Missing):
            mapped[key] = value
        elif have is not None and not _same_setting(have, value):
            raise AmedValueError(f"{name}: the snapshot says {key}={have!r}, got {key}={value!r} "
                             f"(leave {key} unset to use the snapshot's setting)")
        elif have is None and key in ("rho", "guidance", "shape") and value is not None:
            if key == "shape":
                mapped[key] = value  # not recorded for this model; the caller may state it
            else:
                raise AmedValueError(f"{name}: the snapshot says {key}=None, got {key}={value!r}")
    for key, value in mapped.items():
        if isinstance(value, _Missing):
            raise AmedValueError(f"{name}: the snapshot does not record {value.what}; pass {key}=... ({FLAGS[key]})")
    if snapshot.get("loss_grid") is not None:
        _check_grid(snapshot["loss_grid"], mapped, name)
    cfg = AMEDConfig(solver=mapped["solver"], nfe=mapped["nfe"], schedule=mapped["schedule"], rho=mapped["rho"],
                     afs=mapped["afs"], sigma_min=mapped["sigma_min"], sigma_max=mapped["sigma_max"],
                     scale_dir=mapped["scale_dir"], scale_time=mapped["scale_time"],
                     solver_options=dict(mapped["solver_options"]), teacher=mapped["teacher"],
                     teacher_options=dict(mapped["teacher_options"]), M=mapped["M"], model=mapped["model"],
                     guidance=mapped["guidance"], shape=mapped["shape"])
    return cfg, theirs


def _same_setting(a, b) -> bool:
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, tuple) or isinstance(b, tuple):
        return tuple(a) == tuple(b)
    return _same(a, b)


def _check_grid(grid: torch.Tensor, mapped: dict, name: str) -> None:
    """The loss's student grid (t_steps) must be this project's grid for the mapped schedule."""
    from .schedules import get_schedule  # noqa: PLC0415

    points = (mapped["nfe"] + int(mapped["afs"])) // 2 + 1
    ours = get_schedule(mapped["schedule"], points, mapped["sigma_min"], mapped["sigma_max"], mapped["rho"])
    if grid.shape != ours.shape or not torch.allclose(grid, ours, rtol=1e-3, atol=0.0):
        got = ", ".join(f"{v:.5g}" for v in grid.tolist()[:8])
        want = ", ".join(f"{v:.5g}" for v in ours.tolist()[:8])
        raise AmedValueError(f"{name}: the pickled student grid loss_fn.t_steps [{got}] is not this project's "
                         f"{mapped['schedule']} grid [{want}]")


def _check_architecture(arch: dict, name: str) -> None:
    want = {"hidden_dim": 128, "output_dim": 1, "bottleneck_input_dim": 64, "bottleneck_output_dim": 4,
            "noise_channels": 8, "embedding_type": "positional", "map_noise.num_channels": 8,
            "map_noise.max_positions": 10000, "map_noise.endpoint": True}
    for key, value in arch.items():
        if key in want and not _same(value, want[key]):
            raise AmedValueError(f"{name}: {key}={value!r} cannot be mapped: this project's predictor has "
                             f"{key}={want[key]!r} (the only shape the authors trained)")


def load_authors_predictor(path, *, model: str | None = None, sigma_min: float | None = None,
                           sigma_max: float | None = None, guidance: float | None = None, **given) -> AMEDPredictor:
    """An authors' snapshot (``network-snapshot-*.pkl`` or the SD ``.pt``) as an ``AMEDPredictor``.

    Keyword arguments (``model``, ``sigma_min``, ``sigma_max``, ``guidance``, and any ``AMEDConfig`` setting:
    ``solver``, ``nfe``, ``schedule``, ``rho``, ``afs``, ``scale_dir``, ``scale_time``, ``solver_options``,
    ``teacher``, ``teacher_options``, ``M``, ``shape``) supply what the files do not record; one that
    contradicts the files is a ValueError. ``predictor.source`` says where the weights came from.
    """
    path = Path(path)
    snap = read_authors_snapshot(path)
    _check_architecture(snap["architecture"], path.name)
    cfg, theirs = authors_config(snap, path, model=model, sigma_min=sigma_min, sigma_max=sigma_max,
                                 guidance=guidance, **given)
    pred = AMEDPredictor(cfg)
    state = snap["state_dict"]
    expected = pred.state_dict()
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or extra:
        raise AmedValueError(f"{path.name}: the weights do not fit scale_dir={cfg.scale_dir:g}, "
                         f"scale_time={cfg.scale_time:g}: missing {missing}, unexpected {extra}")
    fixed = {}
    for key, ref in expected.items():
        value = state[key]
        if not isinstance(value, torch.Tensor) or tuple(value.shape) != tuple(ref.shape):
            got = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise AmedValueError(f"{path.name}: {key} has shape {got}, the predictor expects {tuple(ref.shape)}")
        if not value.is_floating_point() or not bool(torch.isfinite(value).all()):
            raise AmedValueError(f"{path.name}: {key} is not a finite floating-point tensor")
        fixed[key] = value.to(ref.dtype)
    pred.load_state_dict(fixed)
    pred.source = {"format": "authors-snapshot", "file": path.name, "run": path.parent.name, "sha256": snap["sha256"],
                   "kimg": snap["kimg"], "authors_settings": _json_safe(theirs)}
    return pred.eval()


def _json_safe(d: dict) -> dict:
    return {k: (v if v is None or isinstance(v, (bool, int, float, str)) else repr(v)) for k, v in sorted(d.items())}


def import_authors_predictor(path, out, **options) -> Path:
    """Convert an authors' snapshot to this project's ``<out>.safetensors`` + ``<out>.json``; returns the weights."""
    return load_authors_predictor(path, **options).save(out)
