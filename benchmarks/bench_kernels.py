"""Achieved bandwidth of the fused kernels.lincomb vs a device-to-device copy and unfused torch.

    python benchmarks/bench_kernels.py [--sweep] [--reps 20] [--out results/bench/kernels.csv]

Traffic counted for every method is the fused minimum: K operands read + 1 result written,
(K + 1) * numel * itemsize bytes; the copy baseline moves the same number of bytes (half read,
half written). On CUDA: Triton kernel, torch reference, unfused torch chain, copy. Without CUDA it
says so and measures only the torch reference vs the unfused chain (no Triton), then exits 0.

Two times per method (CUDA events): ``time_us`` is the steady state of a solver loop, ``reps``
launches back to back between two events divided by ``reps`` (the host enqueues ahead, so a launch's
Python cost hides behind the previous kernel whenever the kernel is the longer of the two);
``latency_us`` is one launch between events with a synchronisation before it (launch cost
included: what a lone call costs). ``gbps`` and ``frac_of_copy`` use ``time_us``. ``--sweep`` adds
rows ``triton[BLOCK/warps]`` for other launch configurations at the largest shape.
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
from kernels import lincomb, lincomb_reference, triton_available  # noqa: E402
from kernels.lincomb import _lincomb_triton  # noqa: E402

SHAPES = [(3, 32, 32), (3, 64, 64), (3, 256, 256)]  # the last is bandwidth-bound at batch 64+
BATCHES = [1, 64, 256]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
KS = [2, 5]  # AMED / DPM-Solver++ (x, d) and iPNDM order 4 (x, d_1..d_4)
FIELDS = ["device", "shape", "batch", "dtype", "K", "method", "time_us", "latency_us", "bytes", "gbps",
          "frac_of_copy"]
SWEEP = [(512, 4), (1024, 4), (1024, 8), (2048, 4), (2048, 8), (4096, 8), (8192, 16)]


def unfused(terms, coeffs):
    """The plain-torch solver update: one launch per multiply and per add."""
    c = coeffs.to(terms[0].dtype).view(coeffs.shape + (1,) * (terms[0].dim() - 1))
    out = terms[0] * c[:, 0]
    for k in range(1, len(terms)):
        out = out + terms[k] * c[:, k]
    return out


def timeit(fn, cuda: bool, warmup: int, reps: int) -> tuple[float, float]:
    """(steady-state seconds per call, median latency of one synchronised call)."""
    for _ in range(warmup):
        fn()
    if not cuda:
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
        return statistics.median(times), statistics.median(times)
    lat = []
    for _ in range(reps):
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        lat.append(start.elapsed_time(end) / 1e3)
    loops = []
    for _ in range(5):  # median of 5 back-to-back loops
        torch.cuda.synchronize()
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        for _ in range(reps):
            fn()
        end.record()
        end.synchronize()
        loops.append(start.elapsed_time(end) / 1e3 / reps)
    return statistics.median(loops), statistics.median(lat)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/kernels.csv")
    ap.add_argument("--reps", type=int, default=20, help="launches per timed loop (CUDA)")
    ap.add_argument("--sweep", action="store_true", help="also time other BLOCK/num_warps at the largest shape")
    ap.add_argument("--batches", default=",".join(map(str, BATCHES)), help="batch sizes, e.g. 1,64,256")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    use_triton = cuda and triton_available()
    if not cuda:
        print("bench_kernels: the Triton kernel needs CUDA; measuring torch reference vs unfused torch on CPU only")
    elif not use_triton:
        print("bench_kernels: triton is not importable; skipping the Triton kernel")
    device = torch.device("cuda" if cuda else "cpu")
    warmup, reps = (10, args.reps) if cuda else (1, 3)
    batches = [int(b) for b in args.batches.split(",")]
    rows = []
    for shape in SHAPES:
        for batch in batches:
            for dname, dtype in DTYPES.items():
                for k in KS:
                    g = torch.Generator(device=device).manual_seed(0)
                    terms = [torch.randn((batch, *shape), generator=g, device=device).to(dtype) for _ in range(k)]
                    coeffs = torch.randn(batch, k, generator=g, device=device, dtype=torch.float64)
                    nbytes = (k + 1) * terms[0].numel() * terms[0].element_size()
                    methods = {"torch_reference": lambda: lincomb_reference(terms, coeffs),
                               "torch_unfused": lambda: unfused(terms, coeffs)}
                    if use_triton:
                        y = lincomb(terms, coeffs, backend="triton")  # correctness guard before timing
                        tol = 1e-5 if dtype == torch.float32 else 1e-2
                        torch.testing.assert_close(y, lincomb_reference(terms, coeffs), rtol=tol, atol=tol)
                        methods["triton"] = lambda: lincomb(terms, coeffs, backend="triton")
                        if args.sweep and shape == SHAPES[-1] and batch == batches[-1]:
                            c32 = coeffs.float()
                            for blk, nw in SWEEP:
                                methods[f"triton[{blk}/{nw}]"] = (
                                    lambda blk=blk, nw=nw: _lincomb_triton(terms, c32, None, blk, nw))
                        src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
                        dst = torch.empty_like(src)
                        methods["copy"] = lambda: dst.copy_(src)
                    measured = {m: timeit(fn, cuda, warmup, reps) for m, fn in methods.items()}
                    times = {m: v[0] for m, v in measured.items()}
                    for m, t in times.items():
                        rows.append({
                            "device": torch.cuda.get_device_name() if cuda else "cpu",
                            "shape": "x".join(map(str, shape)), "batch": batch, "dtype": dname, "K": k,
                            "method": m, "time_us": f"{t * 1e6:.2f}", "latency_us": f"{measured[m][1] * 1e6:.2f}",
                            "bytes": nbytes,
                            "gbps": f"{nbytes / t / 1e9:.2f}",
                            "frac_of_copy": f"{times['copy'] / t:.3f}" if "copy" in times else "",
                        })
                        print(f"{rows[-1]['shape']:>7} b={batch:<3} {dname} K={k} {m:<18} "
                              f"{rows[-1]['time_us']:>9} us (lat {rows[-1]['latency_us']:>9}) "
                              f"{rows[-1]['gbps']:>8} GB/s {rows[-1]['frac_of_copy']}", flush=True)
    write_csv(args.out, rows, FIELDS)
    print(f"bench_kernels: wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
