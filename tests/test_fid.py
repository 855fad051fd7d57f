"""amed.fid: closed-form Frechet distances, statistics and the reference-stats file format."""

import math
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("scipy")
from amed.fid import feature_stats, frechet_distance, load_stats, save_stats  # noqa: E402


def test_isotropic_closed_form():
    # N(0, I4) vs N(1, 2 I4): 4 * 1 + 4 * (1 + 2 - 2 sqrt(2)).
    d = frechet_distance(np.zeros(4), np.eye(4), np.ones(4), 2 * np.eye(4))
    assert d == pytest.approx(4 + 4 * (3 - 2 * math.sqrt(2)), rel=1e-12, abs=1e-12)
    assert d == pytest.approx(4.686291501015239, abs=1e-12)


def test_identical_stats_give_zero():
    rng = np.random.default_rng(0)
    a = rng.standard_normal((200, 16))
    mu, sigma = feature_stats(a)
    assert frechet_distance(mu, sigma, mu, sigma) == pytest.approx(0.0, abs=1e-8)


def test_diagonal_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(8), rng.standard_normal(8)
    v1, v2 = rng.uniform(0.1, 3, 8), rng.uniform(0.1, 3, 8)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
    assert frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2)) == pytest.approx(expected, rel=1e-10)


def test_symmetric_and_rank_deficient():
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((5, 10)), rng.standard_normal((300, 10))  # 5 samples: singular covariance
    sa, sb = feature_stats(a), feature_stats(b)
    d1, d2 = frechet_distance(*sa, *sb), frechet_distance(*sb, *sa)
    assert np.isfinite(d1) and d1 > 0 and d1 == pytest.approx(d2, rel=1e-6)
    zero = np.zeros((10, 10))
    assert frechet_distance(np.zeros(10), zero, np.zeros(10), zero) == 0.0


def test_feature_stats_unbiased_float64():
    f = np.array([[0.0, 1.0], [2.0, 3.0], [4.0, 8.0]], dtype=np.float32)
    mu, sigma = feature_stats(f)
    assert mu.dtype == np.float64 and sigma.dtype == np.float64
    np.testing.assert_allclose(mu, [2.0, 4.0])
    np.testing.assert_allclose(sigma, np.cov(f.astype(np.float64), rowvar=False, ddof=1))
    assert sigma[0, 0] == pytest.approx(4.0)  # ((-2)^2 + 0 + 2^2) / (3 - 1)
    with pytest.raises(ValueError, match="N >= 2"):
        feature_stats(np.zeros((1, 3)))


def test_shape_mismatch_rejected():
    with pytest.raises(ValueError, match="shape mismatch"):
        frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))


def test_npz_round_trip(tmp_path):
    rng = np.random.default_rng(3)
    mu, sigma = feature_stats(rng.standard_normal((50, 6)))
    p = save_stats(tmp_path / "sub" / "ref.npz", mu, sigma, n=50)
    mu2, sigma2 = load_stats(p)
    np.testing.assert_array_equal(mu, mu2)
    np.testing.assert_array_equal(sigma, sigma2)
    assert sorted(q.name for q in p.parent.iterdir()) == ["ref.npz"]  # no temp file left behind
    # EDM-format files written by plain numpy load too.
    np.savez(tmp_path / "edm.npz", mu=mu.astype(np.float32), sigma=sigma)
    assert load_stats(tmp_path / "edm.npz")[0].dtype == np.float64


def test_bad_files_rejected(tmp_path):
    np.savez(tmp_path / "nokey.npz", mu=np.zeros(3))
    with pytest.raises(ValueError, match=r"lack key\(s\) \['sigma'\]"):
        load_stats(tmp_path / "nokey.npz")
    np.savez(tmp_path / "shape.npz", mu=np.zeros(3), sigma=np.eye(4))
    with pytest.raises(ValueError, match="need mu"):
        load_stats(tmp_path / "shape.npz")
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="cannot read"):
        load_stats(tmp_path / "junk.npz")
    with pytest.raises(ValueError, match="cannot read"):
        load_stats(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="need mu"):
        save_stats(tmp_path / "bad.npz", np.zeros(3), np.eye(2))
    assert not (tmp_path / "bad.npz").exists()


def test_import_amed_is_light():
    code = "import sys, amed, amed.fid, amed.features, amed.download; bad = {'scipy', 'cleanfid', 'torchvision'} & set(sys.modules); print(sorted(bad))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_inception_offline_fails_fast(tmp_path, monkeypatch):
    pytest.importorskip("cleanfid")
    import amed.fid as fid
    import amed.inception

    monkeypatch.setenv("AMED_INCEPTION_DIR", str(tmp_path))
    monkeypatch.setattr(amed.inception, "INCEPTION_URL", "http://127.0.0.1:9/inception-2015-12-05.pt")  # refused
    monkeypatch.setattr(amed.inception, "_MODEL", None)
    with pytest.raises(fid.InceptionUnavailable, match="download failed"):
        fid.inception_features(np.zeros((2, 8, 8, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []
    with pytest.raises(ValueError, match="uint8"):
        fid.inception_features(np.zeros((2, 8, 8, 3), np.float32))
