"""Time spent outside the network per solver step, relative to one network call, for every solver.

    python benchmarks/solver_overhead.py [--model digits-8|convnet] [--batches 1,64,256] [--repeats 5]
                                         [--device cpu] [--threads 1] [--out results/bench/solver_overhead.csv]

Every solver of Table 2 and the AMED methods (AMED-Solver, AMED-Plugin on iPNDM and DPM-Solver++(3M),
with an untrained predictor: the cost is the same as a trained one) sample one batch, with the network
wrapped in a timer. "Outside" is wall time minus time inside the network: the solver's arithmetic and,
for AMED, the predictor (features -> r, c, a) too, i.e. everything sampling adds to the network.

Columns, per (method, batch, backend), over ``--repeats`` runs; each run gives its ratios from one
sampling pass (outside and network measured together, so slow phases of a shared machine mostly cancel),
and the table reports their minimum and median:

* ``step_ratio_*``: outside time per step / time of one network call (the issue's ratio);
* ``overhead_*``: outside time / network time of the whole run (solver + predictor overhead as a fraction
  of network time; equals the step ratio for one call per step, half of it for two).

``backend`` is the path of the solver arithmetic (``amed.ops.backend``): on CUDA every method runs twice,
``fused`` (Triton ``kernels.lincomb``) and ``unfused`` (plain torch, ``amed.ops.use_fused(False)``),
alternating within each repeat; on CPU there is no fused path and the backend is ``torch``. On CUDA
the device is synchronised around every network call, so queued solver kernels count as outside.
The default model is the embedded ``digits-8`` (``amed.load_model``); ``convnet`` is a synthetic
EDM-preconditioned conv net at 3 x res x res (~0.3 M parameters).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import write_csv  # noqa: E402

import amed  # noqa: E402
from amed import ops  # noqa: E402
from amed.models.base import Denoiser, ModelInfo  # noqa: E402
from amed.plugin import student_grid  # noqa: E402
from amed.predictor import AMEDPredictor  # noqa: E402
from amed.training import default_config  # noqa: E402

FIELDS = ["model", "method", "batch", "device", "backend", "threads", "steps", "calls", "repeats",
          "network_ms_per_call", "outside_ms_per_step", "step_ratio_min", "step_ratio_median",
          "overhead_min", "overhead_median"]


class ConvNet(Denoiser):
    """conv 3->64, 4 residual conv blocks at 32x32 and 16x16, hooked 8x8 bottleneck, conv -> 3."""

    def __init__(self, res: int):
        super().__init__()
        self.info = ModelInfo(name="bench-convnet", shape=(3, res, res))
        c = 64
        self.inp = torch.nn.Conv2d(4, c, 3, padding=1)
        self.b1 = torch.nn.Sequential(torch.nn.GroupNorm(8, c), torch.nn.SiLU(), torch.nn.Conv2d(c, c, 3, padding=1))
        self.down = torch.nn.Conv2d(c, c, 3, stride=2, padding=1)
        self.b2 = torch.nn.Sequential(torch.nn.GroupNorm(8, c), torch.nn.SiLU(), torch.nn.Conv2d(c, c, 3, padding=1))
        self.mid = torch.nn.AdaptiveAvgPool2d(8)
        self.up = torch.nn.Upsample(scale_factor=2)
        self.out = torch.nn.Conv2d(c, 3, 3, padding=1)

    def feature_module(self):
        return self.mid

    def denoise(self, x, sigma):
        s = sigma.view(-1, 1, 1, 1).to(x.dtype)
        c_in, c_skip, c_out = 1 / (s**2 + 0.25).sqrt(), 0.25 / (s**2 + 0.25), 0.5 * s / (s**2 + 0.25).sqrt()
        h = self.inp(torch.cat([c_in * x, (s.log() / 4).expand(-1, 1, *x.shape[2:])], 1))
        h = h + self.b1(h)
        d = self.down(h)
        d = d + self.b2(d)
        _ = self.mid(d)
        h = h + self.up(d)
        return c_skip * x + c_out * self.out(h)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


class Timed:
    """Wraps the network and accumulates the wall time spent inside it (device synchronised around calls)."""

    def __init__(self, net, device):
        self.net, self.device, self.seconds, self.calls = net, device, 0.0, 0
        self.info = net.info

    def _timed(self, fn, *a):
        _sync(self.device)
        t = time.perf_counter()
        out = fn(*a)
        _sync(self.device)
        self.seconds += time.perf_counter() - t
        self.calls += 1
        return out

    def __call__(self, x, sigma):
        return self._timed(self.net, x, sigma)

    def with_feature(self, x, sigma):
        return self._timed(self.net.with_feature, x, sigma)


CASES = [
    ("ddim", dict(solver="ddim", nfe=10)),
    ("heun", dict(solver="heun", nfe=10)),
    ("dpm2", dict(solver="dpm2", nfe=10)),
    ("dpmpp2m", dict(solver="dpmpp2m", nfe=10, schedule="logsnr")),
    ("dpmpp3m", dict(solver="dpmpp3m", nfe=10, schedule="logsnr")),
    ("dpmpp3m+threshold", dict(solver="dpmpp3m", nfe=10, schedule="logsnr", solver_options={"thresholding": True})),
    ("unipc", dict(solver="unipc", nfe=10, schedule="logsnr")),
    ("ipndm", dict(solver="ipndm", nfe=10)),
    ("amed-solver", dict(amed="amed")),
    ("amed-plugin-ipndm", dict(amed="ipndm")),
    ("amed-plugin-dpmpp3m", dict(amed="dpmpp3m")),
]


def make_run(net, noise, kw):
    """(run(denoiser), steps) for one method on this batch; AMED methods get an untrained predictor."""
    if "amed" in kw:
        cfg = default_config(kw["amed"], 9, scale_time=0.1)
        cfg.shape, cfg.model = tuple(noise.shape[1:]), net.info.name
        predictor = AMEDPredictor(cfg).to(noise.device)
        return (lambda m: amed.sample(m, noise, predictor=predictor)), student_grid(cfg).numel() - 1
    p = amed.plan(kw["solver"], kw["nfe"], kw.get("schedule", "polynomial"))
    return (lambda m: amed.sample(m, noise, **kw)), p.steps


@torch.no_grad()
def once(net, run, device):
    """One sampling pass: (outside seconds, network seconds, network calls)."""
    timed = Timed(net, device)
    _sync(device)
    t = time.perf_counter()
    run(timed)
    _sync(device)
    total = time.perf_counter() - t
    return total - timed.seconds, timed.seconds, timed.calls


def measure(net, noise, kw, repeats, backends, device):
    """Per backend: the per-run ratios of ``repeats`` runs, backends alternating within each repeat."""
    run, steps = make_run(net, noise, kw)
    runs = {b: [] for b in backends}
    for b in backends:  # warm-up (first-call allocations, lazy kernel imports)
        with ops.use_fused(b == "fused"):
            once(net, run, device)
    for _ in range(repeats):
        for b in backends:
            with ops.use_fused(b == "fused"):
                runs[b].append(once(net, run, device))
    out = {}
    for b, rs in runs.items():
        calls = rs[0][2]
        step = [(o / steps) / (n / calls) for o, n, _ in rs]
        share = [o / n for o, n, _ in rs]
        out[b] = dict(steps=steps, calls=calls, repeats=repeats,
                      network_ms_per_call=statistics.median(n / calls for _, n, _ in rs) * 1e3,
                      outside_ms_per_step=statistics.median(o / steps for o, _, _ in rs) * 1e3,
                      step_ratio_min=min(step), step_ratio_median=statistics.median(step),
                      overhead_min=min(share), overhead_median=statistics.median(share))
    return out


def load(name: str, res: int, device):
    if name == "convnet":
        torch.manual_seed(0)
        return ConvNet(res).eval().to(device)
    return amed.load_model(name).eval().to(device)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits-8", help="a registered model (default: embedded digits-8) or 'convnet'")
    ap.add_argument("--res", type=int, default=32, help="resolution of the convnet model")
    ap.add_argument("--batches", default="1,64,256")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (default 1: shared cores)")
    ap.add_argument("--methods", default=None, help="comma-separated subset of the methods (default: all)")
    ap.add_argument("--out", default="results/bench/solver_overhead.csv")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        raise SystemExit(f"--repeats must be >= 1, got {args.repeats}")
    cases = CASES
    if args.methods:
        wanted = args.methods.split(",")
        unknown = sorted(set(wanted) - {n for n, _ in CASES})
        if unknown:
            raise SystemExit(f"unknown method(s) {unknown}; choose from {[n for n, _ in CASES]}")
        cases = [c for c in CASES if c[0] in wanted]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    net = load(args.model, args.res, device)
    probe = torch.zeros(ops.FUSED_MIN_NUMEL, device=device)  # large enough for ops.lincomb to fuse
    backends = ["fused", "unfused"] if device.type == "cuda" else ["torch"]
    if "fused" in backends:
        with ops.use_fused(True):
            if ops.backend(probe) != "fused":
                print("solver_overhead: the fused kernel is unavailable (no triton); measuring unfused only")
                backends = ["unfused"]
    print(f"{args.model} on {device}: backends {backends}, {args.threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        noise = amed.randn_seeds(range(batch), net.info.shape, device=device)
        once(net, make_run(net, noise, dict(solver="ddim", nfe=2))[0], device)  # warm-up
        for name, kw in cases:
            for b, r in measure(net, noise, kw, args.repeats, backends, device).items():
                if b == "fused" and not ops._worth_fusing(noise, 2):
                    b = "fused-auto"  # fused allowed, but ops.lincomb keeps updates this small in plain torch
                rows.append({"model": args.model, "method": name, "batch": batch, "device": device.type,
                             "backend": b, "threads": args.threads,
                             **{k: (round(v, 6) if isinstance(v, float) else v) for k, v in r.items()}})
                print(f"{name:20s} b={batch:<4d} {b:8s} network {r['network_ms_per_call']:9.3f} ms/call  "
                      f"outside {r['outside_ms_per_step']:8.3f} ms/step  step ratio min {r['step_ratio_min']:.3%} "
                      f"median {r['step_ratio_median']:.3%}  overhead median {r['overhead_median']:.3%}", flush=True)
    write_csv(args.out, rows, FIELDS)
    big = max(r["batch"] for r in rows)
    worst = max((r for r in rows if r["batch"] == big), key=lambda r: r["overhead_median"])
    print(f"batch {big}: largest overhead (median) {worst['overhead_median']:.3%} ({worst['method']}, "
          f"{worst['backend']}); below 1% for every method: {worst['overhead_median'] < 0.01}")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
