"""Time spent outside the network per solver step, as a fraction of one network call.

    python benchmarks/solver_overhead.py [--batch 256] [--res 32] [--repeats 3] [--out results/bench/solver_overhead.csv]

The network is a small conv net (EDM-preconditioned, ~0.3 M parameters, 3x32x32) at batch 256 on the
CPU: a realistic cost for the denoiser, so the ratio says how much the solver adds to sampling.
Every solver of Table 2 and the AMED methods (with an untrained predictor; the cost is the same)
is measured in one run; the ratio is (wall time - time inside the network) / steps / (time of one call).
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import amed  # noqa: E402
from amed.models.base import Denoiser, ModelInfo  # noqa: E402
from amed.predictor import AMEDPredictor  # noqa: E402
from amed.training import default_config  # noqa: E402


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


class Timed:
    """Wraps the network and accumulates the wall time spent inside it."""

    def __init__(self, net):
        self.net, self.seconds, self.calls = net, 0.0, 0
        self.info = net.info

    def _timed(self, fn, *a):
        t = time.perf_counter()
        out = fn(*a)
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


@torch.no_grad()
def measure(net, noise, kw, repeats):
    best = None
    for _ in range(repeats):
        timed = Timed(net)
        t = time.perf_counter()
        if "amed" in kw:
            cfg = default_config(kw["amed"], 9, scale_time=0.1)
            cfg.shape = tuple(noise.shape[1:])
            cfg.model = net.info.name
            amed.sample(timed, noise, predictor=AMEDPredictor(cfg))
        else:
            amed.sample(timed, noise, **kw)
        total = time.perf_counter() - t
        per_call = timed.seconds / timed.calls
        outside = (total - timed.seconds) / timed.calls  # per network call ~ per (sub-)step
        row = (outside / per_call, outside * 1e3, per_call * 1e3, timed.calls)
        best = row if best is None or row[0] < best[0] else best
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--res", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--out", default="results/bench/solver_overhead.csv")
    args = ap.parse_args(argv)
    torch.manual_seed(0)
    net = ConvNet(args.res).eval()
    noise = amed.randn_seeds(range(args.batch), (3, args.res, args.res))
    measure(net, noise, dict(solver="ddim", nfe=2), 1)  # warm-up
    rows = []
    for name, kw in CASES:
        ratio, outside_ms, call_ms, calls = measure(net, noise, kw, args.repeats)
        rows.append({"method": name, "batch": args.batch, "calls": calls, "network_ms_per_call": round(call_ms, 3),
                     "outside_ms_per_call": round(outside_ms, 3), "overhead_ratio": round(ratio, 5)})
        print(f"{name:22s} network {call_ms:8.2f} ms/call  outside {outside_ms:7.3f} ms/call  ratio {ratio:.3%}")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
