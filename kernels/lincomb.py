"""Fused per-sample linear combination of image-sized tensors (the ODE-solver state update).

Every solver step in this project ends in ``out[b] = sum_k coeffs[b, k] * terms[k][b]``:
iPNDM ``x + h * sum_k beta_k d_k`` (K <= 5), DPM-Solver++/UniPC ``a x + sum_k b_k m_k``,
AMED ``x + (s - t) d`` with a per-sample ``s`` (K = 2). Unfused torch launches one kernel
per term and re-reads the accumulator each time; the Triton kernel reads each operand once
and writes the result once.

Nothing here imports triton, queries a device or compiles at import time: the kernel is
defined on first use (so ``TRITON_INTERPRET=1`` set before that first use is honoured).
"""
from __future__ import annotations

import functools
import os
from typing import Optional, Sequence

import torch

__all__ = ["lincomb", "lincomb_reference", "triton_available", "fusable", "default_config", "MAX_TERMS"]

MAX_TERMS = 6
_TRITON_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
_BACKENDS = ("auto", "torch", "triton")


@functools.lru_cache(maxsize=None)
def triton_available() -> bool:
    """True when ``import triton`` succeeds (checked once, lazily)."""
    try:
        import triton  # noqa: F401
        import triton.language  # noqa: F401
    except Exception:  # ImportError, or a broken install (e.g. interpreter without numpy)
        return False
    return True


def fusable(t0: torch.Tensor, k: int) -> bool:
    """Whether the Triton kernel takes K terms like ``t0`` (the one rule of the "auto" backend, also used by
    the solvers' dispatcher ``amed.ops``): CUDA, float32/float16/bfloat16, 1 <= K <= MAX_TERMS, triton imports."""
    return t0.is_cuda and t0.dtype in _TRITON_DTYPES and 1 <= k <= MAX_TERMS and triton_available()


def _check(terms: Sequence[torch.Tensor], coeffs: torch.Tensor,
           out: Optional[torch.Tensor]) -> None:
    """Validate shapes, dtypes and devices; errors name the bad value."""
    if isinstance(terms, torch.Tensor):
        raise ValueError(f"terms must be a sequence of tensors, got a single tensor of shape {tuple(terms.shape)}")
    k = len(terms)
    if not 1 <= k <= MAX_TERMS:
        raise ValueError(f"lincomb takes 1 to {MAX_TERMS} terms, got K={k}")
    t0 = terms[0]
    if t0.dim() < 1:
        raise ValueError(f"terms need a leading batch dimension, got shape {tuple(t0.shape)}")
    if not t0.is_floating_point():
        raise ValueError(f"terms must be floating point, got dtype {t0.dtype}")
    for i, t in enumerate(terms[1:], start=1):
        if t.shape != t0.shape:
            raise ValueError(f"terms[{i}] has shape {tuple(t.shape)}, expected {tuple(t0.shape)} like terms[0]")
        if t.dtype != t0.dtype:
            raise ValueError(f"terms[{i}] has dtype {t.dtype}, expected {t0.dtype} like terms[0]")
        if t.device != t0.device:
            raise ValueError(f"terms[{i}] is on {t.device}, expected {t0.device} like terms[0]")
    if not isinstance(coeffs, torch.Tensor):
        raise ValueError(f"coeffs must be a tensor of shape [B, K] or [K], got {type(coeffs).__name__}")
    if not coeffs.is_floating_point():
        raise ValueError(f"coeffs must be floating point, got dtype {coeffs.dtype}")
    if coeffs.device != t0.device:
        raise ValueError(f"coeffs is on {coeffs.device}, expected {t0.device} like the terms")
    batch = t0.shape[0]
    if tuple(coeffs.shape) not in ((batch, k), (k,)):
        raise ValueError(f"coeffs must have shape [B, K]=[{batch}, {k}] or [K]=[{k}], got {tuple(coeffs.shape)}")
    if out is not None:
        if out.shape != t0.shape or out.dtype != t0.dtype or out.device != t0.device:
            raise ValueError(
                f"out must match the terms ({tuple(t0.shape)}, {t0.dtype}, {t0.device}), "
                f"got ({tuple(out.shape)}, {out.dtype}, {out.device})")


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 terms accumulate in float64; everything else in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _reference(terms, coeffs, out):
    t0 = terms[0]
    acc_dtype = _acc_dtype(t0.dtype)
    c = coeffs.to(acc_dtype)
    if c.dim() == 2:  # [B, K] -> [B, K, 1, ..., 1] so c[:, k] broadcasts over a sample
        c = c.reshape(c.shape + (1,) * (t0.dim() - 1))
        col = lambda k: c[:, k]  # noqa: E731
    else:
        col = lambda k: c[k]  # noqa: E731
    acc = t0.to(acc_dtype) * col(0)  # always a fresh tensor, so `out` may alias a term
    for k in range(1, len(terms)):
        acc.add_(terms[k].to(acc_dtype) * col(k))
    if out is not None:
        return out.copy_(acc)
    return acc.to(t0.dtype)


def lincomb_reference(terms: Sequence[torch.Tensor], coeffs: torch.Tensor,
                      out: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Plain-torch ``out[b] = sum_k coeffs[b, k] * terms[k][b]`` (also the fallback).

    Accumulates in float64 for float64 terms, otherwise in float32; the result has the
    terms' dtype. ``coeffs`` is ``[B, K]`` (per sample) or ``[K]`` (shared).
    """
    _check(terms, coeffs, out)
    return _reference(terms, coeffs, out)


@functools.lru_cache(maxsize=None)
def _kernel():
    """Define the Triton kernel on first use (honours TRITON_INTERPRET at that moment)."""
    import triton
    import triton.language as tl

    @triton.jit
    def _lincomb_kernel(t0, t1, t2, t3, t4, t5, c_ptr, out_ptr, n, nblocks, stride_cb,
                        K: tl.constexpr, BLOCK: tl.constexpr):
        # One program per (sample, block of that sample's flattened row): 1-D grid of B * nblocks.
        pid = tl.program_id(0)
        b = pid // nblocks
        blk = pid - b * nblocks
        offs = blk * BLOCK + tl.arange(0, BLOCK)
        mask = offs < n  # masked tail of each row
        idx = b.to(tl.int64) * n + offs
        c_row = c_ptr + b * stride_cb  # stride_cb = 0 for shared [K] coefficients
        # Accumulate in fp32: acc = c0*t0 + c1*t1 + ... (same order as the reference).
        acc = tl.load(c_row).to(tl.float32) * tl.load(t0 + idx, mask=mask, other=0.0).to(tl.float32)
        if K > 1:
            acc += tl.load(c_row + 1).to(tl.float32) * tl.load(t1 + idx, mask=mask, other=0.0).to(tl.float32)
        if K > 2:
            acc += tl.load(c_row + 2).to(tl.float32) * tl.load(t2 + idx, mask=mask, other=0.0).to(tl.float32)
        if K > 3:
            acc += tl.load(c_row + 3).to(tl.float32) * tl.load(t3 + idx, mask=mask, other=0.0).to(tl.float32)
        if K > 4:
            acc += tl.load(c_row + 4).to(tl.float32) * tl.load(t4 + idx, mask=mask, other=0.0).to(tl.float32)
        if K > 5:
            acc += tl.load(c_row + 5).to(tl.float32) * tl.load(t5 + idx, mask=mask, other=0.0).to(tl.float32)
        tl.store(out_ptr + idx, acc.to(out_ptr.dtype.element_ty), mask=mask)

    return _lincomb_kernel


def default_config(dtype: torch.dtype) -> tuple[int, int]:
    """(BLOCK, num_warps) of the kernel for a dtype: 32 bytes of each operand per thread.

    Two 16-byte vector loads per operand per thread keep enough bytes in flight to reach copy
    bandwidth; a 16-bit row therefore takes twice the elements of an fp32 row per program.
    Measured on an H200 (benchmarks/bench_kernels.py --sweep): see NOTES.md, Performance.
    """
    return (2048, 4) if dtype in (torch.float16, torch.bfloat16) else (1024, 4)


def _lincomb_triton(terms, coeffs, out, block: Optional[int] = None, num_warps: Optional[int] = None):
    """Launch the fused kernel (inputs already validated)."""
    t0 = terms[0]
    if t0.dtype not in _TRITON_DTYPES:
        raise ValueError(f"the Triton lincomb supports float32/float16/bfloat16, got dtype {t0.dtype}")
    if not t0.is_cuda and os.environ.get("TRITON_INTERPRET", "0") != "1":
        raise ValueError(f"backend='triton' on {t0.device} tensors needs TRITON_INTERPRET=1 "
                         "(set before the kernel is first used)")
    d_block, d_warps = default_config(t0.dtype)
    block = d_block if block is None else block
    num_warps = (d_warps if block >= d_block else 4) if num_warps is None else num_warps
    if block < 1 or block & (block - 1):
        raise ValueError(f"block must be a power of two, got {block!r}")
    kernel = _kernel()
    k = len(terms)
    flat = [t if t.is_contiguous() else t.contiguous() for t in terms]
    # float32 or float64 coefficients are read as they are (the kernel casts each to fp32): no cast launch
    c = coeffs if coeffs.dtype in (torch.float32, torch.float64) and coeffs.is_contiguous() else \
        coeffs.to(torch.float32).contiguous()
    stride_cb = c.stride(0) if c.dim() == 2 else 0
    direct = out is not None and out.is_contiguous()
    dst = out if direct else torch.empty_like(flat[0], memory_format=torch.contiguous_format)
    batch = t0.shape[0]
    if dst.numel() > 0:
        n = dst.numel() // batch
        nblocks = -(-n // block)
        ptrs = flat + [flat[0]] * (MAX_TERMS - k)  # unused slots: never read (K is constexpr)
        grid = (batch * nblocks,)
        if t0.is_cuda and t0.device.index != torch.cuda.current_device():
            with torch.cuda.device(t0.device):  # launch on the tensors' GPU, not the current one
                kernel[grid](*ptrs, c, dst, n, nblocks, stride_cb, K=k, BLOCK=block, num_warps=num_warps)
        else:
            kernel[grid](*ptrs, c, dst, n, nblocks, stride_cb, K=k, BLOCK=block, num_warps=num_warps)
    if out is not None and not direct:
        return out.copy_(dst)
    return dst


def lincomb(terms: Sequence[torch.Tensor], coeffs: torch.Tensor, *,
            out: Optional[torch.Tensor] = None, backend: str = "auto") -> torch.Tensor:
    """Fused ``out[b] = sum_k coeffs[b, k] * terms[k][b]`` for 1 <= K <= 6 same-shape terms.

    ``terms``: K tensors of shape ``[B, ...]`` (non-contiguous ones are made contiguous).
    ``coeffs``: ``[B, K]`` per-sample or ``[K]`` shared coefficients, any float dtype.
    ``out``: optional destination of the terms' shape/dtype; it may be one of the terms
    (in-place ``x <- a x + b m``), but must not partially overlap one.
    ``backend``: ``"auto"`` uses Triton for CUDA float32/float16/bfloat16 tensors when triton
    imports, else the torch reference; ``"triton"`` forces the kernel (CPU tensors need
    ``TRITON_INTERPRET=1``); ``"torch"`` forces the reference.
    Result dtype is the terms' dtype; accumulation is fp32 (fp64 for float64 terms).
    """
    if backend not in _BACKENDS:
        raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
    _check(terms, coeffs, out)
    if backend == "triton":
        if not triton_available():
            raise RuntimeError("backend='triton' requested but `import triton` fails")
        return _lincomb_triton(terms, coeffs, out)
    t0 = terms[0]
    if backend == "auto" and fusable(t0, len(terms)):
        return _lincomb_triton(terms, coeffs, out)
    return _reference(terms, coeffs, out)
