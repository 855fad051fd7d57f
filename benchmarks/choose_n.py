"""How many evaluated samples resolve a ~17% gap in FD-digits? (the paper's smallest audited gap: AMED-Plugin
2.63 vs iPNDM 3.17 at NFE 9 on CIFAR-10).

Two training-free solvers whose FD-digits differ by about that much on the embedded model are sampled on seeds
0..N_max-1; for each N the paired bootstrap interval of their difference (the workflow's draws, shared
resamples) and the unpaired intervals of each, and the noise floor (N real digits against the full reference).
The default N is the smallest one whose paired interval excludes 0 with room to spare.

    OMP_NUM_THREADS=1 python benchmarks/choose_n.py --out results/bench/choose_n.csv
"""

from __future__ import annotations

import argparse
import json
import sys

import torch

import amed
from amed.features import digit_features
from amed.fid import feature_stats
from amed.models.base import to_uint8
from amed.models.train_embedded import load_dataset
from amed.uncertainty import BOOT_SEED, Reference, compare, fd_bootstrap, noise_floor, normal_interval, verdict

from _common import write_csv

PAIRS = {  # (better, worse): sample() settings; FD-digits ~15.4 vs ~18.4 at 512 samples (NOTES.md, Table 2)
    "dpmpp3m": dict(solver="dpmpp3m", nfe=5, schedule="logsnr", solver_options={"max_order": 3, "thresholding": False}),
    "unipc": dict(solver="unipc", nfe=5, schedule="logsnr", solver_options={"max_order": 3, "thresholding": False}),
}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ns", default="128,256,512,1024,2048")
    ap.add_argument("--n-boot", type=int, default=1000)
    ap.add_argument("--out", default="results/bench/choose_n.csv")
    a = ap.parse_args(argv)
    torch.set_num_threads(1)
    ns = [int(n) for n in a.ns.split(",")]
    model = amed.load_model("digits-8")
    data = to_uint8(torch.from_numpy(load_dataset("digits")))
    real = digit_features(data.permute(0, 3, 1, 2).float() / 127.5 - 1.0).numpy()
    ref = Reference(*feature_stats(real))
    noise = amed.randn_seeds(range(max(ns)), model.info.shape)
    feats = {}
    for name, kw in PAIRS.items():
        x = torch.cat([amed.sample(model, noise[i:i + 512], **kw) for i in range(0, len(noise), 512)])
        feats[name] = digit_features(model.images(x).permute(0, 3, 1, 2).float() / 127.5 - 1.0).numpy()
    rows = []
    (a_name, fa), (b_name, fb) = feats.items()
    for n in ns:
        va, vb = ref.fd_features(fa[:n]), ref.fd_features(fb[:n])
        ra, rb = fd_bootstrap(fa[:n], ref, a.n_boot, BOOT_SEED), fd_bootstrap(fb[:n], ref, a.n_boot, BOOT_SEED)
        c = compare([va], [ra], [vb], [rb])
        lo_a, hi_a = normal_interval(va, ra)
        lo_b, hi_b = normal_interval(vb, rb)
        floor = noise_floor(real, ref, n) if n <= len(real) else (float("nan"), float("nan"))
        rows.append({"n": n, a_name: round(va, 3), f"{a_name}_ci": f"[{lo_a:.2f}, {hi_a:.2f}]", b_name: round(vb, 3),
                     f"{b_name}_ci": f"[{lo_b:.2f}, {hi_b:.2f}]", "relative_gap": round((vb - va) / vb, 3),
                     "paired_difference": round(c.difference, 3), "paired_ci": f"[{c.lo:.2f}, {c.hi:.2f}]",
                     "paired_half_width_rel": round((c.hi - c.lo) / 2 / vb, 3), "verdict": verdict(c),
                     "noise_floor": round(floor[0], 3), "noise_floor_sd": round(floor[1], 3)})
        print(json.dumps(rows[-1]), flush=True)
    write_csv(a.out, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
