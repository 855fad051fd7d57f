"""The embedded default model and the FD-digits feature network: offline loading, contract, sanity."""

import json
import shutil

import numpy as np
import pytest
import torch

from amed.models.base import Denoiser
from amed.models.embedded import DEFAULT, EMBEDDED_MODELS, asset_dir, load_embedded, sha256_file

sklearn = pytest.importorskip("sklearn")
torch.set_num_threads(1)


@pytest.fixture(scope="module")
def model():
    return load_embedded()


@pytest.fixture(scope="module")
def digits():
    from sklearn.datasets import load_digits

    d = load_digits()
    return torch.from_numpy((d.images[:, None] / 8.0 - 1.0).astype(np.float32)), torch.from_numpy(d.target)


def test_load_offline_sha_verified(model):
    spec = EMBEDDED_MODELS[DEFAULT]
    record = json.loads((asset_dir() / spec.record_file).read_text())
    assert isinstance(model, Denoiser)
    assert model.info.sha256 == record["sha256"] == sha256_file(asset_dir() / spec.weights_file)
    assert model.info.shape == (1, 8, 8) and model.info.source == "embedded"
    assert (model.info.sigma_min, model.info.sigma_max) == (0.002, 80.0)
    assert 0.5e6 <= record["params"] <= 1.5e6 and model.info.license
    assert (asset_dir() / spec.weights_file).stat().st_size < 8 * 2**20


def test_corrupted_or_missing_asset_rejected(tmp_path):
    spec = EMBEDDED_MODELS[DEFAULT]
    for f in (spec.weights_file, spec.record_file):
        shutil.copy(asset_dir() / f, tmp_path / f)
    load_embedded(DEFAULT, tmp_path)  # the copy loads
    w = tmp_path / spec.weights_file
    data = bytearray(w.read_bytes())
    data[-10] ^= 0xFF
    w.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="sha256 mismatch"):
        load_embedded(DEFAULT, tmp_path)
    w.unlink()
    with pytest.raises(FileNotFoundError, match="not installed"):
        load_embedded(DEFAULT, tmp_path)
    with pytest.raises(ValueError, match="unknown embedded model 'nope'"):
        load_embedded("nope")


def test_denoise_contract(model):
    x = torch.randn(5, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.002, 0.1, 1.0, 10.0, 80.0])
    D = model(x, sigma)
    assert D.shape == x.shape and D.dtype == torch.float32 and torch.isfinite(D).all()
    assert model(x.double(), sigma.double()).dtype == torch.float64
    D2, h = model.with_feature(x, sigma)
    assert h.shape == (5, 8, 8) and torch.isfinite(h).all()
    torch.testing.assert_close(D2, D)
    # Deterministic, and row i does not depend on the rest of the batch.
    torch.testing.assert_close(model(x, sigma), D, rtol=0, atol=0)
    torch.testing.assert_close(model(x[2:3], sigma[2:3]), D[2:3], rtol=1e-5, atol=1e-5)
    assert model(x, torch.tensor(1.0)).shape == x.shape  # a scalar sigma is broadcast


def test_denoiser_limits(model, digits):
    # The model works in a centred space: data minus the per-pixel mean image (decode adds it back).
    centred = digits[0] - model.mean_image
    assert torch.allclose(model.decode(centred[:4]), digits[0][:4], atol=1e-6)
    x0 = centred[:256]
    g = torch.Generator().manual_seed(1)
    # Small sigma: D(x; sigma) is close to x.
    x = x0 + 0.002 * torch.randn(x0.shape, generator=g)
    assert (model(x, torch.full((256,), 0.002)) - x).abs().max() < 0.02
    # sigma = 80: D is close to the data mean, zero in the centred space (the exact posterior mean deviates
    # by ~0.005 RMS; this small, briefly trained net scatters more per sample there, still well below the data).
    mean_img = centred.mean(0, keepdim=True)
    D = model(x0 + 80 * torch.randn(x0.shape, generator=g), torch.full((256,), 80.0))
    assert (D.mean(0, keepdim=True) - mean_img).pow(2).mean().sqrt() < 0.06
    assert (D - mean_img).pow(2).mean().sqrt() < 0.4 * (centred - mean_img).pow(2).mean().sqrt()
    # Intermediate sigma: denoising helps.
    x = x0 + 0.5 * torch.randn(x0.shape, generator=g)
    assert (model(x, torch.full((256,), 0.5)) - x0).pow(2).mean() < 0.5 * (x - x0).pow(2).mean()


def test_samples_look_like_digits(model):
    import amed
    from amed.features import load_feature_net

    x = amed.sample(model, amed.randn_seeds(range(32), (1, 8, 8)), solver="ipndm", nfe=10, schedule="polynomial")
    p = load_feature_net()(model.decode(x).clamp(-1, 1)).softmax(1)
    assert p.max(1).values.mean() > 0.8  # the classifier is confident on generated samples
    assert len(set(p.argmax(1).tolist())) >= 8  # and they cover most classes


def test_feature_net_separates_classes(digits):
    from amed.features import METRIC_NAME, digit_features, fd_digits, load_feature_net
    from amed.models.train_embedded import digits_split

    assert METRIC_NAME == "FD-digits"
    _, _, xte, yte = digits_split()
    acc = (load_feature_net()(torch.from_numpy(xte)).argmax(1) == torch.from_numpy(yte)).float().mean()
    assert acc > 0.95
    x, y = digits
    f = digit_features(x[:10])
    assert f.shape == (10, 64) and f.dtype == torch.float32
    zeros, ones = x[y == 0], x[y == 1]
    within = fd_digits(zeros[::2], zeros[1::2])
    between = fd_digits(zeros, ones)
    assert between > 10 * within
    with pytest.raises(ValueError, match="1, 8, 8"):
        digit_features(torch.zeros(2, 3, 8, 8))


@pytest.mark.parametrize("name", sorted(EMBEDDED_MODELS))
def test_every_shipped_model_loads(name):
    m = load_embedded(name)
    C, H, W = EMBEDDED_MODELS[name].shape
    x = torch.zeros(2, C, H, W)
    D, h = m.with_feature(x, torch.tensor([0.5, 5.0]))
    assert D.shape == x.shape and h.shape == (2, 8, 8) and torch.isfinite(D).all()
    assert m.info.name == name and m.info.extra["params"] <= 1.5e6


def test_hooked_denoiser_matches_the_adapter(model):
    """HookedDenoiser (bring your own network) hooks a named module: the same D and feature as the adapter."""
    from amed.models.base import HookedDenoiser

    name = "model.enc." + [k for k in model.net.model.enc.keys() if k.startswith("8x8_block")][-1]
    byo = HookedDenoiser(model.net, name, info=model.info)
    x, sigma = torch.randn(3, 1, 8, 8), torch.tensor([0.3, 2.0, 40.0])
    D, h = model.with_feature(x, sigma)
    D2, h2 = byo.with_feature(x, sigma)
    assert torch.equal(D, D2) and torch.equal(h, h2) and h2.shape == (3, 8, 8)
    with pytest.raises(ValueError, match="has no module 'model.enc.nope'"):
        HookedDenoiser(model.net, "model.enc.nope")
