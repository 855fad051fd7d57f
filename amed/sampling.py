"""The public sampling API: ``amed.sample`` and ``amed.sample_trajectory`` (paper Algorithm 2).

Sampling starts at x = sigma_max * noise and returns the state at sigma_min (no final denoising
step), as the paper and the authors' code do. NFE counts network evaluations actually made: the
driver counts them and checks the count against the request.
"""

from __future__ import annotations

import contextlib
import difflib
import itertools
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .gridfile import GridRecord, is_grid_path, load_grid
from .schedules import explicit_grid, get_schedule, schedule_options
from .solvers import SOLVERS, Solver, make_solver
from .errors import AmedTypeError, AmedValueError, DeviceUnavailable, Diverged

__all__ = ["sample", "sample_trajectory", "randn_seeds", "parse_seeds", "Plan", "plan", "ModelCall", "afs_denoise",
           "conditioned", "resolve_device", "supplies_features", "check_noise", "MAX_SEEDS"]

Tensor = torch.Tensor


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
    """The denoiser as the solvers see it: counts NFE, answers the first call analytically under AFS,
    records the AMED bottleneck feature of each call when asked to, and checks every output's shape."""

    def __init__(self, denoise: Callable, afs: bool = False, features: bool = False):
        self.denoise = denoise
        self.afs_pending = bool(afs)
        self.features = bool(features) and supplies_features(denoise)
        self.capture = self.features  # hook the next calls (AMED turns it off around the mid-point calls)
        self.nfe = 0
        self.feature: Tensor | None = None

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        if self.afs_pending:
            self.afs_pending = False
            self.feature = None  # AFS: no network call, the predictor sees zeros
            return afs_denoise(x, sigma)
        self.nfe += 1
        if self.capture:
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
        """The [B, 8, 8] feature of the last call (zeros after AFS or for a plain callable)."""
        if self.feature is None:
            return torch.zeros(batch, 8, 8, device=device)
        return self.feature

    def scaled(self, a: Tensor | None) -> Callable:
        """A view that evaluates the network at a * sigma (AMED's time scale a_n)."""
        if a is None:
            return self
        return lambda x, sigma: self(x, sigma * a.to(sigma))


def _check_output(D, x: Tensor, who: str) -> Tensor:
    """D(x; sigma) must be a tensor of x's shape (a broadcastable one would silently change the samples)."""
    if not isinstance(D, torch.Tensor) or D.shape != x.shape:
        got = list(D.shape) if isinstance(D, torch.Tensor) else type(D).__name__
        raise AmedValueError(f"{who} returned D of shape {got} for x of shape {list(x.shape)}; "
                             f"D(x; sigma) must have x's shape")
    return D


@dataclass(frozen=True)
class Plan:
    """How an NFE budget maps onto a grid: ``steps`` intervals between ``grid`` points."""

    solver: str
    nfe: int
    afs: bool
    steps: int
    grid: Tensor  # float64 [steps + 1], descending


def _steps_for(solver_key: str, evals_per_step: int, nfe: int, afs: bool) -> int:
    if int(nfe) != nfe or nfe < 1:
        raise AmedValueError(f"NFE must be a positive integer, got {nfe!r}")
    total = nfe + int(afs)
    if total % evals_per_step:
        ok = [n for n in range(max(1, nfe - 2), nfe + 3) if (n + int(afs)) % evals_per_step == 0 and n >= 1]
        raise AmedValueError(
            f"{solver_key} spends {evals_per_step} NFE per step, so NFE={nfe} is unreachable with afs={afs}; "
            f"use afs={not afs} or NFE in {ok} with afs={afs}")
    return total // evals_per_step


def plan(solver: str, nfe: int | None = None, schedule: str | Sequence[float] | Tensor = "polynomial",
         afs: bool = False, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float | None = None,
         evals_per_step: int | None = None, **schedule_kw) -> Plan:
    """The grid and step count for (solver, NFE, schedule); a ValueError says what would work."""
    if evals_per_step is None:
        if solver not in SOLVERS:
            raise AmedValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
        evals_per_step = SOLVERS[solver].evals_per_step
    if isinstance(schedule, str):
        if nfe is None:
            raise AmedValueError("give nfe (network evaluations) or an explicit time grid")
        steps = _steps_for(solver, evals_per_step, nfe, afs)
        if rho is None and schedule == "polynomial":
            rho = 7.0
        if rho is None and schedule == "time_uniform":
            rho = 1.0
        grid = get_schedule(schedule, steps + 1, sigma_min, sigma_max, rho, **schedule_kw)
    else:
        grid = explicit_grid(schedule)
        steps = grid.numel() - 1
        implied = steps * evals_per_step - int(afs)
        if nfe is not None and nfe != implied:
            raise AmedValueError(f"a {steps}-step grid gives NFE={implied} for {solver} with afs={afs}, not {nfe}")
        nfe = implied
        if nfe < 1:
            raise AmedValueError(f"a {steps}-step grid with afs={afs} makes no network call")
    return Plan(solver=solver, nfe=int(nfe), afs=bool(afs), steps=steps, grid=grid)


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


class _Default:
    """Marks an argument the caller left at its default (so a predictor's record can fill it)."""

    def __init__(self, value):
        self.value = value

    def __repr__(self) -> str:
        return repr(self.value)


def _resolve(args: dict, predictor) -> dict:
    """Unwrap defaults; with a predictor, every explicit setting must agree with its record."""
    if predictor is None:
        return {k: (v.value if isinstance(v, _Default) else v) for k, v in args.items()}
    cfg = predictor.config
    recorded = {"solver": cfg.solver, "nfe": cfg.nfe, "schedule": cfg.schedule, "afs": cfg.afs,
                "sigma_min": cfg.sigma_min, "sigma_max": cfg.sigma_max, "rho": cfg.rho,
                "solver_options": cfg.solver_options}
    for k, v in args.items():
        if isinstance(v, _Default) or k not in recorded:
            continue
        if k == "solver_options" and not v:
            continue
        grid = getattr(cfg, "grid", None)
        if k == "schedule" and not isinstance(v, str) and grid is not None:
            v = "explicit" if explicit_grid(v).tolist() == list(grid) else v  # the record's own grid
        if v != recorded[k]:
            if k == "schedule" and grid is not None:
                raise AmedValueError(f"the predictor was trained on the grid {grid}, got schedule={v!r}; "
                                 f"leave schedule unset to use the predictor's grid")
            raise AmedValueError(f"the predictor was trained for {k}={recorded[k]!r}, got {k}={v!r}; "
                             f"leave {k} unset to use the predictor's setting")
    return recorded


_SAMPLE_ARGS = ("solver", "nfe", "schedule", "afs", "sigma_min", "sigma_max", "rho", "predictor", "solver_options")


def _check_schedule_kw(schedule, kw: dict) -> None:
    """Extra keywords of sample() are options of the schedule in use; anything else (a misspelt argument) is a
    TypeError naming it."""
    if not kw:
        return
    allowed = schedule_options(schedule) if isinstance(schedule, str) and schedule != "explicit" else []
    unknown = sorted(set(kw) - set(allowed))
    if not unknown:
        return
    names = []
    for k in unknown:
        close = difflib.get_close_matches(k, [*_SAMPLE_ARGS, *allowed], n=1)
        names.append(f"{k!r} (did you mean {close[0]!r}?)" if close else repr(k))
    if not isinstance(schedule, str):
        takes = "an explicit time grid takes no schedule options"
    else:
        takes = f"schedule {schedule!r} takes {allowed if allowed else 'no extra options'}"
    raise AmedTypeError(f"sample() got unexpected keyword argument(s) {', '.join(names)}; {takes}")


def check_noise(denoiser, noise: Tensor) -> None:
    """noise is [B, *shape] with the adapter's sample shape (ModelInfo.shape) when it declares one."""
    if not isinstance(noise, Tensor):
        raise AmedTypeError(f"noise must be a torch.Tensor, got {type(noise).__name__}")


def _same_solver(key: str, options: dict, other: dict) -> bool:
    """Whether two option dicts configure the same solver (defaults spelled out or not)."""
    return repr(make_solver(key, **options)) == repr(make_solver(key, **other))


def _grid_settings(denoiser, args: dict, predictor) -> dict:
    """Settings implied by an explicit grid.

    A grid file (a path ending in .json, or a loaded ``GridRecord``) fills every setting left at its
    default from its record (solver, NFE, AFS, solver options), refuses explicit ones that disagree, and
    refuses another model. A plain list of times carries no record: the NFE follows from it unless given.
    """
    sched = args["schedule"].value if isinstance(args["schedule"], _Default) else args["schedule"]
    if is_grid_path(sched):
        sched = load_grid(sched)
    if isinstance(sched, GridRecord):
        if predictor is not None:
            raise AmedValueError(f"a grid file ({sched.name}) cannot be combined with a predictor: the predictor "
                             f"samples on the grid of its own record")
        if sched.amed:
            raise AmedValueError(f"{sched.name} was searched for AMED ({sched.solver}, NFE={sched.nfe}); train a "
                             f"predictor on it (amed.train_predictor(..., schedule=...)), or pass its times as a list")
        sched.check_model(denoiser)
        recorded = {"solver": sched.solver, "nfe": sched.nfe, "afs": sched.afs, "solver_options": sched.solver_options}
        out = dict(args)
        for k, want in recorded.items():
            v = args[k]
            if isinstance(v, _Default) or (k == "solver_options" and not v):
                out[k] = _Default(want)
            elif k == "solver_options" and _same_solver(sched.solver, v, want):
                out[k] = v  # the same solver spelled out ({"max_order": 4} for iPNDM's default)
            elif v != want:
                raise AmedValueError(f"{sched.name} was searched for {k}={want!r}, got {k}={v!r}; leave {k} unset "
                                 f"or pass the grid's times as a list")
        out["schedule"] = sched.grid
        return out
    if not isinstance(sched, str) and isinstance(args.get("nfe"), _Default):
        return {**args, "nfe": _Default(None)}  # an explicit grid decides the NFE unless one is given
    return args


def _run(denoiser, noise: Tensor, args: dict, predictor, keep_trajectory: bool, schedule_kw: dict):
    if noise.ndim < 2:
        raise AmedValueError(f"noise must be [batch, ...], got shape {tuple(noise.shape)}")
    shape = getattr(getattr(denoiser, "info", None), "shape", None)
    if shape is not None and tuple(noise.shape[1:]) != tuple(shape):
        raise AmedValueError(f"noise of shape {list(noise.shape)} does not fit the model: it samples "
                             f"{list(shape)} per image, so noise must be [B, {', '.join(map(str, shape))}]")


def _run(denoiser, noise: Tensor, args: dict, predictor, keep_trajectory: bool, schedule_kw: dict):
    check_noise(denoiser, noise)
    info = getattr(denoiser, "info", None)
    for k in ("sigma_min", "sigma_max"):  # unset: the model's own range (0.002..80 for EDM models, SD's table ends)
        if isinstance(args.get(k), _Default) and isinstance(getattr(info, k, None), (int, float)):
            args = {**args, k: _Default(float(getattr(info, k)))}
    args = _grid_settings(denoiser, args, predictor)
    a = _resolve(args, predictor)
    _check_schedule_kw(a["schedule"], schedule_kw)
    if predictor is not None and schedule_kw:
        raise AmedValueError(f"schedule options {sorted(schedule_kw)} cannot be combined with a predictor: "
                         f"it samples on the grid of its record")
    if predictor is not None:
        from .plugin import run_amed  # noqa: PLC0415

        return run_amed(denoiser, noise, predictor, keep_trajectory=keep_trajectory)
    solver = a["solver"]
    if solver == "amed":
        raise AmedValueError("solver 'amed' needs a trained predictor: pass predictor=amed.load_predictor(path)")
    p = plan(solver, a["nfe"], a["schedule"], a["afs"], a["sigma_min"], a["sigma_max"], a["rho"], **schedule_kw)
    method: Solver = make_solver(solver, **(a["solver_options"] or {}))
    model = ModelCall(denoiser, afs=p.afs)
    B = noise.shape[0]
    grid = p.grid.to(noise.device)
    x = noise * float(p.grid[0])
    traj = [x] if keep_trajectory else None
    state = method.init_state(p.steps)
    watch = FiniteWatch(solver, p.grid)
    for i in range(p.steps):
        t_cur, t_next = grid[i].expand(B), grid[i + 1].expand(B)
        x, state = method.step(x, t_cur, t_next, model, state)
        watch.step(x, i)
        if keep_trajectory:
            traj.append(x)
    watch.done()
    if model.nfe != p.nfe:  # the accounting is part of the contract
        raise RuntimeError(f"{solver}: made {model.nfe} network calls, planned {p.nfe}")
    return torch.stack(traj) if keep_trajectory else x


@torch.no_grad()
def sample(denoiser: Callable, noise: Tensor, solver: str = _Default("ipndm"), nfe: int | None = _Default(5),
           schedule: str | Sequence[float] | Tensor = _Default("polynomial"), afs: bool = _Default(False),
           sigma_min: float = _Default(0.002), sigma_max: float = _Default(80.0), rho: float | None = _Default(None),
           predictor=None, solver_options: dict | None = _Default(None), **schedule_kw) -> Tensor:
    """Solve the PF-ODE from sigma_max * noise down to sigma_min; returns the final state [B, ...].

    ``denoiser(x, sigma)`` returns D(x; sigma) for sigma a [B] tensor. ``schedule`` is a registered
    schedule name or an explicit decreasing grid of times. ``sigma_min``/``sigma_max`` default to the
    adapter's ``info`` range when it has one (SD: 0.0292..14.6), else 0.002..80. With an explicit
    grid (a list or tensor of times) the NFE follows from the grid unless ``nfe`` is given; a grid file
    (``amed.gits.search_schedule``'s output, as a path ending in .json or loaded with
    ``amed.gridfile.load_grid``) also supplies the solver, AFS and solver options it was searched for.
    ``solver_options`` configure the solver (e.g. ``{"max_order": 3, "lower_order_final": False}``).
    With ``predictor`` (a trained AMED predictor) every setting comes from the predictor's record, and
    an explicit setting that disagrees with it is a ValueError.
    """
    args = dict(solver=solver, nfe=nfe, schedule=schedule, afs=afs, sigma_min=sigma_min, sigma_max=sigma_max,
                rho=rho, solver_options=solver_options)
    return _run(denoiser, noise, args, predictor, False, schedule_kw)


@torch.no_grad()
def sample_trajectory(denoiser: Callable, noise: Tensor, solver: str = _Default("ipndm"),
                      nfe: int | None = _Default(5), schedule: str | Sequence[float] | Tensor = _Default("polynomial"),
                      afs: bool = _Default(False), sigma_min: float = _Default(0.002), sigma_max: float = _Default(80.0),
                      rho: float | None = _Default(None), predictor=None, solver_options: dict | None = _Default(None),
                      **schedule_kw) -> Tensor:
    """Like ``sample`` but returns the states at every grid point, [steps + 1, B, ...] (x_0 first)."""
    args = dict(solver=solver, nfe=nfe, schedule=schedule, afs=afs, sigma_min=sigma_min, sigma_max=sigma_max,
                rho=rho, solver_options=solver_options)
    return _run(denoiser, noise, args, predictor, True, schedule_kw)
