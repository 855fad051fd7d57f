"""Whole sampling loops on CUDA, fused vs unfused updates, against the network-only bound.

    python benchmarks/bench_fused_loop.py [--sizes 64:256,128:256,256:64] [--repeats 5] [--out results/bench/fused_loop.csv]

Unlike solver_overhead.py (which synchronises around every network call to attribute time), this
times ``amed.sample`` as a user runs it: one synchronisation at the end, so the host may queue solver
work while the GPU runs the network. The network is benchmarks/solver_overhead.py's ConvNet at
RES x RES (3 channels), batch B. Per (size, method): the median wall time of the loop with the fused
Triton update (``amed.ops.use_fused(True)``; ``ops.lincomb`` still keeps updates below
``FUSED_MIN_NUMEL`` elements in torch) and with plain torch, alternating, and the bound = NFE back-to-back
network calls on the same batch. Needs CUDA.
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
from benchmarks.solver_overhead import ConvNet  # noqa: E402

METHODS = [("ddim", dict(solver="ddim")), ("ipndm", dict(solver="ipndm")),
           ("dpmpp3m", dict(solver="dpmpp3m", schedule="logsnr"))]


def _wall(fn) -> float:
    torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    return time.perf_counter() - t


@torch.no_grad()
def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="64:256,128:256,256:64", help="RES:BATCH pairs")
    ap.add_argument("--nfe", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="results/bench/fused_loop.csv")
    args = ap.parse_args(argv)
    if not torch.cuda.is_available():
        print("bench_fused_loop: needs CUDA; nothing measured")
        return 0
    rows = []
    for pair in args.sizes.split(","):
        res, batch = (int(v) for v in pair.split(":"))
        torch.manual_seed(0)
        net = ConvNet(res).cuda().eval()
        noise = amed.randn_seeds(range(batch), (3, res, res), device="cuda")
        sigma = torch.full((batch,), 1.0, device="cuda")
        for name, kw in METHODS:
            run = lambda: amed.sample(net, noise, nfe=args.nfe, **kw)  # noqa: E731
            bound = lambda: [net(noise, sigma) for _ in range(args.nfe)]  # noqa: E731
            with ops.use_fused(True):
                fused_path = ops.backend(noise, 2)
                run()
            with ops.use_fused(False):
                run()
            bound()
            t = {"fused": [], "unfused": [], "bound": []}
            for i in range(args.repeats):
                for key in (["fused", "unfused", "bound"] if i % 2 == 0 else ["bound", "unfused", "fused"]):
                    if key == "bound":
                        t[key].append(_wall(bound))
                    else:
                        with ops.use_fused(key == "fused"):
                            t[key].append(_wall(run))
            med = {k: statistics.median(v) for k, v in t.items()}
            rows.append({"device": torch.cuda.get_device_name(), "res": res, "batch": batch, "method": name,
                         "nfe": args.nfe, "fused_path": fused_path, "fused_ms": round(med["fused"] * 1e3, 3),
                         "unfused_ms": round(med["unfused"] * 1e3, 3), "bound_ms": round(med["bound"] * 1e3, 3),
                         "fused_vs_unfused": round(med["unfused"] / med["fused"], 4),
                         "fused_ratio_to_bound": round(med["bound"] / med["fused"], 4),
                         "unfused_ratio_to_bound": round(med["bound"] / med["unfused"], 4)})
            print(rows[-1], flush=True)
    write_csv(args.out, rows)
    print(f"bench_fused_loop: {len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
