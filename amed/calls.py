"""The network-call layer below ``amed.sample``: noise from seeds, the counted model call (AFS, bottleneck
feature capture, output checks), the finiteness watch, devices. Every driver (sampling, AMED sampling and
training, GITS, the analysis) builds on it; it imports no driver, so no import cycle runs through it.
"""

from __future__ import annotations

import contextlib
import itertools
import math
from typing import Callable, Sequence

import torch

from .errors import AmedTypeError, AmedValueError, DeviceUnavailable, Diverged

Tensor = torch.Tensor

# Noise seeds for training live far from the evaluation seeds 0..49,999 (teacher caches, text-to-image captions).
TRAIN_SEED_BASE = 1_000_000_000


def randn_seeds(seeds: Sequence[int], shape: Sequence[int], dtype: torch.dtype = torch.float32,
                device: torch.device | str = "cpu") -> Tensor:
    """Standard normal noise [len(seeds), *shape]; row i depends only on seeds[i] (EDM's convention)."""
    rows = [torch.randn(tuple(shape), generator=torch.Generator().manual_seed(int(s)), dtype=torch.float32)
            for s in seeds]
    return torch.stack(rows).to(dtype=dtype, device=device)


# At most this many seeds in one list: 20x the paper's largest evaluation (50k images for FID) and a list
# of ~40 MB, so a typo such as '0-99999999999' is an error at once instead of a MemoryError minutes later.
MAX_SEEDS = 1_000_000


MAX_SEED = 2**63 - 1  # seeds are stored as int64 next to the images


def parse_seeds(spec: str | int | Sequence[int]) -> list[int]:
    """'0-63' / '0,5,7-9' / 10 / [1, 2] -> a list of seeds (at most MAX_SEEDS, each in 0..2^63-1)."""
    if isinstance(spec, int):
        spec = [spec]
    if not isinstance(spec, str):
        seeds = list(itertools.islice((int(s) for s in spec), MAX_SEEDS + 1))
        if len(seeds) > MAX_SEEDS:
            raise AmedValueError(f"more than {MAX_SEEDS} seeds, the most one run takes; split the run into shards")
        _check_seed_values(seeds, spec)
        return seeds
    ranges: list[tuple[int, int]] = []
    for part in spec.split(","):
        part = part.strip()
        if not part:
            continue
        try:
            if "-" in part[1:]:
                lo, hi = part.split("-", 1) if not part.startswith("-") else (part, "")
                lo_i, hi_i = int(lo), int(hi)
                if hi_i < lo_i:
                    raise ValueError
            else:
                lo_i = hi_i = int(part)
        except ValueError:
            raise AmedValueError(f"bad seed range {part!r} in {spec!r}; use e.g. '0-63' or '0,5,7-9'") from None
        ranges.append((lo_i, hi_i))
    if not ranges:
        raise AmedValueError(f"no seeds in {spec!r}")
    count = sum(hi - lo + 1 for lo, hi in ranges)  # counted before any list is built
    if count > MAX_SEEDS:
        raise AmedValueError(f"seeds {spec!r} name {count} seeds, more than the {MAX_SEEDS} one run takes; "
                             f"split the run into shards")
    _check_seed_values([v for r in ranges for v in r], spec)
    return [s for lo, hi in ranges for s in range(lo, hi + 1)]


def _check_seed_values(values: list[int], spec) -> None:
    if not values:
        raise AmedValueError(f"no seeds in {spec!r}")
    if min(values) < 0:
        raise AmedValueError(f"seeds must be non-negative, got {min(values)}")
    if max(values) > MAX_SEED:
        raise AmedValueError(f"seeds must be below 2^63, got {max(values)}")


def afs_denoise(x: Tensor, sigma: Tensor) -> Tensor:
    """Analytical first step (AFS, Dockhorn et al.): d = x / sqrt(1 + t^2), i.e. D = x - t d, no network call."""
    s = sigma.to(x.dtype).view(-1, *([1] * (x.ndim - 1)))
    return x - s * x / torch.sqrt(1.0 + s * s)


def supplies_features(denoiser) -> bool:
    """Whether ``denoiser.with_feature`` gives a real bottleneck feature (an adapter whose
    ``feature_module()`` is None gives zeros; a plain callable has no ``with_feature``)."""
    if not callable(getattr(denoiser, "with_feature", None)):
        return False
    module = getattr(denoiser, "feature_module", None)
    return module() is not None if callable(module) else True


class ModelCall:
    """The denoiser as the solvers see it: counts NFE, answers the first call analytically under AFS and
    checks every output's shape. ``model(x, sigma)`` is a plain call; ``model.hooked`` is the same call
    that also records the AMED bottleneck feature (read with ``last_feature``) when the denoiser supplies
    one: a driver passes whichever view a call needs, so no flag on a shared object decides it."""

    def __init__(self, denoise: Callable, afs: bool = False, features: bool = False):
        self.denoise = denoise
        self.afs_pending = bool(afs)
        self.features = bool(features) and supplies_features(denoise)
        self.nfe = 0
        self.feature: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.call(x, sigma, capture=False)

    @property
    def hooked(self) -> Callable:
        """The call that records the bottleneck feature (a plain call when features are off)."""
        return self._hooked if self.features else self

    def _hooked(self, x: Tensor, sigma: Tensor) -> Tensor:
        return self.call(x, sigma, capture=True)

    def call(self, x: Tensor, sigma: Tensor, capture: bool) -> Tensor:
        if self.afs_pending:
            self.afs_pending = False
            self.feature = None  # AFS: no network call, the predictor sees zeros
            return afs_denoise(x, sigma)
        self.nfe += 1
        if capture and self.features:
            D, h = self.denoise.with_feature(x, sigma)
            _check_output(D, x, "with_feature")
            if not isinstance(h, torch.Tensor) or tuple(h.shape) != (x.shape[0], 8, 8):
                got = list(h.shape) if isinstance(h, torch.Tensor) else type(h).__name__
                raise AmedValueError(f"with_feature must return the bottleneck feature as [B, 8, 8] = "
                                     f"{[x.shape[0], 8, 8]}, got {got}")
            self.feature = h
            return D
        self.feature = None
        return _check_output(self.denoise(x, sigma), x, "the denoiser")

    def last_feature(self, batch: int, device) -> Tensor:
        """The [B, 8, 8] feature of the last call (zeros after AFS, a plain call, or a plain callable)."""
        if self.feature is None:
            return torch.zeros(batch, 8, 8, device=device)
        return self.feature


def time_scaled(call: Callable, a: Tensor | None) -> Callable:
    """``call`` evaluated at a * sigma (AMED's time scale a_n); ``call`` itself when a is None."""
    if a is None:
        return call
    return lambda x, sigma: call(x, sigma * a.to(sigma))


def _check_output(D, x: Tensor, who: str) -> Tensor:
    """D(x; sigma) must be a tensor of x's shape (a broadcastable one would silently change the samples)."""
    if not isinstance(D, torch.Tensor) or D.shape != x.shape:
        got = list(D.shape) if isinstance(D, torch.Tensor) else type(D).__name__
        raise AmedValueError(f"{who} returned D of shape {got} for x of shape {list(x.shape)}; "
                             f"D(x; sigma) must have x's shape")
    return D


def conditioned(denoiser, seeds):
    """Bind the per-seed conditioning of a conditional adapter (class labels, prompts) for a batch; a no-op
    context for unconditional denoisers."""
    cond = getattr(denoiser, "condition", None)
    return cond(list(seeds)) if cond is not None else contextlib.nullcontext()


def resolve_device(name) -> torch.device:
    """A torch device from a name; "auto" is CUDA when available, else the CPU. A device this machine
    does not have is an error here, not a traceback from the first tensor moved there."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(name)
    except (RuntimeError, TypeError, ValueError) as e:
        raise AmedValueError(f"unknown device {name!r} ({' '.join(str(e).split())}); use cpu, cuda, cuda:N or auto") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            why = "torch was built without CUDA" if torch.version.cuda is None else "no CUDA GPU is visible"
            raise DeviceUnavailable(f"device {name!r} is not available on this machine ({why}); use --device cpu or auto")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise DeviceUnavailable(f"device {name!r} is not available: this machine has "
                                    f"{torch.cuda.device_count()} CUDA device(s)")
    elif dev.type == "mps" and not torch.backends.mps.is_available():
        raise DeviceUnavailable(f"device {name!r} is not available on this machine; use --device cpu or auto")
    return dev


class FiniteWatch:
    """Raises FloatingPointError naming the first step whose state is not finite.

    NaN/inf propagate, so one sum per step finds them. On the CPU each step is checked at once. On
    CUDA the sums stay on the device and are checked once, in ``done()``: a per-step ``float()`` would
    synchronise the host with the GPU at every step and stop it from queueing the next step's work
    while the network runs (the error, when there is one, comes after the last step instead).
    """

    def __init__(self, solver: str, grid: Tensor):
        self.solver, self.grid = solver, grid.detach().cpu()
        self.sums: list[Tensor] = []

    def step(self, x: Tensor, i: int) -> None:
        s = torch.sum(x.detach(), dtype=torch.float32)
        if x.is_cuda:
            self.sums.append(s)
        elif not math.isfinite(float(s)):
            self._raise(i)

    def done(self) -> None:
        if self.sums:
            bad = (~torch.isfinite(torch.stack(self.sums))).nonzero()
            if bad.numel():
                self._raise(int(bad[0]))

    def _raise(self, i: int):
        raise Diverged(
            f"{self.solver}: non-finite state after step {i} (sigma {float(self.grid[i]):.6g} -> "
            f"{float(self.grid[i + 1]):.6g}); try more NFE, another schedule, or check the denoiser")


def model_sigma_range(denoiser, default: tuple[float, float] = (0.002, 80.0)) -> tuple[float, float]:
    """(sigma_min, sigma_max): the model's own noise range from its ``info`` (0.002..80 for EDM-style models, the
    discrete table's ends for SD); ``default``'s end wherever the info states no number."""
    info = getattr(denoiser, "info", None)
    lo, hi = (getattr(info, k, None) for k in ("sigma_min", "sigma_max"))
    return (float(lo) if isinstance(lo, (int, float)) else float(default[0]),
            float(hi) if isinstance(hi, (int, float)) else float(default[1]))


def sample_shape(denoiser) -> tuple:
    """The per-image sample shape the model declares in its ``info`` (ModelInfo.shape)."""
    info = getattr(denoiser, "info", None)
    if info is None:
        raise AmedValueError("the model has no ModelInfo; cannot infer the sample shape")
    return tuple(info.shape)


def check_noise(denoiser, noise: Tensor) -> None:
    """noise is [B, *shape] with the adapter's sample shape (ModelInfo.shape) when it declares one."""
    if not isinstance(noise, Tensor):
        raise AmedTypeError(f"noise must be a torch.Tensor, got {type(noise).__name__}")
    if noise.ndim < 2:
        raise AmedValueError(f"noise must be [batch, ...], got shape {tuple(noise.shape)}")
    shape = getattr(getattr(denoiser, "info", None), "shape", None)
    if shape is not None and tuple(noise.shape[1:]) != tuple(shape):
        raise AmedValueError(f"noise of shape {list(noise.shape)} does not fit the model: it samples "
                             f"{list(shape)} per image, so noise must be [B, {', '.join(map(str, shape))}]")
