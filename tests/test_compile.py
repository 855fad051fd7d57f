"""compile_denoiser: compiled D and AMED features equal eager, and a sampling loop does not recompile."""

from __future__ import annotations

import pytest
import torch

import amed
from amed.models.base import Denoiser, ModelInfo
from amed.predictor import AMEDConfig, AMEDPredictor

B = 4
TOL = 1e-4  # max|compiled - eager| <= TOL * max(1, max|eager|), for D, h and final samples


class TinyNet(Denoiser):
    """conv 2->8 at 8x8, a hooked 8x8 block, conv 8->1; EDM-style preconditioning."""

    def __init__(self):
        super().__init__()
        self.info = ModelInfo(name="tiny-compile", shape=(1, 8, 8))
        g = torch.Generator().manual_seed(0)
        self.inp = torch.nn.Conv2d(2, 8, 3, padding=1)
        self.mid = torch.nn.Sequential(torch.nn.SiLU(), torch.nn.Conv2d(8, 8, 3, padding=1))
        self.out = torch.nn.Conv2d(8, 1, 3, padding=1)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)
        self.requires_grad_(False)

    def feature_module(self):
        return self.mid

    def denoise(self, x, sigma):
        s = sigma.float().view(-1, 1, 1, 1)
        c_in, c_skip, c_out = 1 / (s**2 + 0.25).sqrt(), 0.25 / (s**2 + 0.25), 0.5 * s / (s**2 + 0.25).sqrt()
        h = self.inp(torch.cat([c_in * x, (s.log() / 4).expand(-1, 1, 8, 8)], 1))
        h = h + self.mid(h)
        return c_skip * x + c_out * self.out(h)


def _close(a, b):
    err = (a.float() - b.float()).abs().max().item()
    assert err <= TOL * max(1.0, b.abs().max().item()), err


def test_compiled_matches_eager_without_recompiling():
    pytest.importorskip("torch._dynamo")
    from amed.compile import CompiledDenoiser, compile_denoiser, recompile_count

    torch.manual_seed(0)
    eager = TinyNet().eval()
    compiled = compile_denoiser(eager, example_batch=B, check=True)  # compiles both paths, checks vs eager
    assert isinstance(compiled, CompiledDenoiser) and compiled.info is eager.info
    graphs = recompile_count()

    with torch.no_grad():
        # D and features on several inputs (sigma from 80 down to 0.002, float32 and float64 sigma).
        for i, sig in enumerate([80.0, 5.0, 0.3, 0.002]):
            x = torch.randn(B, 1, 8, 8, generator=torch.Generator().manual_seed(i)) * sig
            for dtype in (torch.float32, torch.float64):
                sigma = torch.full((B,), sig, dtype=dtype)
                _close(compiled(x, sigma), eager(x, sigma))
                D_c, h_c = compiled.with_feature(x, sigma)
                D_e, h_e = eager.with_feature(x, sigma)
                assert h_c.shape == (B, 8, 8)
                _close(D_c, D_e)
                _close(h_c, h_e)
                assert (h_c - h_e).abs().max() < 1e-5 and h_e.abs().max() > 1e-2  # a real, fresh feature

    noise = amed.randn_seeds(range(B), eager.info.shape)
    _close(amed.sample(compiled, noise, solver="ipndm", nfe=5), amed.sample(eager, noise, solver="ipndm", nfe=5))
    cfg = AMEDConfig(solver="amed", nfe=5, shape=eager.info.shape, model=eager.info.name, scale_time=0.1)
    p = AMEDPredictor(cfg, seed=1)
    _close(amed.sample(compiled, noise, predictor=p), amed.sample(eager, noise, predictor=p))
    assert recompile_count() == graphs, "the sampling loop recompiled"

    # Batch 1 (plain path only, to keep the compile short): the samplers pass an expanded (stride 0)
    # sigma, a first call with a contiguous one must not make them recompile.
    one = compile_denoiser(eager)
    noise = noise[:1]
    with torch.no_grad():
        one(noise * 3.0, torch.full((1,), 3.0))
    graphs = recompile_count()
    _close(amed.sample(one, noise, solver="ipndm", nfe=5), amed.sample(eager, noise, solver="ipndm", nfe=5))
    assert recompile_count() == graphs, "the sampling loop recompiled at batch 1"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the GPU options need CUDA")
@pytest.mark.parametrize("opts", [{}, {"mode": "reduce-overhead"}, {"channels_last": True},
                                  {"autocast": torch.bfloat16}], ids=["default", "cudagraphs", "channels_last", "bf16"])
def test_compiled_cuda_options(opts):
    from amed.compile import AUTOCAST_TOL, CUDA_TOL, compile_denoiser, recompile_count

    eager = TinyNet().cuda().eval()
    compiled = compile_denoiser(TinyNet().cuda().eval(), example_batch=B, **opts)  # checks D and h vs eager
    graphs = recompile_count()
    tol = AUTOCAST_TOL if "autocast" in opts else CUDA_TOL  # eager cuDNN convolutions use TF32
    noise = amed.randn_seeds(range(B), eager.info.shape, device="cuda")
    cfg = AMEDConfig(solver="amed", nfe=5, shape=eager.info.shape, model=eager.info.name, scale_time=0.1)
    p = AMEDPredictor(cfg, seed=1)
    for kw in (dict(solver="ipndm", nfe=5), dict(predictor=p)):
        a, b = amed.sample(compiled, noise, **kw), amed.sample(eager, noise, **kw)
        assert (a - b).abs().max().item() <= tol * max(1.0, b.abs().max().item()), (kw, opts)
    assert recompile_count() == graphs, "the sampling loop recompiled"


def test_failed_compile_raises_or_falls_back_to_eager():
    from amed.compile import CompileFailed, compile_denoiser

    net = TinyNet()
    x, sigma = torch.randn(B, 1, 8, 8), torch.full((B,), 2.0)
    eager = net(x, sigma)

    def broken(*_):
        raise RuntimeError("no C++ compiler")

    strict = compile_denoiser(net, backend="eager")
    strict._plain = broken
    with pytest.raises(CompileFailed, match="no C\\+\\+ compiler"):
        strict(x, sigma)
    strict.release()

    lenient = compile_denoiser(net, backend="eager", fallback=True)
    lenient._plain = broken
    with pytest.warns(RuntimeWarning, match="continuing with the eager network"):
        out = lenient(x, sigma)
    assert torch.equal(out, eager) and "no C++ compiler" in lenient.fell_back
    assert torch.equal(lenient(x, sigma), eager)  # later calls: eager, no second warning needed
    lenient.release()

    def user_error(*_):
        raise ValueError("no prompts bound")

    picky = compile_denoiser(net, backend="eager", fallback=True)
    picky._plain = user_error  # the adapter's own complaint is not a compiler failure: it surfaces as is
    with pytest.raises(ValueError, match="no prompts bound"):
        picky(x, sigma)
    picky.release()
