"""The fused update on a real GPU (skipped without CUDA): compiled Triton, not the interpreter of test_kernels.py."""

import pytest
import torch

from kernels import triton_available


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and triton")
def test_ops_lincomb_fuses_large_updates_on_cuda():
    """amed.ops.lincomb as the solvers call it ([B] float64 columns, a leading 1.0) matches plain torch on CUDA."""
    from amed import ops

    B = 64
    x, d1, d2 = (torch.randn(B, 3, 256, 256, device="cuda") for _ in range(3))
    h = torch.rand(B, device="cuda", dtype=torch.float64)
    assert ops.backend(x, 3) == "fused"
    fused = ops.lincomb([x, d1, d2], [1.0, 0.5 * h, -h])
    with ops.use_fused(False):
        plain = ops.lincomb([x, d1, d2], [1.0, 0.5 * h, -h])
    torch.testing.assert_close(fused, plain, rtol=1e-5, atol=1e-5)
    small = torch.randn(B, 1, 8, 8, device="cuda")
    assert ops.backend(small, 2) == "unfused"  # below FUSED_MIN_NUMEL: plain torch


@pytest.mark.skipif(not torch.cuda.is_available() or not triton_available(), reason="needs CUDA and triton")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kernel_on_awkward_cuda_sizes(dtype):
    from kernels import lincomb, lincomb_reference

    for shape in [(1, 1), (3, 1023), (2, 1025), (5, 3, 37, 41)]:
        terms = [torch.randn(shape, device="cuda").to(dtype) for _ in range(4)]
        coeffs = torch.randn(shape[0], 4, device="cuda", dtype=torch.float64)
        tol = 1e-5 if dtype == torch.float32 else 2e-2
        torch.testing.assert_close(lincomb(terms, coeffs, backend="triton"), lincomb_reference(terms, coeffs),
                                   rtol=tol, atol=tol)
