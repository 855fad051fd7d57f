"""Analyses and figures of the paper beyond Table 2: trajectory geometry (Fig. 4), the value of searching
the intermediate time (Fig. 5), quality vs NFE (Fig. 3), learned coefficients (Fig. 7), sample grids and
the ablation tables (Tabs. 4, 5) as Markdown.

The numerical part imports torch/numpy only; matplotlib is imported inside the plotting functions
(backend Agg). Every writer puts a PNG (atomically: temporary file + rename) and the CSV of the plotted
numbers next to it.
"""

from __future__ import annotations

import csv
import io
import math
import re
from pathlib import Path
from typing import Callable, Iterable, Sequence

import numpy as np
import torch

from .predictor import AMEDConfig, atomic_write_bytes
from .sampling import ModelCall, conditioned, resolve_device, sample_trajectory
from .driver import integrate
from .schedules import get_schedule, refine_schedule, teacher_indices
from .solvers import make_solver
from ._io import open_regular_text
from .errors import AmedValueError

__all__ = ["trajectory_pca", "relative_alignment", "alignment_rows", "pca_rows", "coefficient_rows",
           "read_long_csv", "load_on", "sampler_pca", "long_to_markdown", "image_grid", "write_csv",
           "plot_quality_vs_nfe", "plot_trajectory_pca", "plot_relative_alignment", "plot_coefficients",
           "write_sample_grid", "FIG5_SOLVERS", "PAPER_PROJ_ERROR", "SINGLE_STEP_PATTERN"]

PAPER_PROJ_ERROR = 0.08  # Fig. 4a: the 2-component relative projection error stays below 8%.
FIG5_SOLVERS = ("amed", "dpm2", "ddim", "ipndm", "dpmpp2m", "dpmpp3m")
LABELS = {"amed": "AMED-Solver", "dpm2": "DPM-Solver-2", "ddim": "DDIM + plugin", "ipndm": "iPNDM + plugin",
          "dpmpp2m": "DPM-Solver++(2M) + plugin", "dpmpp3m": "DPM-Solver++(3M) + plugin", "unipc": "UniPC + plugin"}
# Method names (Table 2 config keys or labels) treated as single-step solvers in Fig. 3.
SINGLE_STEP_PATTERN = r"ddim|heun|edm|dpm_solver_2|dpm-solver-2|dpm2|amed_solver|amed-solver"


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
    from .models.registry import load_model  # noqa: PLC0415

    device = resolve_device(device)
    return load_model(name).to(device).eval(), device


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


def pca_rows(pca: dict, t: torch.Tensor | None = None) -> list[dict]:
    """Long rows for fig4.csv: panel (a) per time point, panel (b) per number of components."""
    T = pca["proj_error_mean"].numel()
    t = torch.arange(T, dtype=torch.float64) if t is None else torch.as_tensor(t, dtype=torch.float64)
    rows = [{"panel": "a", "quantity": f"relative_projection_error_top{pca['components']}", "x_name": "t", "x": float(t[j]),
             "mean": float(pca["proj_error_mean"][j]), "std": float(pca["proj_error_std"][j]),
             "n": pca["proj_error"].shape[0]} for j in range(T)]
    rows += [{"panel": "b", "quantity": "cumulative_explained_variance", "x_name": "components", "x": k + 1,
              "mean": float(pca["explained_mean"][k]), "std": float(pca["explained_std"][k]),
              "n": pca["explained"].shape[0]} for k in range(pca["explained_mean"].numel())]
    return rows


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


def alignment_rows(ra: dict) -> list[dict]:
    """Long rows for fig5.csv: one per (solver, step), mean and std over samples."""
    rows = []
    t = ra["t"]
    for key in ra["solvers"]:
        res = ra[key]
        for n in range(res["alignment"].shape[0]):
            row = {"solver": key, "label": LABELS.get(key, key), "step": n + 1, "t_cur": float(t[n]),
                   "t_next": float(t[n + 1]), "n": res["alignment"].shape[1]}
            for q in ("alignment", "dist_baseline", "dist_searched", "r"):
                row[f"{q}_mean"] = float(res[q][n].mean())
                row[f"{q}_std"] = float(res[q][n].std(unbiased=False))
            row["frac_positive"] = float((res["alignment"][n] > 0).double().mean())
            row["frac_negative"] = float((res["alignment"][n] < 0).double().mean())
            rows.append(row)
    return rows


def coefficient_rows(coef: dict) -> list[dict]:
    """Long rows for fig7.csv from ``amed.amed_coefficients``: mean and std of r_n, c_n, s_n per step."""
    t = coef["t"]
    rows = []
    for n in range(coef["r"].shape[0]):
        row = {"step": n + 1, "t_cur": float(t[n]), "t_next": float(t[n + 1]), "n": coef["r"].shape[1]}
        for q in ("r", "c", "s"):
            v = coef[q][n].to(torch.float64)
            row[f"{q}_mean"], row[f"{q}_std"] = float(v.mean()), float(v.std(unbiased=False))
        rows.append(row)
    return rows


# ---------------------------------------------------------------------------------------------------
# Files: CSV, Markdown tables, PNGs.
# ---------------------------------------------------------------------------------------------------
def write_csv(path: str | Path, rows: list[dict]) -> None:
    """Write ``rows`` (a list of dicts with the same keys) as a CSV, atomically."""
    if not rows:
        raise AmedValueError(f"write_csv: no rows to write to {str(path)!r}")
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    w.writeheader()
    w.writerows(rows)
    atomic_write_bytes(path, buf.getvalue().encode())


def read_long_csv(path: str | Path) -> list[dict]:
    """Rows of a long CSV (dataset, method, nfe, metric, value, ...); nfe as int, value as float."""
    try:
        with open_regular_text(path, "long CSV") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise AmedValueError(f"long CSV {str(path)!r} is not a UTF-8 CSV file ({e})") from None
    need = {"method", "nfe", "value"}
    if not rows or not need <= set(rows[0]):
        raise AmedValueError(f"{str(path)!r}: need a long CSV with columns {sorted(need)}, got {sorted(rows[0]) if rows else []}")
    for r in rows:
        r["nfe"], r["value"] = int(r["nfe"]), float(r["value"])
    return rows


def long_to_markdown(rows: list[dict], title: str = "", row: str = "method", col: str = "nfe",
                     group: Sequence[str] = ("dataset", "metric"), fmt: str = "{:.2f}",
                     lower_is_better: bool = True) -> str:
    """Lay a long table out as Markdown, ``row`` x ``col`` (methods x NFE), one table per ``group`` value;
    the best value of each column is bold. Tables 2, 4 (teacher ablation) and 5 (schedule ablation). Several
    rows for one cell (training seeds) show as mean ± standard deviation, plus how many kept the neutral
    predictor when a ``selected`` column says so."""
    group = [g for g in group if rows and g in rows[0]]
    md = [f"# {title}", ""] if title else []
    keys = list(dict.fromkeys(tuple(r[g] for g in group) for r in rows))
    for gk in keys:
        sub = [r for r in rows if tuple(r[g] for g in group) == gk]
        cols = sorted(dict.fromkeys(r[col] for r in sub))
        names = list(dict.fromkeys(r[row] for r in sub))
        runs: dict = {}
        for r in sub:
            runs.setdefault((r[row], r[col]), []).append(r)
        val = {k: sum(float(r["value"]) for r in v) / len(v) for k, v in runs.items()}
        if group:
            md += ["## " + ", ".join(f"{g}: {v}" for g, v in zip(group, gk)), ""]
        md += [f"| {row} | " + " | ".join(f"{col.upper()} {c}" for c in cols) + " |", "|---|" + "---:|" * len(cols)]
        best = {}
        for c in cols:
            vs = [val[(m, c)] for m in names if (m, c) in val and math.isfinite(val[(m, c)])]
            best[c] = (min(vs) if lower_is_better else max(vs)) if vs else None
        for m in names:
            cells = []
            for c in cols:
                if (m, c) not in val:
                    cells.append("–")
                    continue
                s = fmt.format(val[(m, c)])
                s = f"**{s}**" if val[(m, c)] == best[c] else s
                rs = runs[(m, c)]
                if len(rs) > 1:
                    sd = math.sqrt(sum((float(r["value"]) - val[(m, c)]) ** 2 for r in rs) / (len(rs) - 1))
                    s += " ± " + fmt.format(sd)
                neutral = sum(r.get("selected") == "neutral" for r in rs)
                cells.append(s + (f" (neutral {neutral}/{len(rs)})" if neutral else ""))
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        md.append("")
    return "\n".join(md)


def _plt():
    import matplotlib  # noqa: PLC0415 (plotting is optional for the core)

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    return plt


def _save(fig, png: str | Path, rows: list[dict], csv_path: str | Path | None = None) -> None:
    """PNG atomically (temp file + rename), then the CSV of the plotted numbers next to it."""
    plt = _plt()
    png = Path(png)
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=150, bbox_inches="tight")
    plt.close(fig)
    atomic_write_bytes(png, buf.getvalue())
    write_csv(csv_path or png.with_suffix(".csv"), rows)


def plot_quality_vs_nfe(rows: list[dict], png: str | Path, csv_path: str | Path | None = None,
                        model: str = "", single_step: Iterable[str] | str | None = None) -> None:
    """Fig. 3: sample quality vs NFE, one line per method; single-step solvers dashed, multistep solid.

    ``single_step`` names the single-step methods (default: names matching ``SINGLE_STEP_PATTERN``).
    One panel per (dataset, metric).
    """
    plt = _plt()
    if not rows:
        raise AmedValueError("plot_quality_vs_nfe: no rows")
    if single_step is None or isinstance(single_step, str):
        pat = re.compile(single_step or SINGLE_STEP_PATTERN, re.I)
        is_single = lambda m: bool(pat.search(m))  # noqa: E731
    else:
        names = set(single_step)
        is_single = lambda m: m in names  # noqa: E731
    panels = list(dict.fromkeys((r.get("dataset", model), r.get("metric", "metric")) for r in rows))
    fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4.2), squeeze=False)
    for ax, (ds, metric) in zip(axes[0], panels):
        sub = [r for r in rows if (r.get("dataset", model), r.get("metric", "metric")) == (ds, metric)]
        for m in dict.fromkeys(r["method"] for r in sub):
            by_nfe: dict = {}  # several rows per NFE (training seeds): their mean
            for r in sub:
                if r["method"] == m:
                    by_nfe.setdefault(int(r["nfe"]), []).append(float(r["value"]))
            pts = sorted((k, sum(v) / len(v)) for k, v in by_nfe.items())
            single = is_single(m)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], "--" if single else "-", marker="o" if single else "s",
                    label=f"{m} ({'single-step' if single else 'multistep'})")
        ax.set_xlabel("NFE (network evaluations per sample)")
        ax.set_ylabel(f"{metric} (lower is better)")
        ax.set_title(f"Fig. 3: {metric} vs NFE on {ds}" + (f" ({model})" if model and model != ds else ""))
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    out = [{k: r.get(k, "") for k in ("dataset", "method", "nfe", "metric", "value")} |
           {"single_step": is_single(r["method"])} for r in rows]
    _save(fig, png, out, csv_path)


def training_curve_rows(runs: Sequence[tuple[str, dict]]) -> list[dict]:
    """(path, predictor record config) of trained predictors -> one row per validation point."""
    rows = []
    for path, c in runs:
        for v in c.get("validation") or []:
            rows.append({"predictor": str(path), "solver": c["solver"], "nfe": c["nfe"], "objective": c.get("objective"),
                         "train_seed": c.get("train_seed"), "candidate": v.get("candidate", "snapshot"),
                         "step": v.get("step"), "updates": v.get("updates"), "endpoint_l2": v["endpoint_l2"],
                         "selected": c.get("selected")})
    return rows


def plot_training_curves(runs: Sequence[tuple[str, dict]], png: str | Path, csv_path: str | Path | None = None) -> None:
    """Held-out endpoint L2 of the student's rollout against Adam updates: one panel per (solver, NFE), a line per
    training seed, the neutral predictor dashed, the kept snapshot circled."""
    plt = _plt()
    rows = training_curve_rows(runs)
    if not rows:
        raise AmedValueError("plot_training_curves: no predictor has a validation record (train with holdout > 0)")
    panels = list(dict.fromkeys((r["solver"], r["nfe"]) for r in rows))
    cols = min(4, len(panels))
    fig, axes = plt.subplots(-(-len(panels) // cols), cols, figsize=(4.2 * cols, 3.4 * -(-len(panels) // cols)),
                             squeeze=False)
    for ax, (solver, nfe) in zip(axes.flat, panels):
        sub = [r for r in rows if (r["solver"], r["nfe"]) == (solver, nfe)]
        for pred in dict.fromkeys(r["predictor"] for r in sub):
            pts = [r for r in sub if r["predictor"] == pred and r["candidate"] != "neutral"]
            line, = ax.plot([r["updates"] for r in pts], [r["endpoint_l2"] for r in pts], marker=".",
                            label=f"seed {pts[0]['train_seed'] if pts else '?'}")
            keep = [r for r in pts if r["selected"] in (f"step {r['step']}", "init" if r["step"] == 0 else None)]
            if keep:
                ax.plot([keep[0]["updates"]], [keep[0]["endpoint_l2"]], "o", mfc="none", ms=10, color=line.get_color())
            neutral = [r for r in sub if r["predictor"] == pred and r["candidate"] == "neutral"]
            if neutral:
                ax.axhline(neutral[0]["endpoint_l2"], ls="--", lw=0.8, color="gray")
        name = "AMED-Solver" if solver == "amed" else f"AMED-Plugin ({solver})"
        ax.set_title(f"{name}, NFE {nfe}", fontsize=9)
        ax.set_xlabel("Adam updates")
        ax.set_ylabel("held-out endpoint L2")
        ax.set_yscale("log")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6)
    for ax in list(axes.flat)[len(panels):]:
        ax.axis("off")
    _save(fig, png, rows, csv_path)


def plot_trajectory_pca(pca: dict, png: str | Path, csv_path: str | Path | None = None, t=None, model: str = "",
                        max_components: int = 8, reference: float = PAPER_PROJ_ERROR, solver: str = "Heun, 80 NFE") -> None:
    """Fig. 4: (a) relative projection error onto the top-2 components vs t, with the paper's 8% line;
    (b) cumulative explained variance vs number of components (mean +- std over trajectories)."""
    plt = _plt()
    T = pca["proj_error_mean"].numel()
    x = np.arange(T) if t is None else np.asarray(torch.as_tensor(t, dtype=torch.float64))
    n = pca["proj_error"].shape[0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4.2))
    m, s = pca["proj_error_mean"].numpy() * 100, pca["proj_error_std"].numpy() * 100
    a.plot(x, m, "-o", ms=3, label=f"mean over {n} trajectories")
    a.fill_between(x, np.clip(m - s, 0, None), m + s, alpha=0.25, label="± 1 std")
    a.axhline(reference * 100, color="red", ls="--", label=f"paper's bound ({reference:.0%})")
    if t is not None:
        a.set_xscale("log")
        a.set_xlabel("time t = sigma (log scale)")
    else:
        a.set_xlabel("trajectory point index")
    a.set_ylim(0, max(reference * 100, float(np.max(m + s))) * 1.35)
    a.set_ylabel(f"relative projection error, top-{pca['components']} PCs (%)")
    a.set_title(f"Fig. 4a: ||x_t - x~_t|| / ||x_t|| ({model}, {solver})")
    a.grid(alpha=0.3)
    a.legend(fontsize=8)
    K = min(max_components, pca["explained_mean"].numel())
    k = np.arange(1, K + 1)
    em, es = pca["explained_mean"][:K].numpy() * 100, pca["explained_std"][:K].numpy() * 100
    b.errorbar(k, em, yerr=es, fmt="-o", ms=4, capsize=3, label=f"mean ± std over {n} trajectories")
    b.axhline(100, color="red", ls="--", label="100% (paper: reached with 2 PCs)")
    b.set_xlabel("number of principal components")
    b.set_ylabel("cumulative explained variance (%)")
    b.set_xticks(k)
    b.ticklabel_format(axis="y", useOffset=False, style="plain")
    if K >= 2:
        b.annotate(f"2 PCs: {em[1]:.4f}%", (2, em[1]), textcoords="offset points", xytext=(10, -25), fontsize=8,
                   arrowprops={"arrowstyle": "->", "lw": 0.6})
    b.set_title(f"Fig. 4b: cumulative percent variance ({model})")
    b.grid(alpha=0.3)
    b.legend(fontsize=8, loc="lower right")
    _save(fig, png, pca_rows(pca, t), csv_path)


def plot_relative_alignment(ra: dict, png: str | Path, csv_path: str | Path | None = None, model: str = "") -> None:
    """Fig. 5: relative alignment ||x^B - x^G|| - ||x^S - x^G|| per step (bars per solver) and the searched r_n."""
    plt = _plt()
    rows = alignment_rows(ra)
    keys = ra["solvers"]
    N1 = ra[keys[0]]["alignment"].shape[0]
    steps = np.arange(1, N1 + 1)
    w = 0.8 / len(keys)
    fig, (a, b) = plt.subplots(1, 2, figsize=(14, 5))
    fig.suptitle(f"Fig. 5: greedy grid search on r_n (c_n = 1) vs the r = 0.5 baseline; {model}, N = {N1 + 1}, "
                 f"ground truth Heun ~80 NFE, {ra[keys[0]]['r'].shape[1]} samples")
    for i, key in enumerate(keys):
        res = ra[key]
        al, r = res["alignment"].numpy(), res["r"].numpy()
        a.bar(steps + (i - (len(keys) - 1) / 2) * w, al.mean(1), w, yerr=al.std(1), capsize=2,
              label=LABELS.get(key, key), error_kw={"lw": 0.6})
        b.errorbar(steps + (i - (len(keys) - 1) / 2) * w, r.mean(1), yerr=r.std(1), fmt="o-", ms=4, capsize=2,
                   label=LABELS.get(key, key))
    a.axhline(0, color="black", lw=0.8)
    tl = [f"{n}\n{float(ra['t'][n]):.3g}" for n in steps]
    a.set_xticks(steps, tl)
    a.set_xlabel("step n (time t_n reached)")
    a.set_ylabel("||x^B - x^G|| - ||x^S - x^G||  (L2 over all pixels, data scale)")
    a.set_title("relative alignment (> 0: the search helps), mean ± std")
    a.grid(alpha=0.3, axis="y")
    a.legend(fontsize=7)
    b.axhline(0.5, color="gray", ls="--", label="baseline r = 0.5 (s = sqrt(t_n t_{n+1}))")
    b.set_xticks(steps, tl)
    b.set_xlabel("step n (time t_n reached)")
    b.set_ylabel("searched r_n  (s_n = t_{n+1}^r t_n^(1-r))")
    b.set_title("searched intermediate time (mean ± std over samples)")
    b.grid(alpha=0.3)
    b.legend(fontsize=6, ncol=2, loc="upper left")
    b.set_ylim(0, 1.15)
    _save(fig, png, rows, csv_path)


def plot_coefficients(coef: dict, png: str | Path, csv_path: str | Path | None = None, model: str = "",
                      predictor: str = "") -> None:
    """Fig. 7: learned r_n and c_n per step, mean ± std over samples, against DPM-Solver-2 (r = 0.5, c = 1)."""
    plt = _plt()
    rows = coefficient_rows(coef)
    steps = np.arange(1, coef["r"].shape[0] + 1)
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.2))
    for ax, q, ref, name in ((axes[0], "r", 0.5, "r_n (s_n = t_{n+1}^r t_n^(1-r))"), (axes[1], "c", 1.0, "c_n (direction scale)")):
        v = coef[q].to(torch.float64).numpy()
        ax.errorbar(steps, v.mean(1), yerr=v.std(1), fmt="o-", capsize=4, label=f"learned (mean ± std, {v.shape[1]} samples)")
        ax.axhline(ref, color="red", ls="--", label=f"DPM-Solver-2 ({q} = {ref:g})")
        ax.set_xticks(steps, [f"{n}\n{float(coef['t'][n - 1]):.3g}→{float(coef['t'][n]):.3g}" for n in steps], fontsize=7)
        ax.set_xlabel("step n (interval t_n → t_{n+1})")
        ax.set_ylabel(f"{name} (dimensionless)")
        ax.set_title(f"Fig. 7: learned {q}_n ({model}{', ' + predictor if predictor else ''})", fontsize=9)
        if q == "r":
            ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.subplots_adjust(wspace=0.35)
    _save(fig, png, rows, csv_path)


def image_grid(images: np.ndarray, cols: int | None = None, scale: int | None = None, pad: int = 1) -> np.ndarray:
    """uint8 NHWC images -> one uint8 HWC grid image; nearest-neighbour upscaling (8x8 -> 64x64 by default)."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise AmedValueError(f"image_grid: need uint8 NHWC images, got {images.dtype} of shape {images.shape}")
    n, h, w, ch = images.shape
    scale = scale or max(1, 64 // max(h, w))
    if scale > 1:
        images = images.repeat(scale, axis=1).repeat(scale, axis=2)
        h, w = h * scale, w * scale
    cols = cols or int(math.ceil(math.sqrt(n)))
    rows = int(math.ceil(n / cols))
    out = np.full((rows * (h + pad) + pad, cols * (w + pad) + pad, ch), 255, dtype=np.uint8)
    for i in range(n):
        r, c = divmod(i, cols)
        out[pad + r * (h + pad):pad + r * (h + pad) + h, pad + c * (w + pad):pad + c * (w + pad) + w] = images[i]
    return out


def write_sample_grid(images: np.ndarray, png: str | Path, csv_path: str | Path | None = None, seeds=None,
                      cols: int | None = None, scale: int | None = None) -> None:
    """Write a sample grid PNG (atomically) and a CSV mapping grid cells to sample index and seed."""
    plt = _plt()
    grid = image_grid(images, cols, scale)
    n = len(images)
    cols = cols or int(math.ceil(math.sqrt(n)))
    buf = io.BytesIO()
    plt.imsave(buf, grid[..., 0] if grid.shape[2] == 1 else grid, cmap="gray" if grid.shape[2] == 1 else None,
               vmin=0, vmax=255, format="png")
    atomic_write_bytes(png, buf.getvalue())
    seeds = list(range(n)) if seeds is None else [int(s) for s in seeds]
    write_csv(csv_path or Path(png).with_suffix(".csv"),
              [{"row": i // cols, "col": i % cols, "index": i, "seed": seeds[i]} for i in range(n)])
