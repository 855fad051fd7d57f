"""Predictor training cost on the embedded model: seconds per 1,000 trajectories and where the time goes.

    python benchmarks/bench_training.py [--trajectories 256] [--batch 128] [--threads 1]
                                        [--out results/bench/training.csv]

AMED-Solver, NFE 5, time-uniform schedule, Heun teacher with M = 7 (``amed.train_predictor``), in two
ways: the teacher computed on the fly, and from a teacher cache built first
(``amed.training.build_teacher_cache``; its build is a row of its own).

The model is wrapped in a timing proxy, and the wall time of each run is split into:

* ``teacher_fwd_s``: plain calls without gradient (the teacher's trajectory, Algorithm 1 line 3);
* ``feature_fwd_s``: feature calls (``with_feature``, the student's call at t_n whose bottleneck the
  predictor reads; gradient-free);
* ``student_fwd_s``: plain calls with gradient enabled (the student's mid-point call at s_n, through
  which the loss reaches r_n and a_n);
* ``net_bwd_s``: the backward pass through the network. Each gradient-carrying call has its inputs (x,
  sigma) and output wrapped in identity ``torch.autograd.Function``s whose ``backward`` records a time
  stamp: the gradient reaching the output starts the network's backward, the last gradient leaving an
  input ends it. (Autograd runs ready nodes latest-created first, so nodes of the predictor, created
  before the call, do not run inside that window; nodes created after it run before it.)
* ``cache_read_s``: ``TeacherCache.read``;
* ``other_s``: the rest: predictor forward and backward, loss, optimiser, solver arithmetic, Python.

``network_share`` = (all forward + backward network time) / wall time.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import write_csv  # noqa: E402

import amed  # noqa: E402
from amed.training import build_teacher_cache, default_config  # noqa: E402

SETTINGS = dict(solver="amed", nfe=5, schedule="time_uniform", M=7)
FIELDS = ["run", "trajectories", "batch", "threads", "seconds", "s_per_1000_traj", "network_share",
          "teacher_calls", "teacher_fwd_s", "feature_calls", "feature_fwd_s", "student_calls", "student_fwd_s",
          "backward_calls", "net_bwd_s", "cache_read_s", "other_s"]


class _Mark(torch.autograd.Function):
    """Identity whose backward records the time the gradient passes (``stamp(end, t)``)."""

    @staticmethod
    def forward(ctx, x, stamp, end):
        ctx.stamp, ctx.end = stamp, end
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        ctx.stamp(ctx.end, time.perf_counter())
        return grad, None, None


class _Window:
    """The backward window of one network call: first gradient at an output -> last gradient leaving an input."""

    def __init__(self):
        self.start, self.end = None, None

    def __call__(self, end: bool, t: float):
        if end:
            self.end = t if self.end is None else max(self.end, t)
        elif self.start is None:
            self.start = t


class TimedModel:
    """Forwards ``__call__`` and ``with_feature`` to the model; times forward calls by kind and the backward."""

    def __init__(self, model):
        self.model, self.info = model, model.info
        self.seconds = {"teacher": 0.0, "feature": 0.0, "student": 0.0}
        self.calls = {"teacher": 0, "feature": 0, "student": 0}
        self.windows: list[_Window] = []

    def _timed(self, kind, fn, x, sigma):
        grad = torch.is_grad_enabled() and (x.requires_grad or sigma.requires_grad)
        if kind == "plain":
            kind = "student" if grad else "teacher"
        window = _Window()
        if grad:
            x = _Mark.apply(x, window, True) if x.requires_grad else x
            sigma = _Mark.apply(sigma, window, True) if sigma.requires_grad else sigma
        t = time.perf_counter()
        out = fn(x, sigma)
        self.seconds[kind] += time.perf_counter() - t
        self.calls[kind] += 1
        if grad:
            self.windows.append(window)
            if isinstance(out, tuple):
                return tuple(_Mark.apply(o, window, False) if o.requires_grad else o for o in out)
            return _Mark.apply(out, window, False)
        return out

    def __call__(self, x, sigma):
        return self._timed("plain", self.model, x, sigma)

    def with_feature(self, x, sigma):
        return self._timed("feature", self.model.with_feature, x, sigma)

    def backward(self) -> tuple[float, int]:
        """Seconds inside the network's backward (overlapping windows merged) and the number of windows."""
        spans = sorted((w.start, w.end) for w in self.windows if w.start is not None and w.end is not None)
        total, cur = 0.0, None
        for a, b in spans:
            if cur is not None and a <= cur[1]:
                cur = (cur[0], max(cur[1], b))
                continue
            if cur is not None:
                total += cur[1] - cur[0]
            cur = (a, b)
        if cur is not None:
            total += cur[1] - cur[0]
        return total, len(spans)


def timed_reads(cache):
    """Wrap ``cache.read`` on the instance; returns the dict its time accumulates in."""
    spent = {"s": 0.0}
    read = cache.read

    def wrapper(seeds):
        t = time.perf_counter()
        out = read(seeds)
        spent["s"] += time.perf_counter() - t
        return out

    cache.read = wrapper
    return spent


def _row(name, timed, seconds, n, batch, threads, cache_s=0.0):
    bwd, windows = timed.backward()
    fwd = sum(timed.seconds.values())
    r = {"run": name, "trajectories": n, "batch": batch, "threads": threads, "seconds": seconds,
         "s_per_1000_traj": seconds / n * 1000, "network_share": (fwd + bwd) / seconds,
         "teacher_calls": timed.calls["teacher"], "teacher_fwd_s": timed.seconds["teacher"],
         "feature_calls": timed.calls["feature"], "feature_fwd_s": timed.seconds["feature"],
         "student_calls": timed.calls["student"], "student_fwd_s": timed.seconds["student"],
         "backward_calls": windows, "net_bwd_s": bwd, "cache_read_s": cache_s,
         "other_s": seconds - fwd - bwd - cache_s}
    return {k: round(v, 4) if isinstance(v, float) else v for k, v in r.items()}


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
    shape, n, batch = model.info.shape, args.trajectories, args.batch
    print(f"{args.model}: {SETTINGS}, {n} trajectories, batch {batch}, {threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    amed.train_predictor(TimedModel(model), shape, num_trajectories=1, batch=1, **SETTINGS)  # warm-up
    rows = []

    timed = TimedModel(model)
    t = time.perf_counter()
    amed.train_predictor(timed, shape, num_trajectories=n, batch=batch, **SETTINGS)
    rows.append(_row("teacher-on-the-fly", timed, time.perf_counter() - t, n, batch, threads))

    config = default_config(SETTINGS["solver"], SETTINGS["nfe"], schedule=SETTINGS["schedule"], M=SETTINGS["M"])
    with tempfile.TemporaryDirectory() as root:
        timed = TimedModel(model)
        t = time.perf_counter()
        cache = build_teacher_cache(timed, root, config, shape, n, batch=batch)
        rows.append(_row("cache-build", timed, time.perf_counter() - t, n, batch, threads))
        spent = timed_reads(cache)
        timed = TimedModel(model)
        t = time.perf_counter()
        amed.train_predictor(timed, shape, num_trajectories=n, batch=batch, cache=cache, **SETTINGS)
        rows.append(_row("from-cache", timed, time.perf_counter() - t, n, batch, threads, spent["s"]))

    write_csv(args.out, rows, FIELDS)
    for r in rows:
        print(f"{r['run']:20s} {r['s_per_1000_traj']:9.2f} s/1000 traj  network {r['network_share']:6.1%}  "
              f"teacher {r['teacher_fwd_s']} s ({r['teacher_calls']})  feature {r['feature_fwd_s']} s "
              f"({r['feature_calls']})  student {r['student_fwd_s']} s ({r['student_calls']})  "
              f"backward {r['net_bwd_s']} s ({r['backward_calls']})  cache {r['cache_read_s']} s  "
              f"other {r['other_s']} s")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
