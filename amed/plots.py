"""Figure writers of the paper beyond Table 2: quality vs NFE (Fig. 3), trajectory PCA (Fig. 4), relative
alignment (Fig. 5), learned coefficients (Fig. 7), training curves and sample grids. Each puts a PNG (atomically:
temporary file + rename) and the CSV of the plotted numbers next to it; the ``*_rows`` functions are those CSVs'
long rows. matplotlib is imported inside the writers (backend Agg).
"""

from __future__ import annotations

import io
import math
import re
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np
import torch

from ._io import atomic_write_bytes, write_csv
from .errors import AmedValueError

__all__ = ["pca_rows", "alignment_rows", "coefficient_rows", "training_curve_rows", "image_grid",
           "plot_quality_vs_nfe", "plot_training_curves", "plot_trajectory_pca", "plot_relative_alignment",
           "plot_coefficients", "write_sample_grid", "LABELS", "PAPER_PROJ_ERROR", "SINGLE_STEP_PATTERN"]

PAPER_PROJ_ERROR = 0.08  # Fig. 4a: the 2-component relative projection error stays below 8%.
LABELS = {"amed": "AMED-Solver", "dpm2": "DPM-Solver-2", "ddim": "DDIM + plugin", "ipndm": "iPNDM + plugin",
          "dpmpp2m": "DPM-Solver++(2M) + plugin", "dpmpp3m": "DPM-Solver++(3M) + plugin", "unipc": "UniPC + plugin"}
# Method names (Table 2 config keys or labels) treated as single-step solvers in Fig. 3.
SINGLE_STEP_PATTERN = r"ddim|heun|edm|dpm_solver_2|dpm-solver-2|dpm2|amed_solver|amed-solver"


# ---------------------------------------------------------------------------------------------------
# The CSV rows of each figure.
# ---------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------
# PNG writers.
# ---------------------------------------------------------------------------------------------------
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
