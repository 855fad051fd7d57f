"""EDM's preconditioning adapter (EDMPrecond) around the clean-room networks, and its class labels.

``EDMDenoiser`` wraps a SongUNet/DhariwalUNet of ``amed.models.edm_networks`` built from a snapshot's
``_init_kwargs`` (Karras et al. 2022, "Elucidating the Design Space...", Table 1 preconditioning; AMED
paper Sec. 4 uses these checkpoints); ``edm_class_labels`` draws the per-seed labels of conditional
models. Snapshots are read by ``amed.models.safe_pickle``; nothing here ships or converts EDM weights.
The network classes are re-exported here, their old home.
"""

from __future__ import annotations

import contextlib

import torch

from .base import Denoiser, ModelInfo, last_8x8_block
from .edm_networks import (NETWORKS, Conv2d, DhariwalUNet, FourierEmbedding, GroupNorm, Linear,
                           PositionalEmbedding, SongUNet, UNetBlock)
from .precond import edm_noise_label, karras_scalings
from ..errors import AmedValueError

__all__ = [
    "Linear",
    "Conv2d",
    "GroupNorm",
    "PositionalEmbedding",
    "FourierEmbedding",
    "UNetBlock",
    "SongUNet",
    "DhariwalUNet",
    "EDMDenoiser",
    "NETWORKS",
    "edm_class_labels",
]


# EDMPrecond's own constructor arguments; everything else in ``_init_kwargs`` goes to the network.
_PRECOND_KEYS = ("img_resolution", "img_channels", "label_dim", "use_fp16", "sigma_min", "sigma_max",
                 "sigma_data", "model_type")


# ----------------------------------------------------------------------------------------------
# Conditioning and the adapter.


def edm_class_labels(seeds, shape, label_dim: int = 1000) -> torch.Tensor:
    """One-hot labels per seed, drawn after that seed's noise (EDM generate.py convention, CPU generator)."""
    rows = []
    for seed in seeds:
        gen = torch.Generator().manual_seed(int(seed))
        torch.randn(list(shape), generator=gen)  # the seed's initial noise comes first
        rows.append(int(torch.randint(label_dim, size=[], generator=gen)))
    return torch.eye(label_dim)[torch.as_tensor(rows, dtype=torch.long)]


class EDMDenoiser(Denoiser):
    """EDMPrecond around a SongUNet/DhariwalUNet: D = c_skip x + c_out F(c_in x; ln(sigma)/4) (EDM Table 1).

    ``config`` is the snapshot's ``_init_kwargs`` (img_resolution, img_channels, label_dim, use_fp16,
    model_type, and the network's own arguments). State-dict keys are ``model.<network key>``, as in the
    snapshot's EDMPrecond.
    """

    def __init__(self, config: dict, *, name: str = "edm", source: str = "", license: str = "",
                 sha256: str | None = None):
        super().__init__()
        config = dict(config)
        model_type = config.get("model_type", "DhariwalUNet")
        if model_type not in NETWORKS:
            raise AmedValueError(f"unsupported EDM model_type {model_type!r}; expected one of {sorted(NETWORKS)}")
        for key in ("img_resolution", "img_channels"):
            if key not in config:
                raise AmedValueError(f"EDM config lacks {key!r}; got keys {sorted(config)}")
        self.config = config
        self.img_resolution = int(config["img_resolution"])
        self.img_channels = int(config["img_channels"])
        self.label_dim = int(config.get("label_dim", 0))
        self.use_fp16 = bool(config.get("use_fp16", False))
        self.sigma_data = float(config.get("sigma_data", 0.5))
        model_kwargs = {k: v for k, v in config.items() if k not in _PRECOND_KEYS}
        try:
            self.model = NETWORKS[model_type](img_resolution=self.img_resolution, in_channels=self.img_channels,
                                              out_channels=self.img_channels, label_dim=self.label_dim,
                                              **model_kwargs)
        except TypeError as exc:
            raise AmedValueError(f"EDM config has an argument {model_type} does not take: {exc}") from exc
        self.info = ModelInfo(name=name, shape=(self.img_channels, self.img_resolution, self.img_resolution),
                              sigma_min=0.002, sigma_max=80.0, source=source, license=license, sha256=sha256,
                              extra={"model_type": model_type, "label_dim": self.label_dim})
        self._labels: torch.Tensor | None = None

    def feature_module(self) -> torch.nn.Module:
        """The last 8x8 encoder block (AMED's hook: 8x8_block3 for DDPM++, 8x8_block2 for ADM)."""
        return last_8x8_block(self.model.enc, self.info.name)

    @contextlib.contextmanager
    def condition(self, seeds, class_labels: torch.Tensor | None = None):
        """Bind per-seed one-hot class labels (conditional models) for the calls inside the block."""
        if not self.label_dim:
            yield self
            return
        if class_labels is None:
            class_labels = edm_class_labels(seeds, self.info.shape, self.label_dim)
        class_labels = torch.as_tensor(class_labels, dtype=torch.float32)
        if class_labels.shape != (len(seeds), self.label_dim):
            raise AmedValueError(f"class_labels must be [{len(seeds)}, {self.label_dim}], got {tuple(class_labels.shape)}")
        previous, self._labels = self._labels, class_labels
        try:
            yield self
        finally:
            self._labels = previous

    def _bound_labels(self, batch: int, device) -> torch.Tensor | None:
        if not self.label_dim:
            return None
        if self._labels is None:
            raise AmedValueError(f"{self.info.name} is class-conditional: wrap calls in `with model.condition(seeds):`")
        if self._labels.shape[0] != batch:
            raise AmedValueError(f"{self._labels.shape[0]} class labels are bound but the batch has {batch} samples")
        return self._labels.to(device)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = sigma.to(device=x.device, dtype=torch.float32).reshape(-1, 1, 1, 1)
        labels = self._bound_labels(x.shape[0], x.device)
        dtype = torch.float16 if (self.use_fp16 and x.device.type == "cuda") else torch.float32
        c_skip, c_out, c_in = karras_scalings(sigma, self.sigma_data)
        c_noise = edm_noise_label(sigma)
        f_x = self.model((c_in * x).to(dtype), c_noise.flatten(), class_labels=labels)
        return c_skip * x + c_out * f_x.to(torch.float32)
