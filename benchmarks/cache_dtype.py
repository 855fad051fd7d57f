"""Does a float16 teacher cache change the trained predictors? (issue: caches at the paper's scale are disk)

For AMED cells of config.yaml (default: AMED-Solver at NFE 5 and the iPNDM plugin at NFE 9), the teacher cache is
built twice, in float32 and in float16 (same seeds, same teacher), K predictors are trained from each with the same
training seeds, and their FD-digits on evaluation seeds 0..N-1 are compared pairwise (amed.uncertainty.compare:
shared bootstrap draws, two-level over training seeds). Also reported: the largest difference between the two
caches' teacher states, and the disk each takes.

    OMP_NUM_THREADS=1 python benchmarks/cache_dtype.py --work /tmp/cache_dtype --out results/bench/cache_dtype.csv
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "workflow" / "scripts"))

import amed  # noqa: E402
from amed.features import digit_features  # noqa: E402
from amed.fid import feature_stats  # noqa: E402
from amed.models.base import to_uint8  # noqa: E402
from amed.models.train_embedded import load_dataset  # noqa: E402
from amed.settings import teacher_settings, train_settings  # noqa: E402
from amed.training import build_teacher_cache, default_config  # noqa: E402
from amed.uncertainty import BOOT_SEED, Reference, fd_bootstrap, verdict  # noqa: E402

from _common import compare_runs, workflow_config, write_with_summary  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", default="amed_solver:5,amed_plugin:9")
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--work", default="/tmp/amed-cache-dtype", help="where the two caches are built")
    ap.add_argument("--out", default="results/bench/cache_dtype.csv")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    import experiments  # noqa: PLC0415

    cfg = workflow_config(ROOT / "config.yaml")
    cfg["uncertainty"]["n_boot"] = a.n_boot
    resolved = experiments.methods(cfg)["digits"]
    d = cfg["datasets"]["digits"]
    model = amed.load_model(d["model"])
    shape = model.info.shape
    noise = amed.randn_seeds(range(d["num_samples"]), shape)
    data = to_uint8(torch.from_numpy(load_dataset("digits")))
    ref = Reference(*feature_stats(digit_features(data.permute(0, 3, 1, 2).float() / 127.5 - 1.0).numpy()))
    rows, summary = [], []
    for cell in a.cells.split(","):
        key, nfe = cell.split(":")
        nfe, m = int(nfe), resolved[key]
        s = experiments.cell_settings(cfg, "digits", key, nfe)
        over, kw = teacher_settings(s), train_settings(s)
        conf = default_config(m["solver"], nfe, **over)
        runs, caches = {}, {}
        for dtype in ("float32", "float16"):
            caches[dtype] = build_teacher_cache(model, Path(a.work) / f"{key}-nfe{nfe}-{dtype}", conf, shape,
                                                kw["num_trajectories"], seed=kw["seed"], batch=kw["batch"],
                                                dtype=dtype, holdout=kw["holdout"])
            for ts in range(a.seeds):
                p = amed.train_predictor(model, shape, m["solver"], nfe, cache=caches[dtype], train_seed=ts, **kw, **over)
                x = amed.sample(model, noise, predictor=p)
                f = digit_features(model.images(x).permute(0, 3, 1, 2).float() / 127.5 - 1).numpy()
                value = ref.fd_features(f)
                runs.setdefault(dtype, []).append((value, fd_bootstrap(f, ref, a.n_boot, BOOT_SEED)))
                rows.append({"method": key, "nfe": nfe, "cache_dtype": dtype, "train_seed": ts, "fd_digits": round(value, 4),
                             "selected": p.config.selected})
                print(json.dumps(rows[-1]), flush=True)
        seeds = caches["float32"].meta["first_seed"] + np.arange(caches["float32"].meta["num_seeds"])
        t32, t16 = caches["float32"].read(seeds.tolist()), caches["float16"].read(seeds.tolist())
        c, mean16, mean32 = compare_runs(runs["float16"], runs["float32"])
        disk = {k: sum(p.stat().st_size for p in Path(v.root).glob("shard-*.npy")) for k, v in caches.items()}
        summary.append({"method": key, "nfe": nfe, "fd_float32": round(mean32, 3),
                        "fd_float16": round(mean16, 3),
                        "difference": round(c.difference, 3), "difference_ci": f"[{c.lo:.2f}, {c.hi:.2f}]",
                        "verdict_float16_lower": verdict(c),
                        "max_abs_state_difference": float((t32 - t16).abs().max()),
                        "bytes_float32": disk["float32"], "bytes_float16": disk["float16"]})
        print(json.dumps(summary[-1]), flush=True)
    write_with_summary(a.out, rows, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
