"""Per-sample linear combinations, the only tensor arithmetic of the solver updates.

``lincomb(terms, coeffs)`` returns sum_k coeffs[k][b] * terms[k][b]. Coefficients are computed in
float64 on [B] tensors and cast at the tensor boundary. On CUDA the fused Triton kernel of the
top-level ``kernels`` package does it in one pass; elsewhere it is plain torch.

The fused path can be switched off, so that benchmarks compare fused vs unfused on the same GPU:

* environment: ``AMED_FUSED=0`` (read at every call, so it may be set after ``import amed``);
* code: ``with amed.ops.use_fused(False): ...`` (or ``use_fused(False)`` as a plain call, which
  stays in force until changed; the override wins over the environment).

``backend(x)`` names the path ``lincomb`` takes for terms like ``x``: ``"fused"`` (Triton),
``"unfused"`` (CUDA, plain torch) or ``"torch"`` (not CUDA: no fused path exists there).
"""

from __future__ import annotations

import importlib
import os
from typing import Sequence

import torch

from .errors import AmedValueError

__all__ = ["lincomb", "bcast", "use_fused", "fused_enabled", "backend"]

_fused = None  # resolved lazily: the kernels package's dispatcher, or False when unavailable
_override: bool | None = None  # set by use_fused; None: follow $AMED_FUSED


class use_fused:
    """Enable or disable the fused CUDA path; a plain call sets it, ``with`` restores the previous setting."""

    def __init__(self, flag: bool):
        global _override
        if not isinstance(flag, bool):
            raise AmedValueError(f"use_fused takes True or False, got {flag!r}")
        self.previous, _override = _override, flag

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        global _override
        _override = self.previous
        return False


def fused_enabled() -> bool:
    """Whether the fused path may be used: the ``use_fused`` override, else ``$AMED_FUSED`` (default on)."""
    if _override is not None:
        return _override
    value = os.environ.get("AMED_FUSED", "1").strip().lower()
    if value not in ("0", "1", "", "true", "false", "on", "off", "yes", "no"):
        raise AmedValueError(f"AMED_FUSED must be 0 or 1, got {value!r}")
    return value in ("1", "", "true", "on", "yes")


def _kernels():
    """The kernels package's lincomb module (the Triton launcher and its ``fusable`` rule), or False when the
    package or triton is unavailable."""
    global _fused
    if _fused is None:
        try:
            module = importlib.import_module("kernels.lincomb")  # optional, CUDA-only
            _fused = module if module.triton_available() else False
        except ImportError:
            _fused = False
    return _fused


def backend(x: torch.Tensor, k: int = 2) -> str:
    """The path ``lincomb`` takes for K (gradient-free) terms like ``x``: "fused", "unfused" or "torch"."""
    if not x.is_cuda:
        return "torch"
    return "fused" if fused_enabled() and _worth_fusing(x, k) else "unfused"


def bcast(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A [B] coefficient as [B, 1, ..., 1] in ``like``'s dtype, for broadcasting against [B, ...]."""
    return c.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))


def _reference(terms: Sequence[torch.Tensor], coeffs: Sequence) -> torch.Tensor:
    grad = any(t.requires_grad for t in terms) or any(isinstance(c, torch.Tensor) and c.requires_grad for c in coeffs)
    if isinstance(coeffs[0], float) and coeffs[0] == 1.0 and len(terms) > 1:
        # x + sum_k c_k m_k: the first pass reads x once instead of scaling it by ones.
        out = torch.addcmul(terms[0], terms[1], bcast(coeffs[1], terms[1]))
        rest = zip(terms[2:], coeffs[2:])
    else:
        out = terms[0] * (coeffs[0] if isinstance(coeffs[0], float) else bcast(coeffs[0], terms[0]))
        rest = zip(terms[1:], coeffs[1:])
    for t, c in rest:
        out = out + t * bcast(c, t) if grad else out.addcmul_(t, bcast(c, t))
    return out


# The fused kernel pays a fixed host cost per launch (Triton's launcher plus building the [B, K]
# coefficients) and saves memory traffic; it wins once a state is a few million elements. Measured on an
# H200 (benchmarks/bench_fused_loop.py, NOTES.md): whole sampling loops with every update fused ran
# 1.000-1.007x the speed of plain torch at 3x128x128 x 256 and 3x256x256 x 64/256, and made no difference at
# 3x64x64 x 256 (3.1M elements). The threshold is on the state's size alone, so every update of a run
# takes the same path whatever its number of terms.
FUSED_MIN_NUMEL = 1 << 22
_ONES: dict = {}  # (value, B, device) -> a cached [B] float64 constant column


def _worth_fusing(x: torch.Tensor, k: int = 2) -> bool:
    """Whether an update of K terms like ``x`` goes to the fused kernel: the size threshold here, the device,
    dtype and term rules of the kernel itself (``kernels.lincomb.fusable``)."""
    if x.numel() < FUSED_MIN_NUMEL:
        return False
    module = _kernels()
    return bool(module) and module.fusable(x, k)


def _column(c, B: int, device) -> torch.Tensor:
    if isinstance(c, torch.Tensor):
        return c if c.device == device and c.dtype == torch.float64 else c.to(device=device, dtype=torch.float64)
    key = (float(c), B, device)
    col = _ONES.get(key)
    if col is None:
        if len(_ONES) > 64:
            _ONES.clear()
        col = _ONES[key] = torch.full((B,), float(c), device=device, dtype=torch.float64)
    return col


def lincomb(terms: Sequence[torch.Tensor], coeffs: Sequence) -> torch.Tensor:
    """sum_k coeffs[k] * terms[k]; coefficients are [B] float64 tensors (the first may be the float 1.0).

    On CUDA, gradient-free updates of states with at least ``FUSED_MIN_NUMEL`` elements go through the
    fused Triton kernel (fp32 accumulation); smaller ones and everything else run in plain torch.
    """
    x = terms[0]
    if x.is_cuda and _worth_fusing(x, len(terms)) and fused_enabled() and \
            not any(t.requires_grad for t in terms) and \
            not any(isinstance(c, torch.Tensor) and c.requires_grad for c in coeffs):
        if all(t.shape == x.shape and t.dtype == x.dtype and t.device == x.device for t in terms):
            coef = torch.stack([_column(c, x.shape[0], x.device) for c in coeffs], dim=1)  # [B, K] float64
            return _kernels()._lincomb_triton(list(terms), coef, None)
    return _reference(terms, coeffs)
