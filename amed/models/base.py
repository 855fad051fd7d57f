"""The model adapter contract shared by every model family.

A solver only ever sees ``denoise(x, sigma) -> D(x; sigma)`` (EDM's data prediction, sigma a ``[B]``
tensor). An adapter is a ``torch.nn.Module`` that presents exactly that, plus the two things the
rest of the project needs from a real network:

* ``with_feature(x, sigma) -> (D, h)``: the same evaluation, also returning the AMED predictor's
  input ``h`` of shape ``[B, 8, 8]`` (the channel mean of the network's 8x8 bottleneck, captured by
  a forward hook the adapter owns; paper Fig. 6, authors' ``get_amed_prediction``).
* ``condition(seeds)``: per-seed conditioning (class labels, prompts) bound into the adapter, so
  sample i depends only on seed i.

Anything with a ``__call__(x, sigma)`` is a valid denoiser for ``amed.sample``; these extras are
optional and looked up with ``getattr``.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..errors import AmedValueError

__all__ = ["ModelInfo", "Denoiser", "HookedDenoiser", "channel_mean_feature", "last_8x8_block", "to_uint8"]


@dataclass(frozen=True)
class ModelInfo:
    """What a model is, for listings, predictor records and the workflow."""

    name: str
    shape: tuple[int, int, int]  # (C, H, W) of the sampled tensor (latent shape for latent models)
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    source: str = ""  # URL or "embedded"
    license: str = ""
    sha256: str | None = None
    extra: dict = field(default_factory=dict)


def channel_mean_feature(h: torch.Tensor) -> torch.Tensor:
    """Channel mean of a bottleneck activation [B, C, 8, 8] -> [B, 8, 8] (paper Fig. 6)."""
    if h.ndim != 4:
        raise AmedValueError(f"bottleneck feature must be [B, C, H, W], got shape {tuple(h.shape)}")
    return h.detach().float().mean(dim=1)


def last_8x8_block(enc: torch.nn.ModuleDict, name: str) -> torch.nn.Module:
    """The last 8x8 encoder block of an EDM-style U-Net (``enc['8x8_block<i>']``): the AMED feature's source."""
    names = [n for n in enc.keys() if n.startswith("8x8_block")]
    if not names:
        raise AmedValueError(f"{name}: the network has no 8x8 encoder block")
    return enc[names[-1]]


class Denoiser(torch.nn.Module):
    """Base class of the adapters: ``forward(x, sigma)`` returns D(x; sigma).

    Subclasses implement ``denoise(x, sigma)`` (the network call, with any preconditioning and
    conditioning applied) and name the module whose output is the AMED bottleneck in
    ``feature_module()``. ``with_feature`` then registers a hook for exactly one call.
    """

    info: ModelInfo

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """D(x; sigma) with sigma a [B] tensor; every adapter defines it."""
        raise TypeError(f"{type(self).__name__} does not define denoise(x, sigma)")

    def feature_module(self) -> torch.nn.Module | None:
        """The module whose forward output is the [B, C, 8, 8] bottleneck, or None."""
        return None

    def select_feature(self, h: torch.Tensor, batch: int) -> torch.Tensor:
        """Pick the per-sample rows of a hooked activation (CFG adapters keep the conditional half)."""
        return h[-batch:]

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        sigma = _as_batch_sigma(sigma, x)
        return self.denoise(x, sigma)

    def with_feature(self, x: torch.Tensor, sigma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sigma = _as_batch_sigma(sigma, x)
        module = self.feature_module()
        if module is None:
            return self.denoise(x, sigma), torch.zeros(x.shape[0], 8, 8, device=x.device)
        captured: list[torch.Tensor] = []
        handle = module.register_forward_hook(lambda _m, _i, out: captured.append(out))
        try:
            out = self.denoise(x, sigma)
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError(f"{type(self).__name__}: the feature hook did not fire")
        h = channel_mean_feature(self.select_feature(captured[-1], x.shape[0]))
        return out, h

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Sampled tensors to images in [-1, 1] (identity for pixel models; latent adapters decode)."""
        return x

    @torch.no_grad()
    def images(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 [B, H, W, C] images, quantised as EDM does: clip(x * 127.5 + 128, 0, 255)."""
        return to_uint8(self.decode(x))

    def condition(self, seeds: list[int]) -> contextlib.AbstractContextManager:
        """Bind per-seed conditioning for the next calls (default: unconditional, nothing to bind)."""
        return contextlib.nullcontext()


class HookedDenoiser(Denoiser):
    """Bring your own network: ``denoise(x, sigma) -> D`` plus the module whose output is its 8x8 bottleneck.

    ``feature`` is that module, or its dotted name inside ``denoise`` (a ``torch.nn.Module``), e.g.
    ``"enc.8x8_block3"``; ``with_feature`` hooks it for one call and returns its channel mean [B, 8, 8],
    what an AMED predictor reads. ``info`` (a ModelInfo) lets the sampler check the noise shape.
    """

    def __init__(self, denoise: Callable, feature: torch.nn.Module | str, info: ModelInfo | None = None):
        super().__init__()
        if isinstance(feature, str):
            if not isinstance(denoise, torch.nn.Module):
                raise AmedValueError(f"a feature module named {feature!r} needs denoise to be a torch.nn.Module, "
                                     f"got {type(denoise).__name__}; pass the module itself")
            try:
                feature = denoise.get_submodule(feature)
            except AttributeError:
                names = [n for n, _ in denoise.named_modules() if n][:8]
                raise AmedValueError(f"{type(denoise).__name__} has no module {feature!r} (it has e.g. {names})") from None
        if not isinstance(feature, torch.nn.Module):
            raise AmedValueError(f"feature must be a torch.nn.Module or its name, got {type(feature).__name__}")
        self.net = denoise if isinstance(denoise, torch.nn.Module) else None  # moves with .to(), .eval()
        self._fn = None if self.net is not None else denoise
        self._feature = (feature,)  # not registered: it is (usually) part of net already
        if info is not None:
            self.info = info

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return (self.net if self.net is not None else self._fn)(x, sigma)

    def feature_module(self) -> torch.nn.Module:
        return self._feature[0]


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """[-1, 1] NCHW floats -> uint8 NHWC (EDM's generate.py convention)."""
    return (x.float() * 127.5 + 128).clip(0, 255).to(torch.uint8).permute(0, 2, 3, 1).cpu()


def _as_batch_sigma(sigma, x: torch.Tensor) -> torch.Tensor:
    sigma = torch.as_tensor(sigma, device=x.device)
    if sigma.ndim == 0:
        sigma = sigma.expand(x.shape[0])
    if sigma.ndim != 1 or sigma.shape[0] != x.shape[0]:
        raise AmedValueError(f"sigma must be a [batch] tensor matching x {tuple(x.shape)}, got shape {tuple(sigma.shape)}")
    return sigma
