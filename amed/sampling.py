"""The public sampling API: ``amed.sample`` and ``amed.sample_trajectory`` (paper Algorithm 2).

Sampling starts at x = sigma_max * noise and returns the state at sigma_min (no final denoising
step), as the paper and the authors' code do. NFE counts network evaluations actually made: the
driver counts them and checks the count against the request.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from .gridfile import GridRecord, is_grid_path, load_grid
from .schedules import default_rho, explicit_grid, get_schedule, schedule_options
from .solvers import SOLVERS, Solver, make_solver, steps_for_nfe
from .calls import (MAX_SEEDS, ModelCall, afs_denoise, check_noise, conditioned, model_sigma_range,  # noqa: F401
                    parse_seeds, randn_seeds, resolve_device, supplies_features)
from .driver import integrate
from .errors import AmedTypeError, AmedValueError

__all__ = ["sample", "sample_trajectory", "randn_seeds", "parse_seeds", "Plan", "plan", "ModelCall", "afs_denoise",
           "conditioned", "resolve_device", "supplies_features", "check_noise", "MAX_SEEDS"]

Tensor = torch.Tensor


@dataclass(frozen=True)
class Plan:
    """How an NFE budget maps onto a grid: ``steps`` intervals between ``grid`` points."""

    solver: str
    nfe: int
    afs: bool
    steps: int
    grid: Tensor  # float64 [steps + 1], descending


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
        steps = steps_for_nfe(solver, evals_per_step, nfe, afs)
        if rho is None:
            rho = default_rho(schedule)
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
    check_noise(denoiser, noise)
    for k, v in zip(("sigma_min", "sigma_max"), model_sigma_range(denoiser)):  # unset: the model's own range
        if isinstance(args.get(k), _Default):
            args = {**args, k: _Default(v)}
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

    def step(x, t_cur, t_next, state, n):
        return method.step(x, t_cur, t_next, model, state)

    out, _ = integrate(step, noise * float(p.grid[0]), p.grid, method.init_state(p.steps), name=solver, model=model,
                       nfe=p.nfe, keep_trajectory=keep_trajectory)
    return out


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
