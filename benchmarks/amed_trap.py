"""AMED-Solver's r -> 0 trap and its even-NFE dip on the embedded model (issue 14), with seeds and intervals.

Settings of config.yaml's amed_solver cell unless told: digits-8, time_uniform rho=1, Heun teacher M=7,
scale_dir 0.01, scale_time 0.2, 1,024 training trajectories + 256 held out (data seed 0), batch 16, 80 steps,
lr 5e-3, per_interval objective, held-out best snapshot; AFS at odd NFE (the authors' rule). FD-digits on
evaluation seeds 0..511 against ``--ref`` (``amed fid-ref --out ref.npz``), with the shared bootstrap draws.

Parts (``--parts``, comma-separated):

* ``landscape``: the per-interval loss ||x_{n+1} - y_{n+1}||^2 of AMED-Solver as a function of a constant r
  (c = a = 1), each interval started from the teacher's state, on the 256 held-out trajectories.
* ``grid``: FD-digits of constant per-interval r (c = a = 1) over a grid: the ceiling of a per-interval r.
* ``recipes``: train ``--seeds`` predictors per (NFE, recipe) and compare ``interval_search`` with the
  authors' start (amed.uncertainty.compare: paired samples, two-level over training seeds).
* ``even``: the same runs at NFE 3..10 (even NFE: no AFS, the grid of the odd NFE below) and each even NFE
  against the odd NFE below it, per recipe.
* ``even_fix``: two ways to keep AFS at an even NFE 2K, on the (K + 2)-point time_uniform grid g, each against
  the plain even NFE and the odd NFE below:
  ``afs_head``: the AFS Euler step g0 -> g1 (0 NFE; x1 = x0 + (g1 - g0) x0 / sqrt(1 + g0^2)), then AMED-Solver
  without AFS on K intervals from g1 (a time_uniform grid with sigma_max = g1; trained on a teacher from g1);
  ``euler_tail``: AMED-Solver with AFS on K intervals down to g_K (sigma_min = g_K; 2K - 1 NFE), then one
  Euler step g_K -> sigma_min (1 NFE).

Runs are kept under ``--work`` (one JSON and one replicate file per trained predictor), so an interrupted
benchmark resumes. Teacher caches are built there too (about a minute each on one CPU thread).

    amed fid-ref --out ref.npz
    OMP_NUM_THREADS=1 python benchmarks/amed_trap.py --ref ref.npz --work trap-work --out results/bench/trap
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch

import amed  # noqa: E402
from amed.features import digit_features  # noqa: E402
from amed.fid import load_stats  # noqa: E402
from amed.plugin import amed_interval, init_state, student_grid, student_solver  # noqa: E402
from amed.sampling import ModelCall  # noqa: E402
from amed.schedules import SCHEDULES, _vp_betas  # noqa: E402
from amed.training import build_teacher_cache, default_config, training_seeds  # noqa: E402
from amed.uncertainty import BOOT_SEED, Reference, compare, fd_bootstrap, mean_interval, verdict  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import write_csv  # noqa: E402

TRAIN = dict(num_trajectories=1024, holdout=256, batch=16, steps=80, lr=5e-3, seed=0, select="best")
LANDSCAPE_R = (0.005, 0.01, 0.02, 0.03, 0.05, 0.07, 0.09, 0.11, 0.13, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5,
               0.55, 0.6, 0.7, 0.8, 0.9)
GRID_R = ((0.005, 0.02, 0.05, 0.09, 0.11), (0.35, 0.4, 0.45, 0.5), (0.07, 0.09, 0.11))  # NFE 5, per interval


VARIANTS = ("plain", "afs_head", "euler_tail")


def _time_uniform_sub(num_points: int, sigma_min: float, sigma_max: float, rho: float = 1.0, **_) -> torch.Tensor:
    """Uniform in the VP time of the model's full range (0.002 .. 80) between sigma_max and sigma_min: the
    sub-grids of time_uniform (library time_uniform refits its VP-SDE to the range given, so its sub-ranges are
    other grids). Registered for this benchmark only; rho = 1."""
    beta_d, beta_min = _vp_betas(0.002, 80.0)
    tau = lambda s: (-beta_min + math.sqrt(beta_min**2 + 2 * beta_d * math.log1p(s * s))) / beta_d  # noqa: E731
    u = torch.linspace(0, 1, num_points, dtype=torch.float64)
    t = tau(sigma_max) + u * (tau(sigma_min) - tau(sigma_max))
    return torch.sqrt(torch.expm1(0.5 * beta_d * t**2 + beta_min * t))


SCHEDULES.setdefault("time_uniform_sub", _time_uniform_sub)


def settings(nfe: int, variant: str = "plain", M: int = 7) -> dict:
    """AMED-Solver's settings at ``nfe`` (the AMED part's own NFE and range under an even-NFE variant)."""
    s = dict(schedule="time_uniform", rho=1.0, teacher="heun", M=M, scale_dir=0.01, scale_time=0.2,
             afs=nfe % 2 == 1)
    if variant == "plain":
        return s
    if nfe % 2:
        raise ValueError(f"variant {variant!r} is for even NFE, got {nfe}")
    g = amed.get_schedule("time_uniform", nfe // 2 + 2, 0.002, 80.0, 1.0)
    if variant == "afs_head":  # the AMED grid is g[1:]
        return {**s, "schedule": "time_uniform_sub", "afs": False, "sigma_max": float(g[1])}
    if variant == "euler_tail":  # the AMED grid is g[:-1]
        return {**s, "schedule": "time_uniform_sub", "afs": True, "sigma_min": float(g[-2])}
    raise ValueError(f"variant must be one of {list(VARIANTS)}, got {variant!r}")


def amed_nfe(nfe: int, variant: str) -> int:
    return nfe - 1 if variant == "euler_tail" else nfe


class IntervalConstant(torch.nn.Module):
    """A fixed (r, c, a) per interval of the student grid (matched by t_cur): the ceiling of a per-interval r."""

    reads_features = False

    def __init__(self, config, r, c=None, a=None):
        super().__init__()
        self.config, self.grid = config, student_grid(config)
        n = self.grid.numel() - 1
        self.r, self.c, self.a = list(r), list(c or [1.0] * n), list(a or [1.0] * n)

    def forward(self, h, t_cur, t_next):
        i = int((self.grid - float(t_cur.reshape(-1)[0])).abs().argmin())
        one = torch.ones(h.shape[0], dtype=torch.float64, device=h.device)
        return self.r[i] * one, self.c[i] * one, self.a[i] * one


class Bench:
    def __init__(self, a):
        torch.set_num_threads(1)
        self.a = a
        self.work = Path(a.work)
        self.model = amed.load_model("digits-8")
        self.shape = self.model.info.shape
        self.ref = Reference(*load_stats(a.ref))
        self.noise = amed.randn_seeds(range(a.eval), self.shape)

    def cache(self, nfe: int, variant: str = "plain"):
        cfg = default_config("amed", amed_nfe(nfe, variant), **settings(nfe, variant))
        root = self.work / "cache" / (f"amed-N{cfg.num_points}-M7" if variant == "plain" else
                                      f"amed-nfe{nfe}-{variant}-M7")
        t0 = time.perf_counter()
        c = build_teacher_cache(self.model, root, cfg, self.shape, TRAIN["num_trajectories"], seed=TRAIN["seed"],
                                batch=TRAIN["batch"], holdout=TRAIN["holdout"])
        if time.perf_counter() - t0 > 1:
            print(f"teacher cache N={cfg.num_points}: {time.perf_counter() - t0:.0f} s", flush=True)
        return c

    def config(self, nfe: int):
        cfg = default_config("amed", nfe, **settings(nfe))
        cfg.model, cfg.shape = self.model.info.name, tuple(self.shape)
        return cfg

    def features(self, predictor, variant: str = "plain") -> np.ndarray:
        x = self.sample(predictor, variant)
        return digit_features(self.model.images(x).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()

    @torch.no_grad()
    def sample(self, predictor, variant: str = "plain") -> torch.Tensor:
        """Samples of a trained predictor, with the even-NFE variant's extra step around it."""
        noise, c = self.noise, predictor.config
        if variant == "afs_head":  # the AFS Euler step 80 -> sigma_max of the predictor, no network call
            t0 = 80.0
            x1 = noise * t0 * (1 + (c.sigma_max - t0) / math.sqrt(1 + t0 * t0))
            noise = x1 / c.sigma_max
        x = amed.sample(self.model, noise, predictor=predictor)
        if variant == "euler_tail":  # one Euler step sigma_min of the predictor -> 0.002
            t = torch.full((x.shape[0],), c.sigma_min, dtype=torch.float64)
            x = x + (0.002 - c.sigma_min) * (x - self.model(x, t)) / c.sigma_min
        return x

    def run(self, nfe: int, recipe: str, ts: int, variant: str = "plain") -> dict:
        """One trained predictor, scored (cached under --work/runs)."""
        name = f"nfe{nfe}-{recipe}-s{ts}" + ("" if variant == "plain" else f"-{variant}")
        path = self.work / "runs" / f"{name}.json"
        if path.exists():
            return {"variant": "plain", **json.loads(path.read_text())}
        cache = self.cache(nfe, variant)
        t0 = time.perf_counter()
        p = amed.train_predictor(self.model, self.shape, "amed", amed_nfe(nfe, variant), cache=cache, train_seed=ts,
                                 recipe=recipe, **TRAIN, **settings(nfe, variant))
        secs = time.perf_counter() - t0
        f = self.features(p, variant)
        value = self.ref.fd_features(f)
        reps = fd_bootstrap(f, self.ref, self.a.n_boot, BOOT_SEED)
        coef = amed.amed_coefficients(self.model, self.noise[:256], p)
        row = {"nfe": nfe, "variant": variant, "afs": p.config.afs, "recipe": recipe, "train_seed": ts, "fd_digits": round(value, 4),
               "selected": p.config.selected, "updates": p.config.updates, "train_seconds": round(secs, 1),
               "heldout_endpoint_l2": round(min(v["endpoint_l2"] for v in p.config.validation), 5),
               "r": " ".join(f"{float(v):.3f}" for v in coef["r"].mean(1)),
               "a": " ".join(f"{float(v):.3f}" for v in coef["a"].mean(1)),
               "searched_bias": " ".join(f"{b:g}" for b in p.config.search["bias"]) if p.config.search else ""}
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path.with_suffix(".npy"), reps)
        path.write_text(json.dumps(row))
        print(json.dumps(row), flush=True)
        return row

    def reps(self, row) -> np.ndarray:
        variant = row.get("variant", "plain")
        return np.load(self.work / "runs" / (f"nfe{row['nfe']}-{row['recipe']}-s{row['train_seed']}" +
                                             ("" if variant == "plain" else f"-{variant}") + ".npy"))

    # ---------------------------------------------------------------------------------------- parts
    @torch.no_grad()
    def landscape(self, nfe: int = 5) -> list[dict]:
        cfg = self.config(nfe)
        cache = self.cache(nfe)
        seeds = training_seeds(TRAIN["seed"], TRAIN["num_trajectories"] + TRAIN["holdout"])[TRAIN["num_trajectories"]:]
        target = cache.read(seeds)
        noise = amed.randn_seeds(seeds, self.shape)
        grid, solver = student_grid(cfg), student_solver(cfg)
        B, rows = target.shape[1], []
        for n, r in itertools.product(range(grid.numel() - 1), LANDSCAPE_R):
            model = ModelCall(self.model, afs=cfg.afs and n == 0, features=True)
            x = noise * float(grid[0]) if n == 0 else target[n]
            x_next, _, _ = amed_interval(cfg, solver, IntervalConstant(cfg, [r] * (grid.numel() - 1)), x,
                                         grid[n].expand(B), grid[n + 1].expand(B), model, init_state(cfg, solver))
            loss = float((x_next - target[n + 1]).square().flatten(1).sum(1).mean())
            rows.append({"nfe": nfe, "interval": n, "t_cur": round(float(grid[n]), 4),
                         "t_next": round(float(grid[n + 1]), 4), "r": r, "loss": round(loss, 5)})
        return rows

    def grid(self) -> list[dict]:
        cfg = self.config(5)
        rows = []
        for r in itertools.product(*GRID_R):
            rows.append({"nfe": 5, "r0": r[0], "r1": r[1], "r2": r[2],
                         "fd_digits": round(self.ref.fd_features(self.features(IntervalConstant(cfg, r))), 4)})
        rows.sort(key=lambda row: row["fd_digits"])
        return rows

    def summary(self, runs: list[dict]) -> list[dict]:
        out = []
        key = lambda r: (r["nfe"], r.get("variant", "plain"), r["recipe"])  # noqa: E731
        for (nfe, variant, recipe), group in itertools.groupby(sorted(runs, key=key), key=key):
            group = list(group)
            v = np.array([r["fd_digits"] for r in group])
            lo, hi = mean_interval(v, np.stack([self.reps(r) for r in group]))
            out.append({"nfe": nfe, "variant": variant, "afs": group[0]["afs"], "recipe": recipe, "seeds": len(v),
                        "fd_mean": round(float(v.mean()), 3), "fd_sd": round(float(v.std(ddof=1)), 3),
                        "ci95": f"[{lo:.2f}, {hi:.2f}]", "per_seed": " ".join(f"{x:.2f}" for x in v)})
        return out

    def compare(self, a_runs, b_runs, what_a: str, what_b: str) -> dict:
        c = compare([r["fd_digits"] for r in a_runs], np.stack([self.reps(r) for r in a_runs]),
                    [r["fd_digits"] for r in b_runs], np.stack([self.reps(r) for r in b_runs]))
        return {"a": what_a, "b": what_b, "difference_a_minus_b": round(c.difference, 3),
                "ci95": f"[{c.lo:.2f}, {c.hi:.2f}]", "wins_a": f"{c.wins}/{c.pairs}", "a_better": verdict(c)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ref", required=True, help="digits reference statistics (amed fid-ref --out ref.npz)")
    ap.add_argument("--work", required=True, help="teacher caches and finished runs (reused on a rerun)")
    ap.add_argument("--out", default="results/bench/trap", help="folder of the CSV tables")
    ap.add_argument("--parts", default="landscape,grid,recipes,even")
    ap.add_argument("--nfe", default="3,5,7,9", help="NFE of the recipes part")
    ap.add_argument("--even-nfe", default="3,4,5,6,7,8,9,10", help="NFE of the even part")
    ap.add_argument("--recipes", default="authors,interval_search")
    ap.add_argument("--even-recipes", default="authors,interval_search")
    ap.add_argument("--fix-nfe", default="6,8", help="even NFE of the even_fix part")
    ap.add_argument("--fix-recipes", default="authors,interval_search")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per cell")
    ap.add_argument("--eval", type=int, default=512, help="evaluation seeds 0..N-1")
    ap.add_argument("--n-boot", type=int, default=1000)
    a = ap.parse_args(argv)
    b = Bench(a)
    out = Path(a.out)
    parts = a.parts.split(",")
    if "landscape" in parts:
        write_csv(out / "landscape.csv", b.landscape(5))
    if "grid" in parts:
        write_csv(out / "grid.csv", b.grid())
    runs: list[dict] = []
    wanted = set()
    if "recipes" in parts:
        wanted |= {(n, r) for n in map(int, a.nfe.split(",")) for r in a.recipes.split(",")}
    if "even" in parts:
        wanted |= {(n, r) for n in map(int, a.even_nfe.split(",")) for r in a.even_recipes.split(",")}
    for nfe, recipe in sorted(wanted):
        runs += [b.run(nfe, recipe, ts) for ts in range(a.seeds)]
    fixes = []
    if "even_fix" in parts:
        fixes = [(n, r, v) for n in map(int, a.fix_nfe.split(",")) for r in a.fix_recipes.split(",")
                 for v in VARIANTS[1:]]
        for nfe, recipe, variant in fixes:
            runs += [b.run(nfe, recipe, ts, variant) for ts in range(a.seeds)]
        for nfe, recipe, _ in fixes:  # the plain even NFE and the odd NFE below, to compare with
            for n in (nfe, nfe - 1):
                if (n, recipe) not in wanted:
                    wanted.add((n, recipe))
                    runs += [b.run(n, recipe, ts) for ts in range(a.seeds)]
    if not runs:
        return 0
    write_csv(out / "runs.csv", runs)
    write_csv(out / "summary.csv", b.summary(runs))
    cell = lambda n, r, v="plain": [x for x in runs if x["nfe"] == n and x["recipe"] == r  # noqa: E731
                                    and x.get("variant", "plain") == v]
    rows = []
    for nfe in sorted({n for n, _ in wanted}):
        if cell(nfe, "interval_search") and cell(nfe, "authors"):
            rows.append({"nfe": nfe, **b.compare(cell(nfe, "interval_search"), cell(nfe, "authors"),
                                                 "interval_search", "authors")})
    for nfe, recipe in sorted(wanted):
        if nfe % 2 == 0 and (nfe - 1, recipe) in wanted:
            rows.append({"nfe": nfe, **b.compare(cell(nfe, recipe), cell(nfe - 1, recipe),
                                                 f"{recipe} NFE {nfe}", f"{recipe} NFE {nfe - 1}")})
    for nfe, recipe, variant in fixes:
        for n, what in ((nfe, "plain"), (nfe - 1, "plain")):
            rows.append({"nfe": nfe, **b.compare(cell(nfe, recipe, variant), cell(n, recipe, what),
                                                 f"{recipe} NFE {nfe} {variant}", f"{recipe} NFE {n} {what}")})
    if rows:
        write_csv(out / "compare.csv", rows)
        for row in rows:
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
