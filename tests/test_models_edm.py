"""Clean-room EDM networks and the restricted EDM-pickle loader (offline, tiny models)."""

import io
import os
import pickle
import sys
import types

import numpy as np
import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from amed.models import edm  # noqa: E402
from amed.models.edm import EDMDenoiser, edm_class_labels  # noqa: E402
from amed.models.safe_pickle import RestrictedUnpickler, load_edm_pickle, read_edm_pickle  # noqa: E402

DDPMPP = dict(model_type="SongUNet", embedding_type="positional", encoder_type="standard", decoder_type="standard",
              channel_mult_noise=1, resample_filter=[1, 1], model_channels=128)
REAL = {
    "cifar10": (dict(img_resolution=32, img_channels=3, label_dim=0, use_fp16=False, augment_dim=9, dropout=0.13,
                     channel_mult=[2, 2, 2], **DDPMPP), 55_733_891, 425),
    "ffhq": (dict(img_resolution=64, img_channels=3, label_dim=0, use_fp16=False, augment_dim=9, dropout=0.05,
                  channel_mult=[1, 2, 2, 2], **DDPMPP), 61_805_571, 553),
    "imagenet64": (dict(img_resolution=64, img_channels=3, label_dim=1000, use_fp16=True, augment_dim=0, dropout=0.1,
                        model_type="DhariwalUNet", model_channels=192, channel_mult=[1, 2, 3, 4]), 295_899_267, 553),
}

TINY_SONG = dict(img_resolution=16, img_channels=3, label_dim=0, use_fp16=False, model_type="SongUNet",
                 embedding_type="positional", encoder_type="standard", decoder_type="standard", channel_mult_noise=1,
                 resample_filter=[1, 1], model_channels=8, channel_mult=[1, 2], num_blocks=2, attn_resolutions=[8],
                 augment_dim=9, dropout=0.13)
TINY_ADM = dict(img_resolution=16, img_channels=3, label_dim=10, use_fp16=True, model_type="DhariwalUNet",
                model_channels=16, channel_mult=[1, 2], num_blocks=1, attn_resolutions=[8], augment_dim=0, dropout=0.1)


@pytest.mark.parametrize("name", list(REAL))
def test_real_configs_match_snapshot_manifest(name):
    config, n_params, n_keys = REAL[name]
    with torch.device("meta"):
        net = EDMDenoiser(config, name=name)
    sd = net.state_dict()
    assert sum(p.numel() for p in net.parameters()) == n_params
    assert len(sd) == n_keys
    assert tuple(net.feature_module().conv1.weight.shape[:1]) == ((768,) if name == "imagenet64" else (256,))
    if name == "cifar10":
        keys = list(sd)
        assert keys[:3] == ["model.map_augment.weight", "model.map_layer0.weight", "model.map_layer0.bias"]
        assert keys[-2:] == ["model.dec.32x32_aux_conv.weight", "model.dec.32x32_aux_conv.bias"]
        assert sd["model.map_layer0.weight"].shape == (512, 128)
        assert sd["model.enc.16x16_block0.qkv.weight"].shape == (768, 256, 1, 1)
        assert sd["model.enc.16x16_down.conv0.resample_filter"].shape == (1, 1, 2, 2)
        assert sd["model.enc.16x16_down.skip.resample_filter"].shape == (1, 1, 2, 2)
        assert net.feature_module() is net.model.enc["8x8_block3"]
    if name == "imagenet64":
        assert sd["model.enc.8x8_block2.qkv.weight"].shape == (2304, 768, 1, 1)
        assert sd["model.enc.8x8_block2.affine.weight"].shape == (1536, 768)
        assert sd["model.dec.8x8_block2.conv0.weight"].shape == (768, 1536, 3, 3)
        assert sd["model.map_label.weight"].shape == (768, 1000)
        assert sd["model.out_conv.weight"].shape == (3, 192, 3, 3)
        assert "model.enc.32x32_down.skip.weight" not in sd  # ADM resample skip: filter only
        assert net.feature_module() is net.model.enc["8x8_block2"]


def test_resample_filter_is_nearest_and_average():
    up = edm.Conv2d(2, 2, kernel=0, up=True)
    down = edm.Conv2d(2, 2, kernel=0, down=True)
    x = torch.arange(32.0).reshape(1, 2, 4, 4)
    torch.testing.assert_close(up(x), torch.nn.functional.interpolate(x, scale_factor=2, mode="nearest"))
    torch.testing.assert_close(down(x), torch.nn.functional.avg_pool2d(x, 2))


def test_edm_preconditioning_formula():
    torch.manual_seed(0)
    net = EDMDenoiser(TINY_SONG).eval()
    x = torch.randn(2, 3, 16, 16)
    sigma = torch.tensor([0.5, 3.0])
    s = sigma.reshape(-1, 1, 1, 1)
    f = net.model(x / (s**2 + 0.25).sqrt(), sigma.log() / 4)
    expected = 0.25 / (s**2 + 0.25) * x + s * 0.5 / (s**2 + 0.25).sqrt() * f
    torch.testing.assert_close(net(x, sigma), expected)


# --- A tiny EDM-format snapshot written without EDM's code (checkpoints.md Sec. 6.1). ---------------

EDM_NAMES = {edm.SongUNet: "SongUNet", edm.DhariwalUNet: "DhariwalUNet", edm.UNetBlock: "UNetBlock",
             edm.Conv2d: "Conv2d", edm.Linear: "Linear", edm.GroupNorm: "GroupNorm",
             edm.PositionalEmbedding: "PositionalEmbedding"}
MARKER = "AMED_TEST_MODULE_SRC_EXECUTED"
EVIL_SRC = f"import os\nos.environ[{MARKER!r}] = '1'\nraise RuntimeError('module_src was executed')\n"


class FakePrecond(torch.nn.Module):
    """Mimics EDMPrecond's __dict__: plain attributes plus the network under `model`."""

    def __init__(self, config):
        super().__init__()
        self.img_resolution = config["img_resolution"]
        self.img_channels = config["img_channels"]
        self.label_dim = config["label_dim"]
        self.use_fp16 = config["use_fp16"]
        self.sigma_min = 0.0
        self.sigma_max = float("inf")
        self.sigma_data = np.float64(0.5)  # exercises numpy's scalar/dtype globals
        self.model = EDMDenoiser(config).model


def _write_snapshot(path, precond, config, version=6, extra=None):
    fake_pkg = types.ModuleType("torch_utils")
    fake_mod = types.ModuleType("torch_utils.persistence")

    def _reconstruct_persistent_obj(meta):  # pragma: no cover - only referenced by name
        raise AssertionError("never called")

    _reconstruct_persistent_obj.__module__ = "torch_utils.persistence"
    _reconstruct_persistent_obj.__qualname__ = "_reconstruct_persistent_obj"
    fake_mod._reconstruct_persistent_obj = _reconstruct_persistent_obj
    fake_pkg.persistence = fake_mod

    class SnapshotPickler(pickle.Pickler):
        def reducer_override(self, obj):
            if isinstance(obj, FakePrecond):
                name, init_kwargs = "EDMPrecond", dict(config)
            elif type(obj) in EDM_NAMES:
                name, init_kwargs = EDM_NAMES[type(obj)], {}
            else:
                return NotImplemented
            state = dict(obj.__dict__)
            state["_init_args"] = ()
            state["_init_kwargs"] = init_kwargs
            meta = dict(type="class", version=version, module_src=EVIL_SRC, class_name=name, state=state)
            return _reconstruct_persistent_obj, (meta,)

    data = {"ema": precond, "loss_fn": None, "augment_pipe": None, "dataset_kwargs": {"resolution": 16}}
    if extra:
        data.update(extra)
    sys.modules["torch_utils"], sys.modules["torch_utils.persistence"] = fake_pkg, fake_mod
    try:
        buf = io.BytesIO()
        SnapshotPickler(buf, protocol=4).dump(data)
    finally:
        del sys.modules["torch_utils"], sys.modules["torch_utils.persistence"]
    path.write_bytes(buf.getvalue())
    return path


def _globals_in(path):
    """The globals a pickle stream asks for (recorded through the restricted unpickler)."""
    found = set()

    class Recorder(RestrictedUnpickler):
        def find_class(self, module, name):
            found.add(f"{module}.{name}")
            return super().find_class(module, name)

    with open(path, "rb") as f:
        Recorder(f).load()
    return found


@pytest.fixture(scope="module")
def song_snapshot(tmp_path_factory):
    torch.manual_seed(1)
    precond = FakePrecond(TINY_SONG).eval()
    path = _write_snapshot(tmp_path_factory.mktemp("edm") / "tiny-song.pkl", precond, TINY_SONG)
    return path, precond


def test_snapshot_round_trip_without_executing_module_src(song_snapshot):
    path, precond = song_snapshot
    assert "torch_utils.persistence._reconstruct_persistent_obj" in _globals_in(path)
    os.environ.pop(MARKER, None)
    net = load_edm_pickle(path)
    assert MARKER not in os.environ
    assert "torch_utils" not in sys.modules
    ref, got = precond.state_dict(), net.state_dict()
    assert list(ref) == list(got)
    for key in ref:
        assert torch.equal(ref[key], got[key]), key
    assert net.model.enc["8x8_block1"].skip_scale == pytest.approx(np.sqrt(0.5))
    assert net.sigma_data == 0.5
    assert not any(p.requires_grad for p in net.parameters())


def test_snapshot_outputs_and_feature(song_snapshot):
    path, _ = song_snapshot
    a, b = load_edm_pickle(path), load_edm_pickle(path)
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.1, 1.0, 10.0])
    out_a, h_a = a.with_feature(x, sigma)
    out_b, h_b = b.with_feature(x, sigma)
    assert torch.equal(out_a, out_b) and torch.equal(h_a, h_b)
    assert out_a.shape == x.shape and torch.isfinite(out_a).all()
    # 16 px tiny net: its last encoder block runs at 8x8, which is the AMED feature resolution.
    assert a.feature_module() is a.model.enc["8x8_block1"]
    assert h_a.shape == (3, 8, 8)
    torch.testing.assert_close(a(x, sigma), out_a)


def test_conditional_snapshot_labels_per_seed(tmp_path):
    torch.manual_seed(2)
    precond = FakePrecond(TINY_ADM).eval()
    path = _write_snapshot(tmp_path / "tiny-adm.pkl", precond, TINY_ADM)
    net = load_edm_pickle(path)
    for key, value in precond.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key
    assert net.use_fp16 and next(net.parameters()).dtype == torch.float32
    assert net.feature_module() is net.model.enc["8x8_block0"]

    # Labels: the per-seed generator draws noise [C,H,W] first, then randint(label_dim).
    seeds = [5, 17, 5]
    labels = edm_class_labels(seeds, (3, 16, 16), 10)
    gen = torch.Generator().manual_seed(17)
    torch.randn(3, 16, 16, generator=gen)
    assert labels[1].argmax().item() == int(torch.randint(10, size=[], generator=gen))
    assert torch.equal(labels[0], labels[2]) and labels.sum(1).eq(1).all()

    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    sigma = torch.full((3,), 2.0)
    with pytest.raises(ValueError, match="condition"):
        net(x, sigma)
    with net.condition(seeds):
        out, h = net.with_feature(x, sigma)
        with pytest.raises(ValueError, match="batch"):
            net(x[:2], sigma[:2])
    assert h.shape == (3, 8, 8)
    # Sample i depends only on seed i: a batch of one reproduces row 1.
    with net.condition([17]):
        single = net(x[1:2], sigma[1:2])
    torch.testing.assert_close(single, out[1:2], rtol=1e-5, atol=1e-5)



class _Evil:
    def __reduce__(self):
        return (os.system, (f"touch {os.environ.get('AMED_EVIL_PATH', '/nonexistent/x')}",))


class _EvilEval:
    def __reduce__(self):
        import builtins

        return (builtins.eval, ("__import__('os').environ.__setitem__('AMED_EVAL_RAN', '1')",))


def test_forbidden_globals_are_refused_and_nothing_runs(tmp_path, monkeypatch):
    flag = tmp_path / "pwned"
    monkeypatch.setenv("AMED_EVIL_PATH", str(flag))
    bad = tmp_path / "bad.pkl"
    bad.write_bytes(pickle.dumps({"ema": _Evil()}, protocol=4))
    with pytest.raises(pickle.UnpicklingError, match=r"refusing to load global (posix|os|nt)\.system"):
        read_edm_pickle(bad)
    assert not flag.exists()

    bad.write_bytes(pickle.dumps({"ema": _EvilEval()}, protocol=4))
    monkeypatch.delenv("AMED_EVAL_RAN", raising=False)
    with pytest.raises(pickle.UnpicklingError, match=r"builtins\.eval"):
        load_edm_pickle(bad)
    assert "AMED_EVAL_RAN" not in os.environ


def test_bad_snapshots_give_clear_errors(tmp_path):
    precond = FakePrecond(TINY_SONG)
    wrong_version = _write_snapshot(tmp_path / "v5.pkl", precond, TINY_SONG, version=5)
    with pytest.raises(pickle.UnpicklingError, match="version 5"):
        load_edm_pickle(wrong_version)

    # A key the network lacks / a shape mismatch name the key.
    precond.model.map_layer0.register_buffer("extra", torch.zeros(1))
    extra = _write_snapshot(tmp_path / "extra.pkl", precond, TINY_SONG)
    with pytest.raises(ValueError, match="map_layer0.extra"):
        load_edm_pickle(extra)
    del precond.model.map_layer0._buffers["extra"]
    precond.model.map_layer1.bias = torch.nn.Parameter(torch.zeros(7))
    wrong_shape = _write_snapshot(tmp_path / "shape.pkl", precond, TINY_SONG)
    with pytest.raises(ValueError, match=r"shape mismatch for 'model.map_layer1.bias'"):
        load_edm_pickle(wrong_shape)

    no_ema = tmp_path / "noema.pkl"
    no_ema.write_bytes(pickle.dumps({"loss_fn": None}))
    with pytest.raises(ValueError, match="no 'ema'"):
        load_edm_pickle(no_ema)
    truncated = tmp_path / "trunc.pkl"
    truncated.write_bytes((tmp_path / "v5.pkl").read_bytes()[:1000])
    with pytest.raises(pickle.UnpicklingError, match="trunc.pkl"):
        load_edm_pickle(truncated)


def test_snapshot_references_only_the_documented_globals(song_snapshot):
    path, _ = song_snapshot
    assert _globals_in(path) <= {
        "torch_utils.persistence._reconstruct_persistent_obj", "collections.OrderedDict",
        "torch._utils._rebuild_parameter", "torch._utils._rebuild_tensor_v2", "torch.storage._load_from_bytes",
        "torch.nn.modules.container.ModuleDict", "numpy._core.multiarray.scalar", "numpy.core.multiarray.scalar",
        "numpy.dtype",
    }
    needed = {"torch.storage._load_from_bytes", "numpy.dtype", "torch.nn.modules.container.ModuleDict"}
    assert needed <= _globals_in(path)


def test_load_model_detects_edm_pickle(song_snapshot):
    from amed.models.registry import detect_format, load_model

    path, precond = song_snapshot
    assert detect_format(path) == "edm-pickle"
    net = load_model(str(path), offline=True)
    assert isinstance(net, EDMDenoiser)
    for key, value in precond.state_dict().items():
        assert torch.equal(value, net.state_dict()[key]), key
