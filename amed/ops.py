"""Per-sample linear combinations, the only tensor arithmetic of the solver updates.

``lincomb(terms, coeffs)`` returns sum_k coeffs[k][b] * terms[k][b]. Coefficients are computed in
float64 on [B] tensors and cast at the tensor boundary. On CUDA the fused Triton kernel of the
top-level ``kernels`` package does it in one pass; elsewhere it is plain torch.
"""

from __future__ import annotations

from typing import Sequence

import torch

__all__ = ["lincomb", "bcast"]

_fused = None  # resolved lazily: the kernels package's dispatcher, or False when unavailable


def bcast(c: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """A [B] coefficient as [B, 1, ..., 1] in ``like``'s dtype, for broadcasting against [B, ...]."""
    return c.to(dtype=like.dtype, device=like.device).view(-1, *([1] * (like.ndim - 1)))


def _reference(terms: Sequence[torch.Tensor], coeffs: Sequence[torch.Tensor]) -> torch.Tensor:
    out = terms[0] * bcast(coeffs[0], terms[0])
    for t, c in zip(terms[1:], coeffs[1:]):
        out = out.addcmul_(t, bcast(c, t)) if not out.requires_grad else out + t * bcast(c, t)
    return out


def lincomb(terms: Sequence[torch.Tensor], coeffs: Sequence[torch.Tensor]) -> torch.Tensor:
    """sum_k coeffs[k] * terms[k] with per-sample [B] float64 coefficients."""
    global _fused
    x = terms[0]
    if x.is_cuda and not any(t.requires_grad for t in terms) and not any(c.requires_grad for c in coeffs):
        if _fused is None:
            try:
                from kernels import lincomb as fused  # noqa: PLC0415 (optional, CUDA-only path)

                _fused = fused
            except ImportError:
                _fused = False
        if _fused:
            return _fused(list(terms), torch.stack([c.to(x.device) for c in coeffs], dim=1))
    return _reference(terms, coeffs)
