"""Karras preconditioning (EDM, Karras et al. 2022, Table 1), the one spelling for every adapter using it.

D(x; sigma) = c_skip x + c_out F(c_in x; c_noise) with sd = sigma_data:
c_skip = sd^2 / (sigma^2 + sd^2), c_out = sigma sd / sqrt(sigma^2 + sd^2), c_in = 1 / sqrt(sigma^2 + sd^2).
The network's noise input is the family's own: c_noise = ln(sigma) / 4 for EDM's networks and the embedded
U-Net (``edm_noise_label``); the consistency-models teacher takes 250 ln(sigma) (``amed.models.cm``).
"""

from __future__ import annotations

import torch

__all__ = ["karras_scalings", "edm_noise_label"]


def karras_scalings(sigma: torch.Tensor, sigma_data: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(c_skip, c_out, c_in) of EDM Table 1, elementwise in sigma's shape and dtype (e.g. [B, 1, 1, 1])."""
    sd = sigma_data
    c_skip = sd**2 / (sigma**2 + sd**2)
    c_out = sigma * sd / (sigma**2 + sd**2).sqrt()
    c_in = 1 / (sigma**2 + sd**2).sqrt()
    return c_skip, c_out, c_in


def edm_noise_label(sigma: torch.Tensor) -> torch.Tensor:
    """EDM's network noise input c_noise = ln(sigma) / 4 (Table 1)."""
    return sigma.log() / 4
