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


def lincomb(terms: Sequence[torch.Tensor], coeffs: Sequence) -> torch.Tensor:
    """sum_k coeffs[k] * terms[k]; coefficients are [B] float64 tensors (the first may be the float 1.0)."""
    global _fused
    x = terms[0]
    if x.is_cuda and not any(t.requires_grad for t in terms) and \
            not any(isinstance(c, torch.Tensor) and c.requires_grad for c in coeffs):
        if _fused is None:
            try:
                from kernels import lincomb as fused  # noqa: PLC0415 (optional, CUDA-only path)

                _fused = fused
            except ImportError:
                _fused = False
        if _fused:
            B = x.shape[0]
            cols = [c.to(x.device) if isinstance(c, torch.Tensor) else torch.full((B,), float(c), device=x.device,
                                                                                  dtype=torch.float64) for c in coeffs]
            return _fused(list(terms), torch.stack(cols, dim=1))
    return _reference(terms, coeffs)
