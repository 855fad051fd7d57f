"""AMED-Solver / AMED-Plugin against the baselines on the embedded model at a given NFE.

    python benchmarks/amed_embedded.py [--model digits-8] [--nfe 5] [--trajectories 1024] [--n 512]

For every method: mean L2 error to the ground-truth ODE endpoint (Heun, 500 NFE, same noise) and FD-digits
against the data set; for the AMED methods also the CPU training time. Writes results/bench/amed_<model>_nfe<N>.csv.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import write_csv  # noqa: E402

import amed  # noqa: E402
from amed.features import digit_features  # noqa: E402
from amed.fid import feature_stats, frechet_distance  # noqa: E402
from amed.models.base import to_uint8  # noqa: E402
from amed.models.train_embedded import load_dataset  # noqa: E402

BASELINES = [
    ("ddim", dict(solver="ddim", schedule="polynomial")),
    ("dpm2+afs", dict(solver="dpm2", schedule="polynomial", afs=True)),
    ("heun+afs", dict(solver="heun", schedule="polynomial", afs=True)),
    ("ipndm", dict(solver="ipndm", schedule="polynomial")),
    ("dpmpp3m", dict(solver="dpmpp3m", schedule="logsnr")),
    ("unipc", dict(solver="unipc", schedule="logsnr")),
]


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="digits-8")
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--trajectories", type=int, default=1024)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--amed", nargs="*", default=["amed:polynomial:3", "amed:polynomial:7", "amed:time_uniform:7",
                                                   "ipndm:polynomial:2", "ipndm:polynomial:3"],
                    help="solver:schedule:M[:scale_time[:trajectories]] of the AMED runs")
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    model = amed.load_model(args.model).eval()
    shape = model.info.shape
    noise = amed.randn_seeds(range(args.n), shape)
    truth = amed.sample(model, noise, solver="heun", nfe=500)
    digits = shape == (1, 8, 8)
    if digits:
        ref = to_uint8(torch.from_numpy(load_dataset("digits"))).permute(0, 3, 1, 2).float() / 127.5 - 1
        ref_stats = feature_stats(digit_features(ref).numpy())

    def measure(x):
        err = (x - truth).flatten(1).norm(dim=1).mean().item()
        fd = float("nan")
        if digits:
            q = model.images(x).permute(0, 3, 1, 2).float() / 127.5 - 1
            fd = frechet_distance(*feature_stats(digit_features(q).numpy()), *ref_stats)
        return err, fd

    rows = [{"method": "heun-500 (ground truth)", "nfe": 500, "l2_to_truth": 0.0, "fd_digits": measure(truth)[1],
             "train_seconds": ""}]
    for name, kw in BASELINES:
        if kw["solver"] in ("heun", "dpm2") and (args.nfe + int(kw.get("afs", False))) % 2:
            continue
        err, fd = measure(amed.sample(model, noise, nfe=args.nfe, **kw))
        rows.append({"method": name, "nfe": args.nfe, "l2_to_truth": err, "fd_digits": fd, "train_seconds": ""})
        print(f"{name:28s} L2 {err:.4f}  FD {fd:.2f}", flush=True)
    for spec in args.amed:
        solver, sched, M, *rest = spec.split(":")
        scale_time = float(rest[0]) if rest else 0.0
        trajectories = int(rest[1]) if len(rest) > 1 else args.trajectories
        t = time.perf_counter()
        p = amed.train_predictor(model, shape, solver=solver, nfe=args.nfe, num_trajectories=trajectories,
                                 batch=args.batch, schedule=sched, M=int(M), seed=0, scale_time=scale_time)
        dt = time.perf_counter() - t
        err, fd = measure(amed.sample(model, noise, predictor=p))
        name = (f"{'AMED-Solver' if solver == 'amed' else 'AMED-Plugin[' + solver + ']'} {sched} M={M} "
                f"a={scale_time} traj={trajectories}")
        rows.append({"method": name, "nfe": args.nfe, "l2_to_truth": err, "fd_digits": fd, "train_seconds": round(dt, 1)})
        print(f"{name:48s} L2 {err:.4f}  FD {fd:.2f}  train {dt:.0f}s", flush=True)
    out = args.out or f"results/bench/amed_{args.model}_nfe{args.nfe}.csv"
    write_csv(out, rows)
    print(f"-> {out}")


if __name__ == "__main__":
    main()
