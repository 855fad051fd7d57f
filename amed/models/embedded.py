"""The embedded default model: a small EDM-preconditioned U-Net that ships inside the package.

It lets every workflow run offline on a laptop CPU. The default is trained by
``amed.models.train_embedded`` on sklearn's 8x8 handwritten digits (1797 images, scaled to [-1, 1]).
Weights are EMA safetensors under ``amed/assets/`` with a JSON record. The record holds the training
invocation and the sha256 of the weights, and ``load_embedded`` checks that sha256 before loading.

Preconditioning follows EDM (Karras et al. 2022, Table 1; ``amed.models.precond``), c_noise = ln(sigma)/4,
with sigma_data the data std. The AMED feature is the output of the last encoder block at 8x8
(``enc["8x8_block1"]``). This is the same place the authors hook on EDM's CIFAR-10 net
(``enc['8x8_block3']``, the last 8x8 encoder block), and for 8x8 inputs it is the deepest full-resolution
encoder activation.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from .._io import ASSETS, load_safetensors, read_json_object, read_safetensors, sha256_file
from .base import Denoiser, ModelInfo, last_8x8_block
from .precond import edm_noise_label, karras_scalings
from ..errors import AmedFileNotFoundError, AmedValueError

__all__ = [
    "EmbeddedSpec",
    "EMBEDDED_MODELS",
    "SPECS",
    "DEFAULT",
    "TinyUNet",
    "EDMPrecond",
    "EmbeddedDenoiser",
    "load_embedded",
    "asset_dir",
    "sha256_file",
]


def asset_dir() -> Path:
    """Directory of the shipped weights and their JSON records."""
    return ASSETS


@dataclass(frozen=True)
class EmbeddedSpec:
    """One shipped model: the data set, the network config and the asset names."""

    name: str
    dataset: str
    shape: tuple[int, int, int]
    sigma_data: float
    config: dict = field(default_factory=dict)
    license: str = ""
    description: str = ""

    @property
    def weights_file(self) -> str:
        return f"{self.name}.safetensors"

    @property
    def record_file(self) -> str:
        return f"{self.name}.json"

    @property
    def size(self) -> str:
        """Size of the shipped weights, for model listings."""
        p = ASSETS / self.weights_file
        return f"{p.stat().st_size / 2**20:.1f} MB" if p.is_file() else "not installed"


_NET = dict(model_channels=64, channel_mult=(1, 1), num_blocks=2, emb_channels=128, dropout=0.1)

SPECS: dict[str, EmbeddedSpec] = {  # every recipe train_embedded knows
    "digits-8": EmbeddedSpec(
        name="digits-8",
        dataset="digits",
        shape=(1, 8, 8),
        sigma_data=0.752,  # std of load_digits().images / 8 - 1 (0.7521)
        config=_NET,
        license="MIT (weights, this project); data: UCI Optical Recognition of Handwritten Digits, CC BY 4.0",
        description="sklearn load_digits, 1797 x 1x8x8 in [-1, 1], no augmentation",
    ),
    "patches-8": EmbeddedSpec(
        name="patches-8",
        dataset="patches",
        shape=(3, 8, 8),
        sigma_data=0.5,  # set from the training data by train_embedded; recorded in the JSON
        config=_NET,
        license="MIT (weights, this project); data: sklearn sample images china.jpg/flower.jpg, CC BY 2.0",
        description="random 3x8x8 crops of sklearn load_sample_images, horizontal flips",
    ),
}
DEFAULT = "digits-8"
MEAN_KEY = "data_mean_image"  # the per-pixel data mean stored beside the weights (the model space is centred)
# The models whose weights ship in amed/assets. patches-8 is a recipe only (trained once, 743 s; it did not
# separate iPNDM from DDIM better than digits-8 did, so its 2.8 MB are not shipped).
EMBEDDED_MODELS: dict[str, EmbeddedSpec] = {k: SPECS[k] for k in ("digits-8",)}


# ----------------------------------------------------------------------------------------------
# Network


class FourierEmbedding(nn.Module):
    """Random Fourier features of c_noise (EDM's FourierEmbedding, scale 16); frequencies are a buffer."""

    def __init__(self, num_channels: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("freqs", torch.randn(num_channels // 2, generator=g) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().outer(2 * math.pi * self.freqs)
        return torch.cat([x.cos(), x.sin()], dim=1)


def _groups(c: int) -> int:
    g = min(32, c // 4)
    while c % g:
        g -= 1
    return g


class ResBlock(nn.Module):
    """GroupNorm/SiLU residual block with an adaptive scale/shift from the noise embedding."""

    def __init__(self, cin: int, cout: int, emb: int, dropout: float):
        super().__init__()
        self.norm0 = nn.GroupNorm(_groups(cin), cin)
        self.conv0 = nn.Conv2d(cin, cout, 3, padding=1)
        self.affine = nn.Linear(emb, 2 * cout)
        self.norm1 = nn.GroupNorm(_groups(cout), cout)
        self.drop = nn.Dropout(dropout)
        self.conv1 = nn.Conv2d(cout, cout, 3, padding=1)
        nn.init.zeros_(self.conv1.weight)
        nn.init.zeros_(self.conv1.bias)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        h = self.conv0(nn.functional.silu(self.norm0(x)))
        scale, shift = self.affine(emb)[:, :, None, None].chunk(2, dim=1)
        h = nn.functional.silu(torch.addcmul(shift, self.norm1(h), scale + 1))
        h = self.conv1(self.drop(h))
        return (h + self.skip(x)) * (1 / math.sqrt(2))


class TinyUNet(nn.Module):
    """A small DDPM++-like U-Net F(c_in x, c_noise) for 8x8 images (blocks named as in EDM: ``8x8_block0``)."""

    def __init__(self, in_channels: int, resolution: int = 8, model_channels: int = 64,
                 channel_mult=(1, 2), num_blocks: int = 2, emb_channels: int = 256, dropout: float = 0.1):
        super().__init__()
        self.map_noise = FourierEmbedding(model_channels)
        self.map0 = nn.Linear(model_channels, emb_channels)
        self.map1 = nn.Linear(emb_channels, emb_channels)
        self.conv_in = nn.Conv2d(in_channels, model_channels, 3, padding=1)
        self.enc = nn.ModuleDict()
        self.dec = nn.ModuleDict()
        skips = [model_channels]
        c = model_channels
        res = resolution
        for level, mult in enumerate(channel_mult):
            if level > 0:
                res //= 2
                self.enc[f"{res}x{res}_down"] = nn.AvgPool2d(2)
                skips.append(c)
            for i in range(num_blocks):
                self.enc[f"{res}x{res}_block{i}"] = ResBlock(c, model_channels * mult, emb_channels, dropout)
                c = model_channels * mult
                skips.append(c)
        self.dec[f"{res}x{res}_in0"] = ResBlock(c, c, emb_channels, dropout)
        self.dec[f"{res}x{res}_in1"] = ResBlock(c, c, emb_channels, dropout)
        for level, mult in reversed(list(enumerate(channel_mult))):
            if level < len(channel_mult) - 1:
                self.dec[f"{res * 2}x{res * 2}_up"] = nn.Upsample(scale_factor=2, mode="nearest")
                res *= 2
            for i in range(num_blocks + 1):
                cs = skips.pop()
                self.dec[f"{res}x{res}_block{i}"] = ResBlock(c + cs, model_channels * mult, emb_channels, dropout)
                c = model_channels * mult
        self.norm_out = nn.GroupNorm(_groups(c), c)
        self.conv_out = nn.Conv2d(c, in_channels, 3, padding=1)
        nn.init.zeros_(self.conv_out.weight)
        nn.init.zeros_(self.conv_out.bias)

    def forward(self, x: torch.Tensor, c_noise: torch.Tensor) -> torch.Tensor:
        emb = self.map_noise(c_noise)
        emb = nn.functional.silu(self.map1(nn.functional.silu(self.map0(emb))))
        h = self.conv_in(x)
        skips = [h]
        for name, block in self.enc.items():
            h = block(h) if name.endswith("_down") else block(h, emb)
            skips.append(h)
        for name, block in self.dec.items():
            if name.endswith("_up"):
                h = block(h)
            elif "_in" in name:
                h = block(h, emb)
            else:
                h = block(torch.cat([h, skips.pop()], dim=1), emb)
        return self.conv_out(nn.functional.silu(self.norm_out(h)))


class EDMPrecond(nn.Module):
    """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise) (EDM, Table 1)."""

    def __init__(self, shape: tuple[int, int, int], sigma_data: float, **config):
        super().__init__()
        self.sigma_data = float(sigma_data)
        self.model = TinyUNet(shape[0], resolution=shape[1], **config)

    def forward(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        dtype = x.dtype
        x = x.float()
        sigma = sigma.float().reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in = karras_scalings(sigma, self.sigma_data)
        c_noise = edm_noise_label(sigma.flatten())
        F_x = self.model(c_in * x, c_noise)
        return (c_skip * x + c_out * F_x).to(dtype)


def build_network(spec: EmbeddedSpec, sigma_data: float | None = None) -> EDMPrecond:
    """The untrained network of a spec (training uses this, so train and load cannot drift apart)."""
    return EDMPrecond(spec.shape, spec.sigma_data if sigma_data is None else sigma_data, **spec.config)


# ----------------------------------------------------------------------------------------------
# Adapter


class EmbeddedDenoiser(Denoiser):
    """Adapter for the embedded U-Net; the AMED feature is ``enc['8x8_block1']`` (last 8x8 encoder block)."""

    def __init__(self, net: EDMPrecond, info: ModelInfo, mean_image: torch.Tensor | None = None):
        super().__init__()
        self.net = net.eval().requires_grad_(False)
        self.info = info
        shape = info.shape
        self.register_buffer("mean_image", torch.zeros(shape) if mean_image is None else mean_image.float().reshape(shape))

    def decode(self, x: torch.Tensor) -> torch.Tensor:
        """Model space -> images in [-1, 1]: add back the data's mean image."""
        return x + self.mean_image.to(x)

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        return self.net(x, sigma)

    def feature_module(self) -> nn.Module:
        return last_8x8_block(self.net.model.enc, self.info.name)


def load_embedded(name: str = DEFAULT, directory: str | Path | None = None) -> EmbeddedDenoiser:
    """Load a shipped model from package assets, verifying the weights' sha256 against its JSON record."""
    if name not in EMBEDDED_MODELS:
        raise AmedValueError(f"unknown embedded model {name!r}; known: {sorted(EMBEDDED_MODELS)}")
    spec = EMBEDDED_MODELS[name]
    directory = Path(directory) if directory is not None else ASSETS
    wpath, rpath = directory / spec.weights_file, directory / spec.record_file
    if not wpath.is_file() or not rpath.is_file():
        raise AmedFileNotFoundError(f"embedded model {name!r} is not installed: expected {wpath} and {rpath}")
    record = read_json_object(rpath, f"record of embedded model {name!r}")
    expected = record.get("sha256")
    if not isinstance(expected, str):
        raise AmedValueError(f"bad record for embedded model {name!r} at {rpath}: no 'sha256' string")
    blob, _ = read_safetensors(wpath, f"weights of embedded model {name!r}")
    actual = hashlib.sha256(blob).hexdigest()
    if actual != expected:
        raise AmedValueError(f"sha256 mismatch for {wpath}: record says {expected}, file has {actual} (corrupted asset?)")
    state = load_safetensors(blob, str(wpath))
    mean_image = state.pop(MEAN_KEY, None)
    net = build_network(spec, sigma_data=record.get("sigma_data", spec.sigma_data))
    net.load_state_dict({k: v.float() for k, v in state.items()})
    info = ModelInfo(name=name, shape=spec.shape, sigma_min=0.002, sigma_max=80.0, source="embedded",
                     license=spec.license, sha256=actual,
                     extra={"dataset": spec.dataset, "sigma_data": net.sigma_data,
                            "data_mean": record.get("data_mean"), "params": record.get("params")})
    return EmbeddedDenoiser(net, info, mean_image)
