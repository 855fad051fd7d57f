"""Karras preconditioning (EDM Table 1) in its one home, amed.models.precond, and the adapters that use it."""

import math

import pytest
import torch

from amed.models.precond import edm_noise_label, karras_scalings

SIGMAS = [0.002, 0.0292, 0.3, 0.5, 0.752, 1.0, 7.3, 14.6146, 80.0]


@pytest.mark.parametrize("sd", [0.5, 0.752])
def test_scalings_match_table_1(sd):
    sigma = torch.tensor(SIGMAS, dtype=torch.float64)
    c_skip, c_out, c_in = karras_scalings(sigma, sd)
    for i, s in enumerate(SIGMAS):
        assert c_skip[i].item() == pytest.approx(sd**2 / (s**2 + sd**2), rel=1e-15)
        assert c_out[i].item() == pytest.approx(s * sd / math.sqrt(s**2 + sd**2), rel=1e-15)
        assert c_in[i].item() == pytest.approx(1 / math.sqrt(s**2 + sd**2), rel=1e-15)
    # At sigma = sigma_data the skip and the network share the target equally.
    c_skip, c_out, c_in = karras_scalings(torch.tensor([sd], dtype=torch.float64), sd)
    assert c_skip.item() == pytest.approx(0.5) and c_out.item() == pytest.approx(sd / math.sqrt(2))
    assert c_in.item() == pytest.approx(1 / (sd * math.sqrt(2)))
    # sd^2 / (s^2 + sd^2) + s^2 / (s^2 + sd^2) = 1 for every sigma.
    c_skip, c_out, _ = karras_scalings(sigma, sd)
    torch.testing.assert_close(c_skip + (c_out / sd) ** 2, torch.ones_like(sigma), rtol=0, atol=1e-15)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_same_bits_as_the_adapters_old_spellings(dtype):
    """edm.py and embedded.py wrote c_in = 1/(sd^2 + s^2)^0.5, cm.py 1/(s^2 + sd^2)^0.5: the same bits."""
    s = torch.tensor(SIGMAS, dtype=dtype).reshape(-1, 1, 1, 1)
    sd = 0.5
    c_skip, c_out, c_in = karras_scalings(s, sd)
    assert c_skip.dtype == c_out.dtype == c_in.dtype == dtype and c_in.shape == s.shape
    assert torch.equal(c_skip, sd**2 / (s**2 + sd**2))
    assert torch.equal(c_out, s * sd / (s**2 + sd**2).sqrt())
    assert torch.equal(c_in, 1 / (sd**2 + s**2).sqrt()) and torch.equal(c_in, 1 / (s**2 + sd**2).sqrt())
    assert torch.equal(edm_noise_label(s), s.log() / 4)
    assert torch.equal(edm_noise_label(s.flatten()), s.log().flatten() / 4)


def test_embedded_model_is_karras_preconditioned():
    from amed.models.embedded import load_embedded

    net = load_embedded().net
    x = torch.randn(4, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    sigma = torch.tensor([0.002, 0.5, 3.0, 80.0])
    s = sigma.reshape(-1, 1, 1, 1)
    sd = net.sigma_data
    f = net.model(x / (s**2 + sd**2).sqrt(), sigma.log() / 4)
    torch.testing.assert_close(net(x, sigma), sd**2 / (s**2 + sd**2) * x + s * sd / (s**2 + sd**2).sqrt() * f)
