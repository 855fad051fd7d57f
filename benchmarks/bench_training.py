"""Predictor training cost on the embedded model: seconds per 1,000 trajectories and the network's share.

    python benchmarks/bench_training.py [--trajectories 256] [--batch 128] [--threads 1]
                                        [--out results/bench/training.csv]

AMED-Solver, NFE 5, time-uniform schedule, Heun teacher with M = 7 (``amed.train_predictor``), in two
ways: the teacher computed on the fly, and from a teacher cache built first
(``amed.training.build_teacher_cache``; its build is a row of its own). The model is wrapped in a
timing proxy: ``calls``/``net_s`` count the plain calls (teacher) and the feature calls (student).
The network share is forward time only; the backward pass through the network in the student steps
(the loss depends on r through x_mid) is counted outside the network.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import amed  # noqa: E402
from amed.training import build_teacher_cache, default_config  # noqa: E402

SETTINGS = dict(solver="amed", nfe=5, schedule="time_uniform", M=7)


class TimedModel:
    """Forwards ``__call__`` and ``with_feature`` to the model and accumulates the wall time inside them."""

    def __init__(self, model):
        self.model, self.info = model, model.info
        self.seconds = {"plain": 0.0, "feature": 0.0}
        self.calls = {"plain": 0, "feature": 0}

    def _timed(self, kind, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
        self.seconds[kind] += time.perf_counter() - t
        self.calls[kind] += 1
        return out

    def __call__(self, x, sigma):
        return self._timed("plain", self.model, x, sigma)

    def with_feature(self, x, sigma):
        return self._timed("feature", self.model.with_feature, x, sigma)


def _row(name, timed, seconds, n):
    net = timed.seconds["plain"] + timed.seconds["feature"]
    return {"run": name, "trajectories": n, "seconds": round(seconds, 3),
            "s_per_1000_traj": round(seconds / n * 1000, 2),
            "network_share": round(net / seconds, 4),
            "plain_calls": timed.calls["plain"], "plain_s": round(timed.seconds["plain"], 3),
            "feature_calls": timed.calls["feature"], "feature_s": round(timed.seconds["feature"], 3)}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits-8")
    ap.add_argument("--trajectories", type=int, default=256)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on shared cores 2 threads were up to 17x slower; 0: 1 if load > 2)")
    ap.add_argument("--out", default="results/bench/training.csv")
    args = ap.parse_args(argv)
    threads = args.threads or (1 if os.getloadavg()[0] > 2 else torch.get_num_threads())
    torch.set_num_threads(threads)
    model = amed.load_model(args.model).eval()
    shape, n = model.info.shape, args.trajectories
    print(f"{args.model}: {SETTINGS}, {n} trajectories, batch {args.batch}, {threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    amed.train_predictor(TimedModel(model), shape, num_trajectories=1, batch=1, **SETTINGS)  # warm-up
    rows = []

    timed = TimedModel(model)
    t = time.perf_counter()
    amed.train_predictor(timed, shape, num_trajectories=n, batch=args.batch, **SETTINGS)
    rows.append(_row("teacher-on-the-fly", timed, time.perf_counter() - t, n))

    config = default_config(SETTINGS["solver"], SETTINGS["nfe"], schedule=SETTINGS["schedule"], M=SETTINGS["M"])
    with tempfile.TemporaryDirectory() as root:
        timed = TimedModel(model)
        t = time.perf_counter()
        cache = build_teacher_cache(timed, root, config, shape, n, batch=args.batch)
        rows.append(_row("cache-build", timed, time.perf_counter() - t, n))
        timed = TimedModel(model)
        t = time.perf_counter()
        amed.train_predictor(timed, shape, num_trajectories=n, batch=args.batch, cache=cache, **SETTINGS)
        rows.append(_row("from-cache", timed, time.perf_counter() - t, n))

    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    for r in rows:
        print(f"{r['run']:20s} {r['s_per_1000_traj']:9.2f} s/1000 traj  network {r['network_share']:6.1%}  "
              f"plain {r['plain_calls']} calls {r['plain_s']} s  feature {r['feature_calls']} calls {r['feature_s']} s")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
