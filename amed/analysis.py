"""Trajectory analyses of the paper beyond Table 2: the geometry of sampling trajectories (Fig. 4, PCA) and the
value of searching the intermediate time (Fig. 5, relative alignment). Imports torch only (matplotlib loads inside
the writers of ``amed.plots`` when they are called).

The figure writers and their CSV rows (``amed.plots``), the table text (``amed.tables``) and ``write_csv``
(``amed._io``) are re-exported here, where the workflow's figure scripts and the tests import them.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch

from ._io import write_csv
from .plots import (PAPER_PROJ_ERROR, SINGLE_STEP_PATTERN, alignment_rows, coefficient_rows, image_grid,
                    pca_rows, plot_coefficients, plot_quality_vs_nfe, plot_relative_alignment,
                    plot_training_curves, plot_trajectory_pca, training_curve_rows, write_sample_grid)
from .predictor import AMEDConfig
from .sampling import ModelCall, conditioned, resolve_device, sample_trajectory
from .driver import integrate
from .schedules import get_schedule, refine_schedule, teacher_indices
from .solvers import make_solver
from .tables import long_to_markdown, read_long_csv
from .errors import AmedValueError

__all__ = ["trajectory_pca", "relative_alignment", "alignment_rows", "pca_rows", "coefficient_rows",
           "read_long_csv", "load_on", "sampler_pca", "long_to_markdown", "image_grid", "write_csv",
           "plot_quality_vs_nfe", "plot_trajectory_pca", "plot_relative_alignment", "plot_coefficients",
           "write_sample_grid", "FIG5_SOLVERS", "PAPER_PROJ_ERROR", "SINGLE_STEP_PATTERN", "training_curve_rows",
           "plot_training_curves"]

FIG5_SOLVERS = ("amed", "dpm2", "ddim", "ipndm", "dpmpp2m", "dpmpp3m")


# ---------------------------------------------------------------------------------------------------
# Fig. 4: PCA of sampling trajectories.
# ---------------------------------------------------------------------------------------------------
@torch.no_grad()
def trajectory_pca(traj: torch.Tensor, components: int = 2, chunk: int = 256) -> dict:
    """PCA of each sampling trajectory over its own T points (paper Fig. 4).

    ``traj`` is [T, B, ...] (the layout of ``amed.sample_trajectory``) or a single trajectory [T, D].
    Returns, in float64: ``proj_error`` [B, T] = ||x_t - x~_t|| / ||x_t|| with x~_t the projection onto
    the top-``components`` principal components (plus the trajectory mean), ``explained`` [B, K] the
    cumulative percent variance Var(x~)/Var(x) of the first k = 1..K components (K = min(T, D)), and
    their mean/std over the B trajectories.
    """
    traj = torch.as_tensor(traj)
    if traj.ndim < 2:
        raise AmedValueError(f"trajectory_pca: need [T, D] or [T, B, ...], got shape {tuple(traj.shape)}")
    X = traj[:, None] if traj.ndim == 2 else traj.reshape(traj.shape[0], traj.shape[1], -1)
    X = X.transpose(0, 1)  # [B, T, D]
    B, T, D = X.shape
    if T < 2:
        raise AmedValueError(f"trajectory_pca: a trajectory needs at least 2 points, got T={T}")
    errs, expl = [], []
    for i in range(0, B, chunk):
        x = X[i:i + chunk].to(torch.float64)
        xc = x - x.mean(dim=1, keepdim=True)  # centre each trajectory by its own mean
        U, S, Vh = torch.linalg.svd(xc, full_matrices=False)  # [b, T, K], [b, K], [b, K, D]
        k = min(components, S.shape[1])
        proj = (U[:, :, :k] * S[:, None, :k]) @ Vh[:, :k]  # centred projection onto the top-k plane
        resid = (xc - proj).norm(dim=2)
        errs.append(resid / x.norm(dim=2).clamp_min(torch.finfo(torch.float64).tiny))
        var = S**2
        expl.append(var.cumsum(1) / var.sum(1, keepdim=True).clamp_min(torch.finfo(torch.float64).tiny))
    err, ex = torch.cat(errs), torch.cat(expl)
    return {"proj_error": err, "proj_error_mean": err.mean(0), "proj_error_std": err.std(0, unbiased=False),
            "explained": ex, "explained_mean": ex.mean(0), "explained_std": ex.std(0, unbiased=False),
            "components": components}


def load_on(name: str, device="auto"):
    """(model, device): a registered model or checkpoint, moved to ``device`` ("auto": CUDA if available), eval."""
    from .models.registry import open_model  # noqa: PLC0415

    device = resolve_device(device)
    return open_model(name, device), device


@torch.no_grad()
def sampler_pca(denoiser, seeds: Sequence[int], shape: Sequence[int], batch: int = 256, device=None,
                components: int = 2, **sample_kw) -> tuple[dict, torch.Tensor]:
    """Fig. 4 for a model: PCA of the trajectories of ``amed.sample_trajectory(**sample_kw)`` from the
    given seeds, in batches (trajectories of real models do not fit in memory at once); returns (pca, t)."""
    from .sampling import plan, randn_seeds  # noqa: PLC0415

    seeds = list(seeds)
    errs, expl = [], []
    for i in range(0, len(seeds), batch):
        chunk = seeds[i:i + batch]
        noise = randn_seeds(chunk, shape, device=device)
        with conditioned(denoiser, chunk):
            traj = sample_trajectory(denoiser, noise, **sample_kw)
        p = trajectory_pca(traj.cpu(), components)
        errs.append(p["proj_error"])
        expl.append(p["explained"])
    err, ex = torch.cat(errs), torch.cat(expl)
    pca = {"proj_error": err, "proj_error_mean": err.mean(0), "proj_error_std": err.std(0, unbiased=False),
           "explained": ex, "explained_mean": ex.mean(0), "explained_std": ex.std(0, unbiased=False),
           "components": components}
    keys = ("solver", "nfe", "schedule", "afs", "sigma_min", "sigma_max", "rho")
    t = plan(**{k: v for k, v in sample_kw.items() if k in keys}).grid
    return pca, t


# ---------------------------------------------------------------------------------------------------
# Fig. 5: relative alignment of greedily grid-searched intermediate times.
# ---------------------------------------------------------------------------------------------------
class _FixedR:
    """A stand-in AMED predictor: per-sample r for the current interval, c = a = 1 (paper Fig. 5 fixes c_n = 1)."""

    def __init__(self, r: torch.Tensor):
        self.r = r

    def __call__(self, h, t_cur, t_next):
        one = torch.ones_like(self.r)
        return self.r, one, one


def _dist(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    return (x - y).reshape(x.shape[0], -1).to(torch.float64).norm(dim=1)


@torch.no_grad()
def relative_alignment(denoise: Callable, noise: torch.Tensor, solvers: Sequence[str] = FIG5_SOLVERS,
                       grid: str | torch.Tensor = "polynomial", num_points: int = 6, sigma_min: float = 0.002,
                       sigma_max: float = 80.0, rho: float | None = 7.0, truth_grid_nfe: int = 80,
                       r_grid: Sequence[float] | torch.Tensor | None = None, per_sample: bool = True,
                       solver_options: dict | None = None) -> dict:
    """Paper Fig. 5: how much a greedy grid search on r_n (c_n = 1) brings each solver closer to the truth.

    Ground truth x^G: Heun with about ``truth_grid_nfe`` NFE on a refinement of the student grid
    (``refine_schedule``), read at the student points (``teacher_indices``). Per solver, the baseline
    x^B evaluates at s_n = sqrt(t_n t_{n+1}) (r = 0.5) every step; the searched trajectory x^S picks, step
    by step and keeping the earlier choices, the r in ``r_grid`` minimising ||x^S_{n+1} - x^G_{n+1}||
    (per sample, or one r per step for the batch with ``per_sample=False``). "amed" is AMED-Solver
    (x' = x + (t'-t) d(x_s, s)), "dpm2" generalised DPM-Solver-2 (weight 1/(2r)); they share the
    r = 0.5 baseline. Other keys are AMED-Plugin on that base solver (two sub-steps t_n -> s_n -> t_{n+1}).
    Steps go through ``amed.plugin.amed_interval``, so the update formulas are the package's.
    ``solver_options`` maps a solver key to its options (e.g. ``{"dpmpp3m": {"lower_order_final": False}}``).

    Returns ``t`` [N] (descending), ``truth`` [N, B, ...] and, per solver key, ``alignment`` =
    ||x^B - x^G|| - ||x^S - x^G|| (positive: the search helps), ``dist_baseline``, ``dist_searched``,
    ``dist_mid`` (the r = 0.5 candidate from the searched state: never below ``dist_searched``
    when 0.5 is in the grid) and the chosen ``r``, each [N-1, B] for the points t_1 .. t_{N-1}.
    """
    from .plugin import PLUGIN_BASES, amed_interval, init_state  # noqa: PLC0415 (plugin imports sampling)

    if isinstance(grid, str):
        t = get_schedule(grid, num_points, sigma_min, sigma_max, rho)
    else:
        t = torch.as_tensor(grid, dtype=torch.float64)
        if t.ndim != 1 or t.numel() < 2 or not bool((t[1:] < t[:-1]).all()):
            raise AmedValueError(f"relative_alignment: grid must be a decreasing 1-D tensor of times, got {grid!r}")
        num_points = t.numel()
    intervals = num_points - 1
    # Ground truth: Heun (2 NFE per step) on a grid with M points inserted per interval.
    M = max(0, round(truth_grid_nfe / (2 * intervals)) - 1)
    fine = refine_schedule(grid if isinstance(grid, str) else t, num_points, M, sigma_min, sigma_max, rho)
    if not torch.allclose(fine[teacher_indices(num_points, M)], t, rtol=1e-9, atol=0):
        raise AmedValueError(f"relative_alignment: the refined grid of {grid!r} does not contain the student points")
    truth = sample_trajectory(denoise, noise, solver="heun", nfe=None, schedule=fine)[teacher_indices(num_points, M)]

    r_grid = torch.linspace(0.05, 0.95, 19, dtype=torch.float64) if r_grid is None else \
        torch.as_tensor(r_grid, dtype=torch.float64).reshape(-1)
    if r_grid.numel() == 0 or bool(((r_grid <= 0) | (r_grid > 1)).any()):
        raise AmedValueError(f"relative_alignment: r_grid values must lie in (0, 1], got {r_grid.tolist()!r}")
    B = noise.shape[0]
    t = t.to(noise.device)
    out = {"t": t.cpu(), "truth": truth, "r_grid": r_grid, "solvers": list(solvers)}
    for key in solvers:
        if key != "amed" and key not in PLUGIN_BASES:
            raise AmedValueError(f"relative_alignment: unknown solver {key!r}; choose 'amed' or one of {list(PLUGIN_BASES)}")
        opts = dict((solver_options or {}).get(key, {}))
        config = AMEDConfig(solver=key, nfe=2 * intervals, afs=False, scale_dir=0.0, scale_time=0.0,
                            solver_options=opts)
        solver = make_solver("dpm2" if key == "amed" else key, **opts)
        model = ModelCall(denoise)

        def interval(x, t_cur, t_next, state, r):
            x_next, state, _ = amed_interval(config, solver, _FixedR(r.to(noise.device)), x, t_cur, t_next, model, state)
            return x_next, state

        half = torch.full((B,), 0.5, dtype=torch.float64, device=noise.device)
        res = {k: [] for k in ("dist_baseline", "dist_searched", "dist_mid", "r")}
        mid = (r_grid - 0.5).abs().argmin()

        def greedy(x, t_cur, t_next, state, n):
            """The r in r_grid closest to the truth at t_{n+1}; candidates share the t_n evaluation."""
            state = solver.evaluate(x, t_cur, model, state)
            d = torch.stack([_dist(interval(x, t_cur, t_next, state, torch.full_like(half, float(r)))[0], truth[n + 1])
                             for r in r_grid])  # [K, B]
            best = d.argmin(0) if per_sample else d.mean(1).argmin().expand(B)
            r_n = r_grid.to(half)[best]
            res["dist_mid"].append(d[mid])
            res["r"].append(r_n.cpu())
            return interval(x, t_cur, t_next, state, r_n)

        # Baseline: r = 0.5 (s_n = sqrt(t_n t_{n+1})) throughout; searched: the greedy choice, step by step.
        start = noise * float(t[0])
        name = f"relative_alignment[{key}]"
        xb = integrate(lambda x, tc, tn, st, n: interval(x, tc, tn, st, half), start, t, init_state(config, solver),
                       name=name, keep_trajectory=True)[0]
        xs = integrate(greedy, start, t, init_state(config, solver), name=name, keep_trajectory=True)[0]
        res["dist_baseline"] = [_dist(xb[n + 1], truth[n + 1]) for n in range(intervals)]
        res["dist_searched"] = [_dist(xs[n + 1], truth[n + 1]) for n in range(intervals)]
        res = {k: torch.stack(v).cpu() for k, v in res.items()}
        res["alignment"] = res["dist_baseline"] - res["dist_searched"]
        out[key] = res
    return out
