"""Stable Diffusion adapter on a tiny diffusers pipeline saved and reloaded offline."""

import os
import subprocess
import sys

import pytest
import torch

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

from amed.models.sd import load_sd, read_captions, sigma_to_t, vp_sigmas  # noqa: E402
from conftest import hide_broken_torchvision as _hide_broken_torchvision  # noqa: E402


def test_import_amed_models_without_diffusers():
    code = ("import sys; import amed, amed.models.sd, amed.models.registry, amed.models.download; "
            "assert 'diffusers' not in sys.modules and 'transformers' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(__file__)))


def test_sigma_table_and_timestep_map():
    betas = torch.linspace(0.00085**0.5, 0.012**0.5, 1000, dtype=torch.float64) ** 2
    sigmas = vp_sigmas(torch.cumprod(1 - betas, 0))
    assert sigmas[0].item() == pytest.approx(0.029168, abs=2e-6)
    assert sigmas[-1].item() == pytest.approx(14.6146, abs=1e-4)
    grid = torch.tensor([0, 1, 500, 998, 999])
    torch.testing.assert_close(sigma_to_t(sigmas[grid], sigmas), grid.double())
    mid = (sigmas[10].log() * 0.25 + sigmas[11].log() * 0.75).exp()
    assert sigma_to_t(mid[None], sigmas).item() == pytest.approx(10.75)
    # Clamped outside the table.
    assert sigma_to_t(torch.tensor([1e-3, 100.0]), sigmas).tolist() == [0.0, 999.0]


def test_read_captions(tmp_path):
    (tmp_path / "c.csv").write_text('id,text\n0,"a cat, on a mat"\n1,a dog\n', encoding="utf-8")
    assert read_captions(tmp_path / "c.csv") == ["a cat, on a mat", "a dog"]
    with pytest.raises(ValueError, match="'caption'"):
        read_captions(tmp_path / "c.csv", column="caption")


def test_load_offline_cfg_and_feature(tiny_pipeline):
    captions = ["a cat", "a dog", "a photo", "cat !"]
    net = load_sd(str(tiny_pipeline), local_files_only=True, captions=captions)
    assert net.info.shape == (4, 8, 8)
    assert net.info.sigma_min == pytest.approx(0.029168, abs=2e-6)
    assert net.info.sigma_max == pytest.approx(14.6146, abs=1e-4)
    assert net.feature_module() is net.unet.mid_block

    x = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    sigma = torch.tensor([0.5, 3.0])
    with pytest.raises(ValueError, match="condition"):
        net(x, sigma)
    seeds = [3, 1]
    with net.condition(seeds):
        cond = net._cond
        torch.testing.assert_close(cond, net.encode_prompts(["cat !", "a dog"]))  # prompt i <-> seed i
        seen = []
        hook = net.unet.mid_block.register_forward_hook(lambda m, i, o: seen.append(o))
        d_x, h = net.with_feature(x, sigma)
        hook.remove()

    # One UNet call on the batch [uncond; cond]; the feature is the conditional half's channel mean.
    assert len(seen) == 1 and seen[0].shape == (4, 16, 4, 4)
    torch.testing.assert_close(h, seen[0][2:].mean(1))
    assert h.shape == (2, 4, 4)

    # Reference computation: D = x - sigma * (eps_u + 7.5 (eps_c - eps_u)), input scaled by 1/sqrt(1+sigma^2).
    s = sigma.reshape(-1, 1, 1, 1)
    x_in = x / (1 + s**2).sqrt()
    t = sigma_to_t(sigma, net.sigmas).float()
    uncond = net.encode_prompts(["", ""])
    with torch.no_grad():
        eps_u = net.unet(x_in, t, encoder_hidden_states=uncond).sample
        eps_c = net.unet(x_in, t, encoder_hidden_states=cond).sample
    torch.testing.assert_close(d_x, x - s * (eps_u + 7.5 * (eps_c - eps_u)), rtol=1e-4, atol=1e-4)

    # Sample i depends only on seed i.
    with net.condition([1]):
        single = net(x[1:], sigma[1:])
        with pytest.raises(ValueError, match="batch"):
            net(x, sigma)
    torch.testing.assert_close(single, d_x[1:], rtol=1e-4, atol=1e-4)
    with pytest.raises(ValueError, match="seed 9"):
        with net.condition([9]):
            pass

    img = net.decode(d_x)
    assert img.shape == (2, 3, 8, 8) and img.abs().max() <= 1


def test_missing_folder_is_a_clear_error(tmp_path):
    _hide_broken_torchvision()
    pytest.importorskip("diffusers")
    with pytest.raises(OSError, match="cannot load Stable Diffusion"):
        load_sd(str(tmp_path / "nope"), local_files_only=True)
