"""The AMED predictor g_phi (paper Sec. 3.4, Fig. 6) and its files.

Architecture as the authors built it (``training/networks.py::AMED_predictor``; every released
predictor has this exact shape): the channel-mean of the network's 8x8 bottleneck (64 values)
goes through Linear(64->128), SiLU, Linear(128->4); the raw times t_cur and t_next each go
through a shared sinusoidal embedding (8 channels, endpoint=True, sin/cos swapped) and a shared
Linear(8->8)+SiLU; the 4 + 16 features feed one Linear(20->1) head per output:
r = sigmoid(.) in (0, 1), c = 1 +- scale_dir, a = 1 +- scale_time. 8,929 parameters with the r head
only, 8,950 / 8,971 with one / both extra heads. Optionally (``AMEDConfig.interval_bias``, not the
authors'), the r logit also gets one bias per interval of the student grid: N - 1 more parameters.

A predictor is saved as safetensors weights plus a JSON record of everything it was trained for;
nothing is pickled. Format 2 binds the two: the weights' safetensors metadata carries the record's
settings too, the JSON record carries the weights' sha256, so editing either file is refused (naming
the field that disagrees). Format 1 files (weights hash only) still load, with a warning: re-save them
(``amed.load_predictor(p).save(p)``) to bind them.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
from torch import nn

from ._io import atomic_write_bytes, load_safetensors, read_regular_text, read_safetensors, sha256_file
from .errors import AmedFileNotFoundError, AmedValueError
from .schedules import explicit_grid, get_schedule
from .solvers import reachable_nfe

__all__ = ["AMEDConfig", "AMEDPredictor", "ConstantPredictor", "load_predictor", "sha256_file", "atomic_write_bytes"]

FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
MAX_RECORD_BYTES = 16 << 20  # a record is a few kB
MAX_WEIGHTS_BYTES = 64 << 20  # g_phi is 9k parameters (36 kB)
# Training objectives: the authors' one update per interval on a detached student (Algorithm 1), or the
# same per-interval losses summed over the whole student trajectory, one update per batch, no detach.
OBJECTIVES = ("per_interval", "end_to_end")
# How training starts r (AMEDConfig.recipe): the authors' random start, or a per-interval search first.
RECIPES = ("authors", "interval_search")


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
    # Whether g_phi was trained on the network's bottleneck feature (False: the denoiser had none and h was
    # zeros). Recorded by amed.training.train_predictor; None: not recorded.
    features: bool | None = None
    # The training recipe (amed.training.train_predictor):
    objective: str = "per_interval"  # "per_interval" (authors' Algorithm 1) or "end_to_end"
    # How r starts: "authors" (the random initialisation, r ~ 0.5 on every interval) or "interval_search"
    # (needs interval_bias: before training, each interval's r bias is set to the best of a grid of values
    # by that interval's loss, so that each interval starts in its own basin; the per-interval L2 can have a
    # false minimum at r -> 0 which a shared start at r ~ 0.5 falls into, NOTES.md 2026-12-01).
    recipe: str = "authors"
    # Architecture: g_phi's r logit gets one learned bias per interval index (N - 1 scalars on top of the
    # authors' 8,929 + heads parameters; zero is the authors' predictor). Files without it load as False.
    interval_bias: bool = False
    # Filled in by training:
    seed: int = 0  # data seed: which noise seeds the teacher trajectories start from (shared by a cache)
    train_seed: int | None = None  # initialisation and batch order (None: = seed, as before this field existed)
    num_trajectories: int = 0
    holdout: int = 0  # held-out teacher trajectories for validation (after the training ones)
    batch: int = 0
    lr: float = 5e-3
    steps: int | None = None  # training batches processed
    updates: int | None = None  # Adam updates made
    epochs: float | None = None  # steps x batch / num_trajectories
    selected: str | None = None  # which candidate was kept: "step K", "init", "neutral" or "last"
    validation: list | None = None  # held-out rollout L2 per validation: {step, updates, endpoint_l2, point_l2}
    train_seconds: float | None = None
    search: dict | None = None  # recipe interval_search: {"bias": chosen r biases, "trajectories", "loss": per interval}
    final_loss: float | None = None
    loss_per_step: list | None = None

    def __post_init__(self):
        for name in ("scale_dir", "scale_time"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or not 0.0 <= v < 1.0:
                raise AmedValueError(f"{name} must lie in [0, 1), got {v!r}")
        if not isinstance(self.nfe, int) or self.nfe < 1:
            raise AmedValueError(f"NFE must be a positive integer, got {self.nfe!r}")
        if not isinstance(self.M, int) or self.M < 0:
            raise AmedValueError(f"M (teacher points per interval) must be a non-negative integer, got {self.M!r}")
        if self.objective not in OBJECTIVES:
            raise AmedValueError(f"objective must be one of {list(OBJECTIVES)}, got {self.objective!r}")
        if self.recipe not in RECIPES:
            raise AmedValueError(f"recipe must be one of {list(RECIPES)}, got {self.recipe!r}")
        if not isinstance(self.interval_bias, bool):
            raise AmedValueError(f"interval_bias must be true or false, got {self.interval_bias!r}")
        if self.recipe == "interval_search" and not self.interval_bias:
            raise AmedValueError("recipe 'interval_search' sets per-interval r biases: it needs interval_bias=True")
        if self.schedule == "explicit" or self.grid is not None:
            if self.schedule != "explicit":
                raise AmedValueError(f"a grid goes with schedule='explicit', got schedule={self.schedule!r}")
            if self.grid is None:
                raise AmedValueError("schedule='explicit' needs the grid (a list of times)")
            self.grid = [float(t) for t in explicit_grid(self.grid, what="the AMED student grid").tolist()]
            if len(self.grid) != self.num_points:
                raise AmedValueError(f"NFE={self.nfe} with afs={self.afs} needs {self.num_points} student times, "
                                 f"the grid has {len(self.grid)}: {self.grid}")
            self.rho, self.sigma_max, self.sigma_min = None, self.grid[0], self.grid[-1]  # the grid decides

    @property
    def plugin(self) -> bool:
        return self.solver != "amed"

    @property
    def num_points(self) -> int:
        """Student grid points N: NFE = 2 (N - 1) - [AFS]."""
        if not reachable_nfe(2, self.afs, self.nfe):
            raise AmedValueError(f"AMED spends 2 NFE per interval: NFE={self.nfe} is unreachable with afs={self.afs}; "
                             f"use afs={not self.afs} or NFE={self.nfe - 1}/{self.nfe + 1}")
        return (self.nfe + int(self.afs)) // 2 + 1

    def to_json(self) -> dict:
        d = asdict(self)
        d["shape"] = list(self.shape) if self.shape is not None else None
        return d

    @classmethod
    def from_json(cls, d: dict) -> "AMEDConfig":
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise AmedValueError(f"predictor record has unknown keys {unknown}")
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

    source: dict | None = None  # where imported weights came from (amed.authors); kept in the record
    reads_features = True  # h: the network's bottleneck feature, when config.features

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
        if self.config.interval_bias:  # one r-logit bias per interval, zero: the authors' predictor
            self.r_bias = nn.Parameter(torch.zeros(self.config.num_points - 1))
        half = noise_channels // 2
        # EDM PositionalEmbedding(endpoint=True): f_k = (1/10000)^(k / (half - 1)).
        self.register_buffer("freqs", (1.0 / 10000) ** (torch.arange(half, dtype=torch.float64) / (half - 1)),
                             persistent=False)

    @classmethod
    def neutral(cls, config: AMEDConfig, seed: int = 0) -> "AMEDPredictor":
        """The predictor with r = 0.5, c = 1, a = 1 exactly (zero heads): the base solver on the doubled
        geometric grid (AMED-Solver: DPM-Solver-2). The random initialisation is not neutral."""
        p = cls(config, seed=seed)
        with torch.no_grad():
            for head in (p.fc_r, p.fc_scale_dir, p.fc_scale_time):
                if head is not None:
                    head.weight.zero_()
                    head.bias.zero_()
        return p

    def interval_index(self, t_cur: torch.Tensor) -> int:
        """Which interval of the record's student grid starts at t_cur (for the per-interval r biases)."""
        c = self.config
        if c.schedule == "explicit":
            grid = torch.tensor(c.grid, dtype=torch.float64)[:-1]
        else:
            grid = get_schedule(c.schedule, c.num_points, c.sigma_min, c.sigma_max, c.rho)[:-1]
        flat = t_cur.reshape(-1)
        t = float(flat[0])
        if flat.numel() > 1 and not bool((flat == flat[0]).all()):
            raise AmedValueError(f"predictor with per-interval biases needs one t_cur per batch, got {flat.tolist()!r}")
        i = int((grid.log() - math.log(t)).abs().argmin())
        if abs(float(grid[i]) - t) > 1e-5 * t:
            raise AmedValueError(f"predictor with per-interval biases called at t_cur={t!r}, not a point of its grid "
                                 f"{[round(float(g), 6) for g in grid]}")
        return i

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        """Sinusoidal embedding of the raw time, [sin, cos] order, then the shared Linear+SiLU."""
        ang = t.to(torch.float64)[:, None] * self.freqs[None, :]
        emb = torch.cat([torch.sin(ang), torch.cos(ang)], dim=1).to(self.map_layer0.weight.dtype)
        return torch.nn.functional.silu(self.map_layer0(emb))

    def forward(self, h: torch.Tensor, t_cur: torch.Tensor, t_next: torch.Tensor):
        """(r, c, a) per sample, float64 [B]; t_cur and t_next: [B] or scalar."""
        B = h.shape[0]
        h = h.reshape(B, -1).to(self.enc_layer0.weight.dtype)
        z = self.enc_layer1(torch.nn.functional.silu(self.enc_layer0(h)))
        z = torch.cat([z, self.embed(t_cur.expand(B)), self.embed(t_next.expand(B))], dim=1)
        logit = self.fc_r(z).squeeze(1)
        if self.config.interval_bias:
            logit = logit + self.r_bias[self.interval_index(t_cur)]
        # r in (0, 1) strictly: a float32 sigmoid saturates to 0 or 1, which would put s on a grid point.
        r = torch.sigmoid(logit).double().clamp(1e-6, 1 - 1e-6)
        ones = torch.ones_like(r)
        sd, st = self.config.scale_dir, self.config.scale_time
        # The ranges in float64, so that a zero logit gives c = a = 1 exactly (the neutral predictor).
        c = 1 - sd + 2 * sd * torch.sigmoid(self.fc_scale_dir(z)).squeeze(1).double() if self.fc_scale_dir is not None else ones
        a = 1 - st + 2 * st * torch.sigmoid(self.fc_scale_time(z)).squeeze(1).double() if self.fc_scale_time is not None else ones
        return r, c, a

    # ----------------------------------------------------------------------------------- files
    def save(self, path: str | os.PathLike) -> Path:
        """Write ``<path>.safetensors`` and ``<path>.json`` (atomically); returns the weights path."""
        from safetensors.torch import save as st_save  # noqa: PLC0415

        weights, record = _paths(path)
        config = self.config.to_json()
        # The settings travel inside the weights too (covered by weights_sha256): an edited record is refused.
        blob = st_save({k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()},
                       metadata={"format": "amed-predictor", "version": str(FORMAT_VERSION),
                                 "config": json.dumps(config, sort_keys=True)})
        atomic_write_bytes(weights, blob)
        rec = {"format": "amed-predictor", "version": FORMAT_VERSION, "weights": weights.name,
               "weights_sha256": hashlib.sha256(blob).hexdigest(),
               "num_parameters": sum(p.numel() for p in self.parameters()), "config": config}
        if self.source:
            rec["source"] = self.source
        atomic_write_bytes(record, (json.dumps(rec, indent=2) + "\n").encode())
        return weights


class ConstantPredictor(nn.Module):
    """Fixed (r, c, a) for every sample and step: r = 0.5, c = 1 turns AMED-Solver into DPM-Solver-2."""

    reads_features = False  # h is ignored: any denoiser will do

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


_MISSING = object()


def load_predictor(path: str | os.PathLike, **import_options) -> AMEDPredictor:
    """Load a predictor saved by ``AMEDPredictor.save`` (either file of the pair). ``amed.load_predictor``
    (``amed.loading``) also imports the authors' snapshots (``.pkl`` / ``.pt``); this module sits below that
    importer and does not reach up to it.

    Format 2: the weights' sha256 must match the record and the record's settings those bound into
    the weights; any difference is an error naming the field. Format 1 loads with a warning (the
    record's settings cannot be checked); re-save it to bind it.
    """
    if Path(path).suffix in (".pkl", ".pt"):
        raise AmedValueError(f"{Path(path).name} is an authors' snapshot: load it with amed.load_predictor "
                             f"(or amed.authors.load_authors_predictor)")
    given = sorted(k for k, v in import_options.items() if v is not None)
    if given:
        raise AmedValueError(f"options {given} apply to imported authors' snapshots (.pkl/.pt), not to "
                             f"{Path(path).name}: its record holds every setting")
    weights, record = _paths(path)
    for p in (weights, record):
        if not p.exists():
            raise AmedFileNotFoundError(f"predictor file {p} is missing (a predictor is a .safetensors + .json pair)")
    text = read_regular_text(record, "predictor record", limit=MAX_RECORD_BYTES)
    try:
        rec = json.loads(text)
    except json.JSONDecodeError as e:
        raise AmedValueError(f"{record}: not a valid predictor record ({e})") from None
    if (not isinstance(rec, dict) or rec.get("format") != "amed-predictor"
            or rec.get("version") not in READABLE_VERSIONS):
        raise AmedValueError(f"{record}: not an amed predictor record of version {' or '.join(map(str, READABLE_VERSIONS))}")
    if not isinstance(rec.get("config"), dict):
        raise AmedValueError(f"{record}: the record has no 'config' object")
    blob, header = read_safetensors(weights, "predictor weights", limit=MAX_WEIGHTS_BYTES)
    if hashlib.sha256(blob).hexdigest() != rec.get("weights_sha256"):
        raise AmedValueError(f"{weights}: sha256 does not match its record {record.name}; the file is corrupt or replaced")
    settings = rec["config"]
    if rec["version"] >= 2:
        settings = _bound_settings(header, weights)
        for key in sorted(set(settings) | set(rec["config"])):
            mine, bound = rec["config"].get(key, _MISSING), settings.get(key, _MISSING)
            if mine != bound:
                raise AmedValueError(f"{record}: {key} is {_show(mine)} in the record but {_show(bound)} in the weights "
                                     f"it was saved with; the record was edited (restore it or retrain)")
    else:
        warnings.warn(f"{record}: predictor format 1 does not bind the record to its weights, so an edited record "
                      f"goes unnoticed; re-save it to bind them: amed.load_predictor(p).save(p)", UserWarning,
                      stacklevel=2)
    try:
        config = AMEDConfig.from_json(settings)
    except TypeError as e:
        raise AmedValueError(f"{record}: bad predictor settings ({e})") from None
    pred = AMEDPredictor(config)
    state = load_safetensors(blob, str(weights))
    missing = set(pred.state_dict()) ^ set(state)
    if missing:
        raise AmedValueError(f"{weights}: weights do not fit the recorded heads (keys {sorted(missing)})")
    count = sum(p.numel() for p in pred.parameters())
    if "num_parameters" in rec and rec["num_parameters"] != count:
        raise AmedValueError(f"{record}: num_parameters is {rec['num_parameters']!r} in the record but the weights "
                             f"hold {count}; the record was edited")
    try:
        pred.load_state_dict(state)
    except RuntimeError as e:  # a tensor of the wrong shape
        raise AmedValueError(f"{weights}: weights do not fit the predictor ({' '.join(str(e).split())})") from None
    if isinstance(rec.get("source"), dict):
        pred.source = rec["source"]
    return pred.eval()


def _show(v) -> str:
    return "absent" if v is _MISSING else repr(v)


def _bound_settings(header: dict, weights: Path) -> dict:
    """The record's settings as saved inside the weights (format 2)."""
    meta = header.get("__metadata__") or {}
    try:
        settings = json.loads(meta["config"])
    except (KeyError, json.JSONDecodeError):
        settings = None
    if meta.get("format") != "amed-predictor" or not isinstance(settings, dict):
        raise AmedValueError(f"{weights}: format 2 weights must carry the predictor's settings in their metadata; "
                             f"these do not (not saved by AMEDPredictor.save?)")
    return settings
