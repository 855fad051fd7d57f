"""Sampling throughput of every NFE-5 method on the embedded model, eager vs torch.compile.

    python benchmarks/bench_sampling.py [--batches 256,64,1] [--nfe 5] [--repeats 3] [--threads 1]
                                        [--no-compile] [--cold] [--out results/bench/sampling.csv]

For each batch size: images/s of each method, and the bound NFE x (one network call), i.e. the
throughput if the solver cost nothing (ratio = throughput / bound; about 1 when the solver is cheap).
Eager and compiled runs alternate in one process, and one network call (best of 3) is timed right
before each run (the machine is shared: compare ratios, not seconds across runs); the time of a run
and of a call is the best of ``--repeats``; warm-up and compilation are excluded and
the compile time of each path (plain, feature) is reported separately. AMED methods use an untrained
predictor (same cost as a trained one).
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
from amed.predictor import AMEDPredictor  # noqa: E402
from amed.training import default_config  # noqa: E402

METHODS = [
    ("ipndm", dict(solver="ipndm")),
    ("ddim", dict(solver="ddim")),
    ("dpmpp3m-logsnr", dict(solver="dpmpp3m", schedule="logsnr")),
    ("unipc-logsnr", dict(solver="unipc", schedule="logsnr")),
    ("amed-solver", dict(amed="amed")),
    ("amed-plugin-ipndm", dict(amed="ipndm")),
]


def _sampler(model, noise, kw, nfe):
    if "amed" in kw:
        cfg = default_config(kw["amed"], nfe, scale_time=0.1)
        cfg.shape, cfg.model = tuple(noise.shape[1:]), model.info.name
        p = AMEDPredictor(cfg)
        return lambda m: amed.sample(m, noise, predictor=p)
    return lambda m: amed.sample(m, noise, nfe=nfe, **kw)


def _best(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        _sync()
        t = time.perf_counter()
        fn()
        _sync()
        best = min(best, time.perf_counter() - t)
    return best


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


@torch.no_grad()
def bench_batch(model, batch, nfe, repeats, do_compile, compile_kw, device="cpu"):
    noise = amed.randn_seeds(range(batch), model.info.shape, device=device)
    x, sigma = noise * 10.0, torch.full((batch,), 10.0, device=device)  # float32 sigma, as the samplers pass it
    variants = {"eager": model}
    compile_s = {}
    if do_compile:
        from amed.compile import compile_denoiser, recompile_count  # noqa: PLC0415

        t = time.perf_counter()
        variants["compiled"] = compile_denoiser(model, example_batch=(x, sigma), **compile_kw)
        compile_s = dict(variants["compiled"].compile_seconds, total=time.perf_counter() - t)
        graphs = recompile_count()
        print(f"batch {batch}: compiled in {compile_s['total']:.1f} s (plain {compile_s['plain']:.1f} s, "
              f"feature {compile_s['feature']:.1f} s, check included in the total)", flush=True)
    rows = []
    for name, kw in METHODS:
        run = _sampler(model, noise, kw, nfe)
        for m in variants.values():
            run(m)  # warm-up
        best = {k: float("inf") for k in variants}
        call = {k: float("inf") for k in variants}
        for _ in range(repeats):  # alternate eager / compiled; time one call (the bound) right before each run
            for k, m in variants.items():
                call[k] = min(call[k], _best(lambda m=m: m(x, sigma), 3))
                best[k] = min(best[k], _best(lambda m=m: run(m), 1))
        for k in variants:
            ips = batch / best[k]
            bound = batch / (nfe * call[k])
            rows.append({"method": name, "batch": batch, "nfe": nfe, "variant": k,
                         "seconds": round(best[k], 5), "images_per_s": round(ips, 2),
                         "call_ms": round(call[k] * 1e3, 3), "bound_images_per_s": round(bound, 2),
                         "ratio_to_bound": round(ips / bound, 4),
                         "speedup_vs_eager": round(best["eager"] / best[k], 4),
                         "compile_s_plain": round(compile_s.get("plain", 0.0), 2) if k == "compiled" else "",
                         "compile_s_feature": round(compile_s.get("feature", 0.0), 2) if k == "compiled" else ""})
    if do_compile and recompile_count() != graphs:
        print(f"WARNING: batch {batch}: {recompile_count() - graphs} recompilation(s) during the benchmark")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits-8")
    ap.add_argument("--batches", default="256,64,1")
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on shared cores 2 threads were up to 17x slower; 0: 1 if load > 2)")
    ap.add_argument("--no-compile", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--autocast", choices=["bf16", "fp16"], default=None)
    ap.add_argument("--mode", default=None, help="torch.compile mode (e.g. reduce-overhead on CUDA)")
    ap.add_argument("--cold", action="store_true", help="fresh inductor cache: measure a cold compile")
    ap.add_argument("--out", default="results/bench/sampling.csv")
    args = ap.parse_args(argv)
    if args.cold:  # read when inductor first compiles, so setting it here is early enough
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = tempfile.mkdtemp(prefix="amed-inductor-")
        os.environ["TORCHINDUCTOR_FX_GRAPH_CACHE"] = "0"
    threads = args.threads or (1 if os.getloadavg()[0] > 2 else torch.get_num_threads())
    torch.set_num_threads(threads)
    model = amed.load_model(args.model).eval().to(args.device)
    compile_kw = dict(mode=args.mode, channels_last=args.channels_last,
                      autocast={"bf16": torch.bfloat16, "fp16": torch.float16, None: None}[args.autocast])
    print(f"{args.model} on {args.device}: torch {torch.__version__}, {threads} thread(s), "
          f"load average {os.getloadavg()[0]:.1f}")
    rows = []
    for batch in [int(b) for b in args.batches.split(",")]:
        rows += bench_batch(model, batch, args.nfe, args.repeats, not args.no_compile, compile_kw, args.device)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)
    print(f"{'method':20s} {'batch':>5s} {'variant':9s} {'img/s':>10s} {'bound':>10s} {'ratio':>7s} {'vs eager':>8s}")
    for r in rows:
        print(f"{r['method']:20s} {r['batch']:5d} {r['variant']:9s} {r['images_per_s']:10.1f} "
              f"{r['bound_images_per_s']:10.1f} {r['ratio_to_bound']:7.3f} {r['speedup_vs_eager']:8.3f}")
    for r in rows:
        if r["variant"] == "compiled" and r["method"] == METHODS[0][0]:
            print(f"compile time, batch {r['batch']}: plain {r['compile_s_plain']} s, "
                  f"feature {r['compile_s_feature']} s")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
