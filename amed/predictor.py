"""The AMED predictor g_phi (paper Sec. 3.4, Fig. 6) and its files.

Architecture as the authors built it (``training/networks.py::AMED_predictor``; every released
predictor has this exact shape): the channel-mean of the network's 8x8 bottleneck (64 values)
goes through Linear(64->128), SiLU, Linear(128->4); the raw times t_cur and t_next each go
through a shared sinusoidal embedding (8 channels, endpoint=True, sin/cos swapped) and a shared
Linear(8->8)+SiLU; the 4 + 16 features feed one Linear(20->1) head per output:
r = sigmoid(.) in (0, 1), c = 1 +- scale_dir, a = 1 +- scale_time. 8,929 parameters with the r head
only, 8,950 / 8,971 with one / both extra heads.

A predictor is saved as safetensors weights plus a JSON record of everything it was trained for;
nothing is pickled.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_write_bytes, sha256_file
from .schedules import explicit_grid

__all__ = ["AMEDConfig", "AMEDPredictor", "ConstantPredictor", "load_predictor", "sha256_file", "atomic_write_bytes"]

FORMAT_VERSION = 1


@dataclass
class AMEDConfig:
    """Everything a predictor is trained for; sampling with other settings is an error."""

    solver: str = "amed"  # "amed" (AMED-Solver) or the base solver of AMED-Plugin
    nfe: int = 5
    schedule: str = "time_uniform"
    rho: float | None = 1.0
    grid: list | None = None  # the student times when schedule == "explicit" (e.g. a GITS grid)
    afs: bool = True
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    scale_dir: float = 0.01  # c in (1 - scale_dir, 1 + scale_dir); 0 disables the head
    scale_time: float = 0.0  # a in (1 - scale_time, 1 + scale_time); 0 disables the head
    solver_options: dict = field(default_factory=dict)
    teacher: str = "heun"
    teacher_options: dict = field(default_factory=dict)
    M: int = 1
    model: str = ""  # model name
    model_sha256: str | None = None
    guidance: float | None = None  # classifier-free guidance scale of a text-to-image model (None: no CFG)
    shape: tuple | None = None
    # Filled in by training:
    seed: int = 0
    num_trajectories: int = 0
    batch: int = 0
    lr: float = 5e-3
    train_seconds: float | None = None
    final_loss: float | None = None
    loss_per_step: list | None = None

    def __post_init__(self):
        for name in ("scale_dir", "scale_time"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise ValueError(f"{name} must lie in [0, 1), got {v!r}")
        if not isinstance(self.nfe, int) or self.nfe < 1:
            raise ValueError(f"NFE must be a positive integer, got {self.nfe!r}")
        if not isinstance(self.M, int) or self.M < 0:
            raise ValueError(f"M (teacher points per interval) must be a non-negative integer, got {self.M!r}")
        if self.schedule == "explicit" or self.grid is not None:
            if self.schedule != "explicit":
                raise ValueError(f"a grid goes with schedule='explicit', got schedule={self.schedule!r}")
            if self.grid is None:
                raise ValueError("schedule='explicit' needs the grid (a list of times)")
            self.grid = [float(t) for t in explicit_grid(self.grid, what="the AMED student grid").tolist()]
            if len(self.grid) != self.num_points:
                raise ValueError(f"NFE={self.nfe} with afs={self.afs} needs {self.num_points} student times, "
                                 f"the grid has {len(self.grid)}: {self.grid}")
            self.rho, self.sigma_max, self.sigma_min = None, self.grid[0], self.grid[-1]  # the grid decides

    @property
    def plugin(self) -> bool:
        return self.solver != "amed"

    @property
    def num_points(self) -> int:
        """Student grid points N: NFE = 2 (N - 1) - [AFS]."""
        total = self.nfe + int(self.afs)
        if total % 2 or total < 2:
            raise ValueError(f"AMED spends 2 NFE per interval: NFE={self.nfe} is unreachable with afs={self.afs}; "
                             f"use afs={not self.afs} or NFE={self.nfe - 1}/{self.nfe + 1}")
        return total // 2 + 1

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "AMEDConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"predictor record has unknown keys {unknown}")
        d = dict(d)
        if d.get("shape") is not None:
            d["shape"] = tuple(d["shape"])
        return cls(**d)


def _kaiming_normal(out_f: int, in_f: int, g: torch.Generator) -> torch.Tensor:
    """EDM's 'kaiming_normal' init: std = sqrt(1 / fan_in)."""
    return torch.randn(out_f, in_f, generator=g) * math.sqrt(1.0 / in_f)


def _xavier_uniform(out_f: int, in_f: int, g: torch.Generator) -> torch.Tensor:
    return (torch.rand(out_f, in_f, generator=g) * 2 - 1) * math.sqrt(6.0 / (in_f + out_f))


def _linear(in_f: int, out_f: int, g: torch.Generator, init=_kaiming_normal) -> nn.Linear:
    layer = nn.Linear(in_f, out_f)
    with torch.no_grad():
        layer.weight.copy_(init(out_f, in_f, g))
        layer.bias.zero_()
    return layer


class AMEDPredictor(nn.Module):
    """g_phi(h, t_cur, t_next) -> (r, c, a), each [B] (paper Eq. 11)."""

    def __init__(self, config: AMEDConfig | None = None, seed: int = 0, hidden_dim: int = 128,
                 bottleneck_input_dim: int = 64, bottleneck_output_dim: int = 4, noise_channels: int = 8):
        super().__init__()
        self.config = config or AMEDConfig()
        g = torch.Generator().manual_seed(int(seed))
        self.noise_channels = noise_channels
        self.map_layer0 = _linear(noise_channels, noise_channels, g, init=_xavier_uniform)
        self.enc_layer0 = _linear(bottleneck_input_dim, hidden_dim, g)
        self.enc_layer1 = _linear(hidden_dim, bottleneck_output_dim, g)
        feat = bottleneck_output_dim + 2 * noise_channels
        self.fc_r = _linear(feat, 1, g)
        self.fc_scale_dir = _linear(feat, 1, g) if self.config.scale_dir > 0 else None
        self.fc_scale_time = _linear(feat, 1, g) if self.config.scale_time > 0 else None
        half = noise_channels // 2
        # EDM PositionalEmbedding(endpoint=True): f_k = (1/10000)^(k / (half - 1)).
        self.register_buffer("freqs", (1.0 / 10000) ** (torch.arange(half, dtype=torch.float64) / (half - 1)),
                             persistent=False)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embedding of the raw time, [sin, cos] order, then the shared Linear+SiLU."""
        ang = t.to(torch.float64)[:, None] * self.freqs[None, :]
        emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1).to(self.map_layer0.weight.dtype)
        return torch.nn.functional.silu(self.map_layer0(emb))

    def forward(self, h: torch.Tensor, t_cur: torch.Tensor, t_next: torch.Tensor):
        B = h.shape[0]
        h = h.reshape(B, -1).to(self.enc_layer0.weight.dtype)
        z = self.enc_layer1(torch.nn.functional.silu(self.enc_layer0(h)))
        z = torch.cat([z, self.embed(t_cur.expand(B)), self.embed(t_next.expand(B))], dim=1)
        # r in (0, 1) strictly: a float32 sigmoid saturates to 0 or 1, which would put s on a grid point.
        r = torch.sigmoid(self.fc_r(z)).squeeze(1).double().clamp(1e-6, 1 - 1e-6)
        ones = torch.ones_like(r)
        sd, st = self.config.scale_dir, self.config.scale_time
        c = 1 - sd + 2 * sd * torch.sigmoid(self.fc_scale_dir(z)).squeeze(1) if self.fc_scale_dir is not None else ones
        a = 1 - st + 2 * st * torch.sigmoid(self.fc_scale_time(z)).squeeze(1) if self.fc_scale_time is not None else ones
        return r.double(), c.double(), a.double()

    # ----------------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.safetensors`` and ``<path>.json`` (atomically); returns the weights path."""
        from safetensors.torch import save as st_save  # noqa: PLC0415

        weights, record = _paths(path)
        blob = st_save({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                       metadata={"format": "amed-predictor", "version": str(FORMAT_VERSION)})
        atomic_write_bytes(weights, blob)
        rec = {"format": "amed-predictor", "version": FORMAT_VERSION, "weights": weights.name,
               "weights_sha256": hashlib.sha256(blob).hexdigest(),
               "num_parameters": sum(p.numel() for p in self.parameters()), "config": self.config.to_json()}
        atomic_write_bytes(record, (json.dumps(rec, indent=2) + "\n").encode())
        return weights


class ConstantPredictor(nn.Module):
    """Fixed (r, c, a) for every sample and step: r = 0.5, c = 1 turns AMED-Solver into DPM-Solver-2."""

    def __init__(self, config: AMEDConfig, r: float = 0.5, c: float = 1.0, a: float = 1.0):
        super().__init__()
        self.config, self.r, self.c, self.a = config, float(r), float(c), float(a)

    def forward(self, h, t_cur, t_next):
        one = torch.ones(h.shape[0], dtype=torch.float64, device=h.device)
        return self.r * one, self.c * one, self.a * one


def _paths(path) -> tuple[Path, Path]:
    p = Path(path)
    if p.suffix in (".safetensors", ".json"):
        p = p.with_suffix("")
    return p.with_name(p.name + ".safetensors"), p.with_name(p.name + ".json")


def load_predictor(path: str | os.PathLike) -> AMEDPredictor:
    """Load a predictor saved by ``AMEDPredictor.save`` (either file of the pair)."""
    from safetensors.torch import load as st_load  # noqa: PLC0415

    weights, record = _paths(path)
    for p in (weights, record):
        if not p.exists():
            raise FileNotFoundError(f"predictor file {p} is missing (a predictor is a .safetensors + .json pair)")
    try:
        rec = json.loads(record.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{record}: not a valid predictor record ({e})") from None
    if not isinstance(rec, dict) or rec.get("format") != "amed-predictor" or rec.get("version") != FORMAT_VERSION:
        raise ValueError(f"{record}: not an amed predictor record of version {FORMAT_VERSION}")
    if not isinstance(rec.get("config"), dict):
        raise ValueError(f"{record}: the record has no 'config' object")
    blob = weights.read_bytes()
    if hashlib.sha256(blob).hexdigest() != rec.get("weights_sha256"):
        raise ValueError(f"{weights}: sha256 does not match its record {record.name}; the file is corrupt or replaced")
    try:
        config = AMEDConfig.from_json(rec["config"])
    except TypeError as e:
        raise ValueError(f"{record}: bad predictor settings ({e})") from None
    pred = AMEDPredictor(config)
    state = st_load(blob)
    missing = set(pred.state_dict()) ^ set(state)
    if missing:
        raise ValueError(f"{weights}: weights do not fit the recorded heads (keys {sorted(missing)})")
    pred.load_state_dict(state)
    return pred.eval()
