"""GITS: a time schedule searched by dynamic programming over a fine teacher grid, training-free.

Chen et al., ICML 2024, "On the Trajectory Regularity of ODE-based Diffusion Sampling" (authors' code:
zju-pi/diff-sampler ``gits-main/gits_utils.py``; shared/reference/authors-code.md §9). The search, as the
authors run it:

1. Warm-up: teacher trajectories (iPNDM on a 61-point polynomial rho=7 grid) for 256 noise samples.
2. Cost matrix: C[i][j] = the error of one jump from the teacher's state at fine time i to fine time j.
   The authors' jump is a single Euler step along the teacher's own direction d(x_i, t_i), whatever the
   solver being scheduled ("euler" here). Metric "dev": the jumped point's distance from the chord
   x_T -> x_0 of its teacher trajectory, minus the teacher's distance at j (both averaged over the
   samples; the difference can be negative); "l1"/"l2": the norm of the jumped point minus the teacher's.
3. DP: V[i][1] = C[i][end]; V[j][k] = min_{j < i < end} C[j][i] + coeff V[i][k-1]; the path from index 0
   minimises C[p0][p1] + coeff C[p1][p2] + coeff^2 C[p2][p3] + ... (coeff 1.15 makes late jumps dearer:
   local errors grow into global ones, issue #18).
4. AFS (baseline solvers): the DP picks one interval fewer, and a "free" first step is inserted between its
   first two points, at the fine point whose run of the actual solver (with AFS) ends closest in L2 to the
   teacher. This is the only place where the actual solver runs during the search.

For AMED (AMED-Solver and AMED-Plugin; NFE = 2(N - 1) - [AFS]) the DP chooses the student's N points and
the predictor later chooses each interval's mid-point. Jump "amed" is one *neutral* AMED interval from the
teacher's state: r = 0.5 (the geometric mid-point, where an untrained predictor starts), c = a = 1, i.e.
DPM-Solver-2 for AMED-Solver and two sub-steps of the base solver for a plugin, with the teacher's
evaluation at t_i as the only history. It costs one network call per (i, j) pair and sample, and prices an
interval as the two-evaluation step it is. For the single-step students (AMED-Solver, the DDIM and
DPM-Solver-2 plugins) that is the interval the run takes, up to the learned r, c, a, and it is their
default. A multistep plugin's interval (iPNDM, DPM-Solver++, UniPC) depends on the history the run brings
into it, which no jump from a teacher state sees; there the default is the authors' Euler jump, which
measured better on digits-8 (NOTES.md, 2026-12-01: the neutral iPNDM plugin at NFE 5 reached FD 7.7 on the
Euler-jump grid and 291 on the AMED-jump grid). AMED's own AFS (an analytical first evaluation inside the
first interval) inserts no point; under it every neutral AMED jump from index 0 starts along the analytical
direction x / sqrt(1 + t^2), as the first interval does.

Differences from the authors' code, on purpose: the noise is per seed (seeds disjoint from evaluation and
training seeds); the cost is averaged over all warm-up samples (their first release kept only the last
batch, fixed in e48659e); the teacher never uses AFS (theirs inherits the student's AFS flag for its first
step); the AFS point is chosen on all warm-up samples (theirs: on the last batch); under baseline AFS the
DP's first jump must skip at least one fine point, so that the free step has room. Their teacher inherits
the AFS flag, so under AFS their first stored direction is the analytical one and C[0][1] = 0 exactly (the
jump reproduces the teacher's own first step), which invites a first DP point at index 1; that leaves no
room for the free step, and their loop then keeps a grid one point short of the NFE it reports (found by
reading the code, not by running it). Here a baseline's cost
matrix under AFS is the one without (the network's direction at x_T): the DP prices the first real step,
and the free step before it is chosen by running the solver, as theirs is.
"""

from __future__ import annotations

import math
import time
from dataclasses import replace
from typing import Callable

import numpy as np
import torch

from .calls import model_sigma_range
from .gridfile import GridRecord, implied_nfe
from .sampling import afs_denoise, conditioned, randn_seeds, sample, sample_trajectory
from .schedules import default_rho, get_schedule
from .solvers import SOLVERS, reachable_nfe, steps_for_nfe
from .errors import AmedValueError

__all__ = ["search_schedule", "dp_path", "path_cost", "cost_matrix", "select_afs_point", "gits_seeds",
           "METRICS", "JUMPS", "GITS_SEED_BASE"]

METRICS = ("dev", "l1", "l2")
JUMPS = ("euler", "amed")
# Warm-up noise seeds: disjoint from evaluation seeds 0..49,999 and from training seeds (1e9 + seed * 1e7).
GITS_SEED_BASE = 2_000_000_000

Tensor = torch.Tensor


def gits_seeds(seed: int, count: int) -> list[int]:
    """The warm-up noise seeds of a search: a function of ``seed`` only."""
    if int(seed) != seed or seed < 0:
        raise AmedValueError(f"seed must be a non-negative integer, got {seed!r}")
    first = GITS_SEED_BASE + int(seed) * 10_000_000
    return list(range(first, first + int(count)))


# ----------------------------------------------------------------------------------------- the DP
def dp_path(cost, num_intervals: int, coeff: float = 1.15) -> tuple[list[int], float]:
    """GITS dynamic programming (step 3): the indices 0 = p_0 < ... < p_K = n - 1 minimising
    sum_m coeff^m C[p_m][p_{m+1}], and that minimum. Ties go to the smallest index, as the authors'."""
    C = np.asarray(cost, dtype=np.float64)
    if C.ndim != 2 or C.shape[0] != C.shape[1] or C.shape[0] < 2:
        raise AmedValueError(f"the cost matrix must be square with at least 2 rows, got shape {C.shape}")
    n, K = C.shape[0], num_intervals
    if int(K) != K or K < 1:
        raise AmedValueError(f"the number of intervals must be a positive integer, got {K!r}")
    if K > n - 1:
        raise AmedValueError(f"{K} intervals need at least {K + 1} fine grid points, got {n}")
    if not (math.isfinite(coeff) and coeff > 0):
        raise AmedValueError(f"coeff must be positive and finite, got {coeff!r}")
    upper = C[np.triu_indices(n, 1)]
    if np.isnan(upper).any() or (upper == -np.inf).any():
        raise AmedValueError("the cost matrix has NaN or -inf above its diagonal")
    V = np.full((n, K + 1), np.inf)
    arg = np.full((n, K + 1), -1, dtype=np.int64)
    V[:, 1] = C[:, n - 1]  # one jump to the end
    for k in range(2, K + 1):
        for j in range(n - 2):
            nxt = np.arange(j + 1, n - 1)  # the next point is never the end while k > 1 jumps remain
            cand = C[j, nxt] + coeff * V[nxt, k - 1]
            m = int(np.argmin(cand))
            V[j, k], arg[j, k] = cand[m], nxt[m]
    if not np.isfinite(V[0, K]):
        raise AmedValueError(f"no finite path of {K} jumps through the cost matrix")
    path, w = [0], 0
    for k in range(K, 1, -1):
        w = int(arg[w, k])
        path.append(w)
    path.append(n - 1)
    return path, float(V[0, K])


def path_cost(cost, path, coeff: float = 1.15) -> float:
    """The DP objective of a path: sum_m coeff^m C[p_m][p_{m+1}]."""
    C = np.asarray(cost, dtype=np.float64)
    return float(sum(coeff**m * C[a, b] for m, (a, b) in enumerate(zip(path[:-1], path[1:]))))


# ---------------------------------------------------------------------------------- the warm-up
class _Recorder:
    """A denoiser wrapper that keeps every (x, sigma, D), so the teacher's evaluations at its own states
    are reused for the jumps instead of recomputed."""

    def __init__(self, inner):
        self.inner, self.calls = inner, []

    def __call__(self, x, sigma):
        D = self.inner(x, sigma)
        self.calls.append((x, sigma, D))
        return D


def _teacher(denoiser, noise: Tensor, fine: Tensor, teacher: str, teacher_options: dict) -> tuple[Tensor, Tensor]:
    """Teacher states at every fine time [n, B, ...] and D(x_i, t_i) at all but the last [n - 1, B, ...]."""
    rec = _Recorder(denoiser)
    traj = sample_trajectory(rec, noise, solver=teacher, nfe=None, schedule=fine, afs=False,
                             solver_options=dict(teacher_options))
    by_sigma: dict[float, list] = {}
    for x, sigma, D in rec.calls:
        by_sigma.setdefault(float(sigma[0]), []).append((x, sigma, D))
    Ds = []
    for i in range(fine.numel() - 1):
        t = fine[i].to(noise.dtype)
        hit = next((D for x, sigma, D in by_sigma.get(float(t), ())
                    if bool((sigma == t).all()) and torch.equal(x, traj[i])), None)
        if hit is None:  # the teacher never evaluated at its own state (e.g. UniPC's corrector point)
            hit = denoiser(traj[i], t.expand(noise.shape[0]).to(noise.device))
        Ds.append(hit)
    return traj, torch.stack(Ds)


def _metric(points: Tensor, target: Tensor, chord: tuple[Tensor, Tensor] | None, metric: str) -> Tensor:
    """Per-sample error [J, B] of jumped points [J, B, F] against teacher states [J, B, F]."""
    if metric == "l1":
        return (points - target).abs().sum(-1)
    if metric == "l2":
        return (points - target).square().sum(-1).sqrt()
    return _deviation(points, *chord) - _deviation(target, *chord)


def _deviation(p: Tensor, start: Tensor, end: Tensor) -> Tensor:
    """Distance of points p [..., B, F] from the line through start and end [B, F] (GITS 'dev')."""
    u = end - start
    u = u / u.norm(dim=-1, keepdim=True)
    v = p - end
    return (v - (v * u).sum(-1, keepdim=True) * u).norm(dim=-1)


def _amed_jumps(denoiser, solver: str, solver_options: dict, nfe: int, afs: bool, x: Tensor, D: Tensor,
                t_cur: Tensor, t_next: Tensor) -> Tensor:
    """One neutral AMED interval (r = 0.5, c = a = 1) from states x with D(x, t_cur) known, to t_next."""
    from .plugin import amed_interval, init_state, student_solver  # noqa: PLC0415
    from .predictor import AMEDConfig, ConstantPredictor  # noqa: PLC0415
    from .sampling import ModelCall  # noqa: PLC0415

    config = AMEDConfig(solver=solver, nfe=nfe, afs=afs, scale_dir=0.0, scale_time=0.0,
                        solver_options=dict(solver_options))
    base = student_solver(config)
    state = init_state(config, base)  # the orders of a run's first interval
    state = replace(state, hist=((t_cur, base.output(x, D, t_cur)),), fresh=True)
    model = ModelCall(denoiser)
    x_next, _, _ = amed_interval(config, base, ConstantPredictor(config), x, t_cur, t_next, model, state)
    return x_next


@torch.no_grad()
def cost_matrix(denoiser, shape, fine: Tensor, seeds: list[int], *, metric: str = "dev", jump: str = "euler",
                afs_first: bool = False, teacher: str = "ipndm", teacher_options: dict | None = None,
                amed_solver: tuple[str, dict, int, bool] | None = None, batch: int = 256,
                jump_warmup: int | None = None, device="cpu") -> tuple[np.ndarray, Tensor]:
    """GITS steps 1-2: the mean cost C[i][j] (i < j; +inf elsewhere) over the warm-up seeds, and the
    teacher's final states [len(seeds), ...] (for the AFS choice).

    ``afs_first``: jumps from index 0 start along the analytical direction (AMED's AFS). ``jump="amed"``
    needs ``amed_solver = (solver, solver_options, nfe, afs)`` of the AMED student. ``jump_warmup``: AMED
    jumps are priced on the first ``jump_warmup`` warm-up trajectories only (default: all; the teacher still
    runs on every seed, for the AFS choice): an AMED jump costs one network call per (i, j) pair and sample,
    about 30x the warm-up itself on 61 fine points. Euler jumps cost no call and always use every trajectory.
    """
    if metric not in METRICS:
        raise AmedValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if jump not in JUMPS:
        raise AmedValueError(f"unknown jump {jump!r}; choose one of {list(JUMPS)}")
    if jump == "amed" and amed_solver is None:
        raise AmedValueError("jump='amed' needs the AMED student's (solver, solver_options, nfe, afs)")
    if jump_warmup is not None and (int(jump_warmup) != jump_warmup or not 1 <= jump_warmup <= len(seeds)):
        raise AmedValueError(f"jump_warmup must be an integer in 1..{len(seeds)} (the warm-up size), got {jump_warmup!r}")
    priced = len(seeds) if jump_warmup is None or jump == "euler" else int(jump_warmup)
    n = fine.numel()
    t = fine.to(device)
    total = torch.zeros(n, n, dtype=torch.float64, device=device)
    finals = []
    for lo in range(0, len(seeds), batch):
        chunk = seeds[lo:lo + batch]
        noise = randn_seeds(chunk, shape, device=device)
        with conditioned(denoiser, chunk):
            traj, Ds = _teacher(denoiser, noise, fine, teacher, teacher_options or {})
            finals.append(traj[-1])
            B = min(len(chunk), priced - lo)  # the trajectories of this chunk that price the jumps
            if B <= 0:
                continue
            chunk, traj, Ds = chunk[:B], traj[:, :B], Ds[:, :B]
            X = traj.double().flatten(2)  # [n, B, F]
            chord = (X[0], X[-1])
            for i in range(n - 1):
                x_i, D_i = traj[i], Ds[i]
                if afs_first and i == 0:  # AFS: the first direction is analytical (no network call)
                    D_i = afs_denoise(x_i, t[0].expand(B))
                targets = t[i + 1:]
                J = targets.numel()
                if jump == "euler":
                    d = (x_i.double() - D_i.double()).flatten(1) / t[i]
                    pts = X[i][None] + (targets - t[i])[:, None, None] * d[None]
                else:
                    rows = []
                    per = max(1, batch // B)  # targets per network batch
                    for a in range(0, J, per):
                        tj = targets[a:a + per]
                        m = tj.numel()
                        rep = lambda v: v.repeat(m, *([1] * (v.ndim - 1)))  # noqa: E731
                        with conditioned(denoiser, list(chunk) * m):
                            xn = _amed_jumps(denoiser, *amed_solver, rep(x_i), rep(D_i),
                                             t[i].expand(m * B), tj.repeat_interleave(B))
                        rows.append(xn.double().reshape(m, B, -1))
                    pts = torch.cat(rows)
                total[i, i + 1:] += _metric(pts, X[i + 1:], chord, metric).sum(1)
    C = (total / priced).cpu().numpy()
    C[np.tril_indices(n)] = np.inf
    return C, torch.cat(finals)


# ---------------------------------------------------------------------------------------- AFS
@torch.no_grad()
def select_afs_point(denoiser, shape, fine: Tensor, path: list[int], seeds: list[int], finals: Tensor, *,
                     solver: str, solver_options: dict | None = None, batch: int = 256,
                     device="cpu") -> tuple[int, list[float]]:
    """GITS step 4: the fine index k in (path[0], path[1]) whose grid fine[[0, k, *path[1:]]], run by the
    actual solver with AFS, ends closest (mean L2) to the teacher; returns k and the distance of each k."""
    dists = []
    for k in range(path[0] + 1, path[1]):
        grid = fine[[path[0], k, *path[1:]]]
        err = 0.0
        for lo in range(0, len(seeds), batch):
            chunk = seeds[lo:lo + batch]
            noise = randn_seeds(chunk, shape, device=device)
            with conditioned(denoiser, chunk):
                x = sample(denoiser, noise, solver=solver, schedule=grid, afs=True,
                           solver_options=dict(solver_options or {}))
            err += float((x - finals[lo:lo + len(chunk)]).double().flatten(1).norm(dim=1).sum())
        dists.append(err / len(seeds))
    if not dists:
        raise AmedValueError(f"no fine point between indices {path[0]} and {path[1]} for the AFS step")
    return path[0] + 1 + int(np.argmin(dists)), dists


# -------------------------------------------------------------------------------------- search
def _model_identity(denoiser) -> tuple[str, str | None]:
    info = getattr(denoiser, "info", None)
    return (getattr(info, "name", "") or type(denoiser).__name__), getattr(info, "sha256", None)


def search_schedule(denoiser, shape, solver: str = "ipndm", nfe: int = 5, *, afs: bool = False,
                    amed: bool | None = None, solver_options: dict | None = None, num_fine: int = 61,
                    num_warmup: int = 256, coeff: float = 1.15, metric: str = "dev", jump: str | None = None,
                    teacher: str = "ipndm", teacher_options: dict | None = None, fine_schedule: str = "polynomial",
                    rho: float | None = 7.0, sigma_min: float | None = None, sigma_max: float | None = None,
                    seed: int = 0, batch: int = 256, jump_warmup: int | None = None, device="cpu",
                    log: Callable[[str], None] | None = None) -> GridRecord:
    """Search a GITS time grid for ``solver`` at ``nfe`` on ``denoiser``; returns it with its record
    (``.grid`` the float64 times, ``.save(path)`` writes the grid file).

    ``amed`` (default: ``solver == "amed"``) searches the N student points of an AMED-Solver or
    AMED-Plugin run (NFE = 2 (N - 1) - [afs]). ``jump`` is "euler" (the authors' cost; the default for
    baselines and multistep plugins) or "amed" (one neutral AMED interval; the default for AMED-Solver and
    the DDIM / DPM-Solver-2 plugins). The fine grid is ``fine_schedule``
    with ``num_fine`` points over the model's sigma range unless ``sigma_min``/``sigma_max`` are given.
    ``jump_warmup`` prices AMED jumps on the first that many warm-up trajectories (default: all of them).
    """
    start = time.perf_counter()
    say = log or (lambda m: None)
    amed = solver == "amed" if amed is None else bool(amed)
    solver_options = dict(solver_options or {})
    if jump is None:
        from .plugin import SINGLE_STEP  # noqa: PLC0415

        jump = "amed" if amed and solver in SINGLE_STEP else "euler"
    if jump not in JUMPS:
        raise AmedValueError(f"unknown jump {jump!r}; choose one of {list(JUMPS)}")
    if metric not in METRICS:
        raise AmedValueError(f"unknown metric {metric!r}; choose one of {list(METRICS)}")
    if jump == "amed" and not amed:
        raise AmedValueError(f"jump='amed' prices AMED intervals; for the baseline {solver!r} use jump='euler'")
    if int(num_warmup) != num_warmup or num_warmup < 1 or int(batch) != batch or batch < 1:
        raise AmedValueError(f"num_warmup and batch must be positive integers, got {num_warmup!r}, {batch!r}")
    if teacher not in SOLVERS:
        raise AmedValueError(f"unknown teacher {teacher!r}; choose one of {sorted(SOLVERS)}")
    if teacher_options is None:
        teacher_options = {"max_order": 4} if teacher == "ipndm" else {}
    if amed:
        from .plugin import PLUGIN_BASES  # noqa: PLC0415

        if solver != "amed" and solver not in PLUGIN_BASES:
            raise AmedValueError(f"AMED runs as AMED-Solver ('amed') or a plugin on {list(PLUGIN_BASES)}, got {solver!r}")
        if int(nfe) != nfe or not reachable_nfe(2, afs, nfe):
            raise AmedValueError(f"AMED spends 2 NFE per interval: NFE={nfe!r} is unreachable with afs={afs}")
        intervals = (nfe + int(afs)) // 2  # N - 1
    else:
        if solver not in SOLVERS:
            raise AmedValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)} (or 'amed')")
        steps = steps_for_nfe(solver, SOLVERS[solver].evals_per_step, nfe, afs)
        intervals = steps - int(afs)  # under AFS the DP leaves one step to the free insertion
        if intervals < 1:
            raise AmedValueError(f"{solver} at NFE={nfe} with AFS has a single step: nothing to search")
    need = intervals + 1 + int(afs and not amed)
    if int(num_fine) != num_fine or num_fine < need:
        raise AmedValueError(f"{intervals} intervals{' and the AFS point' if afs and not amed else ''} need "
                         f"num_fine >= {need}, got {num_fine!r}")
    lo, hi = model_sigma_range(denoiser)
    sigma_min = lo if sigma_min is None else float(sigma_min)
    sigma_max = hi if sigma_max is None else float(sigma_max)
    if rho is None:
        rho = default_rho(fine_schedule)
    fine = get_schedule(fine_schedule, int(num_fine), sigma_min, sigma_max, rho)
    seeds = gits_seeds(seed, num_warmup)
    device = torch.device(device)

    say(f"warm-up: {teacher} on {num_fine} fine points, {num_warmup} samples; jump {jump}, metric {metric}")
    # AMED's AFS replaces the first interval's first evaluation, so a neutral AMED jump from x_T starts along
    # x/sqrt(1+t^2). An Euler jump stands for a whole interval (AMED) or for the first real step after the
    # free one (baselines), both along the network's direction.
    C, finals = cost_matrix(denoiser, shape, fine, seeds, metric=metric, jump=jump, afs_first=afs and jump == "amed",
                            teacher=teacher, teacher_options=teacher_options,
                            amed_solver=(solver, solver_options, nfe, afs) if amed else None, batch=batch,
                            jump_warmup=jump_warmup, device=device)
    if afs and not amed:
        C[0, 1] = np.inf  # leave room for the free step
    path, value = dp_path(C, intervals, coeff)
    afs_index, afs_dists = None, None
    if afs and not amed:
        afs_index, afs_dists = select_afs_point(denoiser, shape, fine, path, seeds, finals, solver=solver,
                                                solver_options=solver_options, batch=batch, device=device)
        path = [path[0], afs_index, *path[1:]]
    grid = fine[path].clone()
    name, sha = _model_identity(denoiser)
    from ._version import __version__  # noqa: PLC0415

    record = {
        "solver": solver, "solver_options": solver_options, "nfe": int(nfe), "afs": bool(afs), "amed": amed,
        "model": name, "model_sha256": sha, "shape": list(shape),
        "search": {
            "method": "gits", "num_fine": int(num_fine), "fine_schedule": fine_schedule, "rho": rho,
            "sigma_min": sigma_min, "sigma_max": sigma_max, "num_warmup": int(num_warmup), "coeff": float(coeff),
            "metric": metric, "jump": jump,
            "jump_warmup": None if jump_warmup is None or jump == "euler" else int(jump_warmup),
            "teacher": teacher, "teacher_options": dict(teacher_options),
            "seeds": {"first": seeds[0], "count": len(seeds)}, "seed": int(seed), "indices": [int(i) for i in path],
            "dp_value": value, "afs_index": afs_index,
            "afs_distances": None if afs_dists is None else [float(d) for d in afs_dists],
            "wall_seconds": round(time.perf_counter() - start, 3),
        },
        "amed_version": __version__,
    }
    if implied_nfe(solver, grid.numel(), afs, amed) != nfe:  # the bookkeeping above, checked
        raise RuntimeError(f"GITS produced {grid.numel()} points, which do not give NFE={nfe} for {solver}")
    say(f"grid {[round(v, 4) for v in grid.tolist()]} (fine indices {path})")
    return GridRecord(grid=grid, record=record)
