"""The two training objectives side by side on the embedded model, with training seeds and intervals.

Reuses the teacher caches of a finished default run (`snakemake --cores all`, results/digits/teacher/...) and
trains, for each AMED method of config.yaml and NFE, K predictors per objective (per_interval: the authors'
Algorithm 1; end_to_end: the summed per-interval losses through the whole student trajectory), everything
else as the config says. Each predictor is scored by FD-digits on evaluation seeds 0..N-1 with the same
bootstrap draws as the workflow's cells, and each (method, NFE) pair of objectives is compared with
amed.uncertainty.compare (paired samples, two-level over training seeds).

    OMP_NUM_THREADS=1 python benchmarks/amed_objectives.py --results results --out results/bench/objectives.csv
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import amed  # noqa: E402
from amed.cache import TeacherCache  # noqa: E402
from amed.features import digit_features  # noqa: E402
from amed.fid import load_stats  # noqa: E402
from amed.settings import teacher_settings, train_settings  # noqa: E402
from amed.uncertainty import BOOT_SEED, Reference, fd_bootstrap, mean_interval, verdict  # noqa: E402

from _common import compare_runs, workflow_config, write_with_summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--results", default="results", help="results/ of a finished default run (teacher caches)")
    ap.add_argument("--config", default=str(ROOT / "config.yaml"))
    ap.add_argument("--methods", default="amed_solver,amed_plugin")
    ap.add_argument("--nfe", default="3,5,7,9")
    ap.add_argument("--seeds", type=int, default=3, help="training seeds per objective")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default="results/bench/objectives.csv")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import experiments  # noqa: PLC0415

    cfg = workflow_config(a.config)
    cfg["uncertainty"]["n_boot"] = a.n_boot
    resolved = experiments.methods(cfg)["digits"]
    d = cfg["datasets"]["digits"]
    model = amed.load_model(d["model"])
    shape = model.info.shape
    seeds = list(range(d["num_samples"]))
    noise = amed.randn_seeds(seeds, shape)
    ref = Reference(*load_stats(Path(a.results) / "digits" / "fid_ref.npz"))
    rows, results = [], {}
    for key in a.methods.split(","):
        m = resolved[key]
        for nfe in [int(n) for n in a.nfe.split(",")]:
            w = type("W", (), {"dataset": "digits", "method": key, "nfe": nfe})
            s = experiments.cell_settings(cfg, "digits", key, nfe)
            manifest = Path(a.results).parent / experiments.teacher_input(cfg, w)["teacher"]  # "results/..." paths
            meta = json.loads(manifest.read_text())
            meta.pop("shard_sha256", None)
            cache = TeacherCache(manifest.parent / "cache", meta)
            kw = train_settings(s)
            over = teacher_settings(s)
            for objective in ("per_interval", "end_to_end"):
                kw["objective"] = objective
                for ts in range(a.seeds):
                    t0 = time.perf_counter()
                    p = amed.train_predictor(model, shape, m["solver"], nfe, cache=cache, train_seed=ts,
                                             **kw, **over)
                    secs = time.perf_counter() - t0
                    x = amed.sample(model, noise, predictor=p)
                    f = digit_features(model.images(x).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
                    value = ref.fd_features(f)
                    reps = fd_bootstrap(f, ref, a.n_boot, BOOT_SEED)
                    results.setdefault((key, nfe, objective), []).append((value, reps))
                    rows.append({"method": key, "nfe": nfe, "objective": objective, "train_seed": ts,
                                 "fd_digits": round(value, 4), "selected": p.config.selected,
                                 "heldout_endpoint_l2": round(min(v["endpoint_l2"] for v in p.config.validation), 5),
                                 "updates": p.config.updates, "train_seconds": round(secs, 1)})
                    print(json.dumps(rows[-1]), flush=True)
    summary = []
    for (key, nfe, objective), runs in results.items():
        if objective != "end_to_end":
            continue
        e2e, pi = runs, results[(key, nfe, "per_interval")]
        c, mean_e, mean_p = compare_runs(e2e, pi)
        lo_e, hi_e = mean_interval([v for v, _ in e2e], [r for _, r in e2e])
        lo_p, hi_p = mean_interval([v for v, _ in pi], [r for _, r in pi])
        summary.append({"method": key, "nfe": nfe, "end_to_end": round(mean_e, 3),
                        "end_to_end_ci": f"[{lo_e:.2f}, {hi_e:.2f}]", "per_interval": round(mean_p, 3),
                        "per_interval_ci": f"[{lo_p:.2f}, {hi_p:.2f}]", "difference": round(c.difference, 3),
                        "difference_ci": f"[{c.lo:.2f}, {c.hi:.2f}]",
                        "end_to_end_better": verdict(c)})
        print(json.dumps(summary[-1]), flush=True)
    write_with_summary(a.out, rows, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
