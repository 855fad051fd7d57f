"""Achieved bandwidth of the fused kernels.lincomb vs a device-to-device copy and unfused torch.

    python benchmarks/bench_kernels.py [--out results/bench/kernels.csv]

Traffic counted for every method is the fused minimum: K operands read + 1 result written,
(K + 1) * numel * itemsize bytes; the copy baseline moves the same number of bytes (half read,
half written). On CUDA: Triton kernel, torch reference, unfused torch chain, copy. Without CUDA it
says so and measures only the torch reference vs the unfused chain (no Triton), then exits 0.
"""
from __future__ import annotations

import argparse
import csv
import os
import statistics
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from kernels import lincomb, lincomb_reference, triton_available  # noqa: E402

SHAPES = [(3, 32, 32), (3, 64, 64), (3, 256, 256)]  # the last is bandwidth-bound at batch 64+
BATCHES = [1, 64, 256]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
KS = [2, 5]  # AMED / DPM-Solver++ (x, d) and iPNDM order 4 (x, d_1..d_4)
FIELDS = ["device", "shape", "batch", "dtype", "K", "method", "time_us", "bytes", "gbps", "frac_of_copy"]


def unfused(terms, coeffs):
    """The plain-torch solver update: one launch per multiply and per add."""
    c = coeffs.to(terms[0].dtype).view(coeffs.shape + (1,) * (terms[0].dim() - 1))
    out = terms[0] * c[:, 0]
    for k in range(1, len(terms)):
        out = out + terms[k] * c[:, k]
    return out


def timeit(fn, cuda: bool, warmup: int, reps: int) -> float:
    """Median seconds per call (CUDA events on GPU, perf_counter on CPU)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="results/bench/kernels.csv")
    args = ap.parse_args(argv)
    cuda = torch.cuda.is_available()
    use_triton = cuda and triton_available()
    if not cuda:
        print("bench_kernels: the Triton kernel needs CUDA; measuring torch reference vs unfused torch on CPU only")
    elif not use_triton:
        print("bench_kernels: triton is not importable; skipping the Triton kernel")
    device = torch.device("cuda" if cuda else "cpu")
    warmup, reps = (10, 50) if cuda else (1, 3)
    rows = []
    for shape in SHAPES:
        for batch in BATCHES:
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
                        src = torch.empty(nbytes // 2, dtype=torch.uint8, device=device)
                        dst = torch.empty_like(src)
                        methods["copy"] = lambda: dst.copy_(src)
                    times = {m: timeit(fn, cuda, warmup, reps) for m, fn in methods.items()}
                    for m, t in times.items():
                        rows.append({
                            "device": torch.cuda.get_device_name() if cuda else "cpu",
                            "shape": "x".join(map(str, shape)), "batch": batch, "dtype": dname, "K": k,
                            "method": m, "time_us": f"{t * 1e6:.2f}", "bytes": nbytes,
                            "gbps": f"{nbytes / t / 1e9:.2f}",
                            "frac_of_copy": f"{times['copy'] / t:.3f}" if "copy" in times else "",
                        })
                        print(f"{rows[-1]['shape']:>7} b={batch:<3} {dname} K={k} {m:<15} "
                              f"{rows[-1]['time_us']:>9} us {rows[-1]['gbps']:>8} GB/s")
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    print(f"bench_kernels: wrote {len(rows)} rows to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
