"""Consistency-models' EDM teacher for LSUN Bedroom-256 (``edm_bedroom256_ema.pt``), clean-room.

A guided-diffusion-style U-Net written from a description (no code copied from openai/guided-diffusion
or openai/consistency_models): key names follow that family (``time_embed``, ``input_blocks``,
``middle_block``, ``output_blocks``, ``out``), attention uses CM's 2-D 1x1 ``qkv``/``proj_out``
convolutions and splits channels as (q|k|v, head, head_dim). The file is a plain state dict read with
``torch.load(weights_only=True)``. Preconditioning is Karras/EDM's with sigma_data 0.5 and network time
input 250 ln(sigma) (CM's ``get_scalings`` / ``denoise``).
"""

from __future__ import annotations

import math
from pathlib import Path

import torch
from torch.nn import functional as F

from .base import Denoiser, ModelInfo
from .precond import karras_scalings
from .._io import open_regular
from ..errors import AmedValueError

__all__ = ["UNetModel", "CMDenoiser", "BEDROOM_CONFIG", "load_cm_bedroom", "timestep_embedding"]

# openai/consistency_models scripts/launch.sh (EDM teacher, LSUN bedroom 256).
BEDROOM_CONFIG = dict(image_size=256, in_channels=3, model_channels=256, out_channels=3, num_res_blocks=2,
                      attention_resolutions=(8, 16, 32), dropout=0.1, channel_mult=(1, 1, 2, 2, 4, 4),
                      num_head_channels=64, resblock_updown=True, use_scale_shift_norm=False)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding [cos(t f), sin(t f)], f_i = exp(-ln(max_period) i / half)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / half)
    args = t.float()[:, None] * freqs[None]
    emb = torch.cat([args.cos(), args.sin()], dim=-1)
    if dim % 2:
        emb = torch.cat([emb, torch.zeros_like(emb[:, :1])], dim=-1)
    return emb


class GroupNorm32(torch.nn.GroupNorm):
    """32-group norm computed in float32."""

    def __init__(self, channels: int):
        super().__init__(32, channels)

    def forward(self, x):
        return super().forward(x.float()).to(x.dtype)


def _conv(cin, cout, k):
    return torch.nn.Conv2d(cin, cout, k, padding=k // 2)


class _Resample(torch.nn.Module):
    """Parameter-free nearest x2 up or 2x2 average down (inside up/down ResBlocks)."""

    def __init__(self, up: bool):
        super().__init__()
        self.up = up

    def forward(self, x):
        return F.interpolate(x, scale_factor=2, mode="nearest") if self.up else F.avg_pool2d(x, 2)


class Downsample(torch.nn.Module):
    """Strided 3x3 conv (key ``op``) or average pooling."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        out_channels = out_channels or channels
        self.op = torch.nn.Conv2d(channels, out_channels, 3, stride=2, padding=1) if use_conv else torch.nn.AvgPool2d(2)

    def forward(self, x):
        return self.op(x)


class Upsample(torch.nn.Module):
    """Nearest x2 then an optional 3x3 conv (key ``conv``)."""

    def __init__(self, channels: int, use_conv: bool = True, out_channels: int | None = None):
        super().__init__()
        self.conv = _conv(channels, out_channels or channels, 3) if use_conv else None

    def forward(self, x):
        x = F.interpolate(x, scale_factor=2, mode="nearest")
        return self.conv(x) if self.conv is not None else x


class ResBlock(torch.nn.Module):
    """h = out_layers(in_layers(x) + emb_layers(emb)); return skip_connection(x) + h."""

    def __init__(self, channels: int, emb_channels: int, dropout: float, out_channels: int | None = None,
                 use_scale_shift_norm: bool = False, up: bool = False, down: bool = False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = torch.nn.Sequential(GroupNorm32(channels), torch.nn.SiLU(), _conv(channels, out_channels, 3))
        self.updown = up or down
        self.h_upd = _Resample(up) if self.updown else torch.nn.Identity()
        self.x_upd = _Resample(up) if self.updown else torch.nn.Identity()
        self.emb_layers = torch.nn.Sequential(
            torch.nn.SiLU(), torch.nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm else out_channels))
        self.out_layers = torch.nn.Sequential(GroupNorm32(out_channels), torch.nn.SiLU(), torch.nn.Dropout(dropout),
                                              _conv(out_channels, out_channels, 3))
        self.skip_connection = torch.nn.Identity() if out_channels == channels else _conv(channels, out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            h = self.in_layers[:-1](x)
            h = self.in_layers[-1](self.h_upd(h))
            x = self.x_upd(x)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).to(h.dtype)[..., None, None]
        if self.use_scale_shift_norm:
            scale, shift = emb_out.chunk(2, dim=1)
            h = self.out_layers[0](h) * (1 + scale) + shift
            h = self.out_layers[1:](h)
        else:
            h = self.out_layers(h + emb_out)
        return self.skip_connection(x) + h


class AttentionBlock(torch.nn.Module):
    """Self-attention with 1x1 2-D ``qkv``/``proj_out`` convs; channels split as (q|k|v, head, head_dim)."""

    def __init__(self, channels: int, num_heads: int = 1, num_head_channels: int = -1):
        super().__init__()
        if num_head_channels == -1:
            self.num_heads = num_heads
        else:
            if channels % num_head_channels:
                raise AmedValueError(f"channels {channels} not divisible by num_head_channels {num_head_channels}")
            self.num_heads = channels // num_head_channels
        self.norm = GroupNorm32(channels)
        self.qkv = torch.nn.Conv2d(channels, channels * 3, 1)
        self.proj_out = torch.nn.Conv2d(channels, channels, 1)

    def forward(self, x):
        b, c, hh, ww = x.shape
        qkv = self.qkv(self.norm(x)).reshape(b, 3, self.num_heads, c // self.num_heads, hh * ww)
        q, k, v = qkv.unbind(1)  # each [b, heads, d, T]
        d = q.shape[2]
        w = torch.einsum("bhdt,bhds->bhts", q.float(), k.float()) / math.sqrt(d)
        w = w.softmax(dim=-1).to(q.dtype)
        a = torch.einsum("bhts,bhds->bhdt", w, v).reshape(b, c, hh, ww)
        return x + self.proj_out(a)


class TimestepEmbedSequential(torch.nn.Sequential):
    """Sequential that hands the embedding to its ResBlocks."""

    def forward(self, x, emb):
        for layer in self:
            x = layer(x, emb) if isinstance(layer, ResBlock) else layer(x)
        return x


class UNetModel(torch.nn.Module):
    """guided-diffusion-style U-Net (unconditional), CM attention layout."""

    def __init__(self, image_size: int, in_channels: int, model_channels: int, out_channels: int,
                 num_res_blocks: int, attention_resolutions, dropout: float = 0.0, channel_mult=(1, 2, 4, 8),
                 conv_resample: bool = True, num_heads: int = 1, num_head_channels: int = -1,
                 num_heads_upsample: int = -1, use_scale_shift_norm: bool = False, resblock_updown: bool = False):
        super().__init__()
        self.model_channels = model_channels
        if num_heads_upsample == -1:
            num_heads_upsample = num_heads
        attention_resolutions = tuple(attention_resolutions)
        emb_dim = model_channels * 4
        self.time_embed = torch.nn.Sequential(torch.nn.Linear(model_channels, emb_dim), torch.nn.SiLU(),
                                              torch.nn.Linear(emb_dim, emb_dim))
        res = dict(emb_channels=emb_dim, dropout=dropout, use_scale_shift_norm=use_scale_shift_norm)

        ch = input_ch = int(channel_mult[0] * model_channels)
        self.input_blocks = torch.nn.ModuleList([TimestepEmbedSequential(_conv(in_channels, ch, 3))])
        chans, ds = [ch], 1
        for level, mult in enumerate(channel_mult):
            for _ in range(num_res_blocks):
                layers = [ResBlock(ch, out_channels=int(mult * model_channels), **res)]
                ch = int(mult * model_channels)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads, num_head_channels))
                self.input_blocks.append(TimestepEmbedSequential(*layers))
                chans.append(ch)
            if level != len(channel_mult) - 1:
                down = (ResBlock(ch, out_channels=ch, down=True, **res) if resblock_updown
                        else Downsample(ch, conv_resample))
                self.input_blocks.append(TimestepEmbedSequential(down))
                chans.append(ch)
                ds *= 2

        self.middle_block = TimestepEmbedSequential(ResBlock(ch, **res),
                                                    AttentionBlock(ch, num_heads, num_head_channels),
                                                    ResBlock(ch, **res))

        self.output_blocks = torch.nn.ModuleList()
        for level, mult in list(enumerate(channel_mult))[::-1]:
            for i in range(num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), out_channels=int(model_channels * mult), **res)]
                ch = int(model_channels * mult)
                if ds in attention_resolutions:
                    layers.append(AttentionBlock(ch, num_heads_upsample, num_head_channels))
                if level and i == num_res_blocks:
                    layers.append(ResBlock(ch, out_channels=ch, up=True, **res) if resblock_updown
                                  else Upsample(ch, conv_resample))
                    ds //= 2
                self.output_blocks.append(TimestepEmbedSequential(*layers))

        self.out = torch.nn.Sequential(GroupNorm32(ch), torch.nn.SiLU(), _conv(input_ch, out_channels, 3))

    def forward(self, x, timesteps):
        emb = self.time_embed(timestep_embedding(timesteps, self.model_channels))
        hs, h = [], x
        for module in self.input_blocks:
            h = module(h, emb)
            hs.append(h)
        h = self.middle_block(h, emb)
        for module in self.output_blocks:
            h = module(torch.cat([h, hs.pop()], dim=1), emb)
        return self.out(h)


class CMDenoiser(Denoiser):
    """Karras preconditioning around the CM U-Net: D = c_skip x + c_out F(c_in x; 250 ln sigma)."""

    def __init__(self, config: dict | None = None, *, name: str = "lsun_bedroom", sigma_data: float = 0.5,
                 source: str = "", license: str = "", sha256: str | None = None):
        super().__init__()
        self.config = dict(BEDROOM_CONFIG if config is None else config)
        self.model = UNetModel(**self.config)
        self.sigma_data = sigma_data
        size, ch = self.config["image_size"], self.config["out_channels"]
        self.info = ModelInfo(name=name, shape=(ch, size, size), sigma_min=0.002, sigma_max=80.0, source=source,
                              license=license, sha256=sha256)

    def feature_module(self) -> torch.nn.Module:
        return self.model.middle_block

    def denoise(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        x = x.to(torch.float32)
        sigma = sigma.to(device=x.device, dtype=torch.float32)
        s = sigma.reshape(-1, 1, 1, 1)
        c_skip, c_out, c_in = karras_scalings(s, self.sigma_data)
        t = 1000 * 0.25 * torch.log(sigma + 1e-44)
        return c_skip * x + c_out * self.model(c_in * x, t).to(torch.float32)


def load_cm_bedroom(path, *, config: dict | None = None, name: str = "lsun_bedroom", source: str = "",
                    license: str = "", sha256: str | None = None) -> CMDenoiser:
    """Load ``edm_bedroom256_ema.pt`` (a plain state dict) into the clean-room CM U-Net."""
    from .safe_pickle import load_state_dict_checked

    path = Path(path)
    with open_regular(path, "checkpoint") as f:
        try:
            state = torch.load(f, map_location="cpu", weights_only=True)
        except Exception as exc:
            raise AmedValueError(f"{path}: not a torch state-dict file readable with weights_only=True ({exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise AmedValueError(f"{path}: expected a state dict, got {type(state).__name__}")
    for key, value in list(state.items()):
        # guided-diffusion's Conv1d attention weights [O, I, 1] use a different head order: refuse them.
        if key.endswith(("qkv.weight", "proj_out.weight")) and isinstance(value, torch.Tensor) and value.ndim == 3:
            raise AmedValueError(f"{path}: {key!r} has Conv1d shape {tuple(value.shape)}; this is a plain guided-diffusion "
                             "file, not a consistency-models checkpoint (different attention layout)")
    with torch.device("meta"):
        net = CMDenoiser(config, name=name, source=source or str(path), license=license, sha256=sha256)
    load_state_dict_checked(net.model, state, str(path))
    return net.eval().requires_grad_(False)
