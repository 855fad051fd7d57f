"""Sampling throughput of every NFE-5 method on the embedded model vs the network-only bound, eager vs torch.compile.

    python benchmarks/bench_sampling.py [--batches 256,64,1] [--nfe 5] [--repeats 15] [--threads 1]
                                        [--no-compile] [--cold] [--out results/bench/sampling.csv]

The bound is the throughput if the solver cost nothing: batch / (time of the network calls the sampler
makes, back to back). Those calls are counted per method by running it once through a counting proxy,
by kind: plain calls ``model(x, sigma)`` and feature calls ``model.with_feature(x, sigma)`` (AMED reads
the bottleneck at every t_n, so those calls are timed as feature calls; its mid-point calls are plain;
under AFS the first call is analytic and costs no network call). The bound measurement replays exactly
those calls, each of its kind and on the (x, sigma) the sampler passed (recorded in a first run), back to
back: the same batch and the same arithmetic, without the solver in between.

Robust on a shared machine: for each method and variant, ``--repeats`` pairs of (bound measurement, full
sampling run) are timed back to back, alternating which comes first, and eager / compiled alternate
within each pair. Reported: ``ratio_median``, the median over pairs of bound time / run time (= images/s
/ bound images/s; 1 means the solver is free), ``ratio_iqr`` (its interquartile range), and
``ratio_min_based`` (fastest bound / fastest run); on the CPU also ``ratio_same_run_median`` /
``ratio_same_run_min``, the bound taken from the run itself (the wall time of its own NFE network calls,
timed by a proxy, / the run's wall time: immune to the machine's speed drifting between two runs, which
makes the separately timed ratio scatter by up to +-10% on a shared VM), and ``ratio_median_cputime`` and
``ratio_iqr_cputime``, the same ratio in CPU seconds of this process (``time.process_time``), which a
job preempted by other processes does not inflate. Warm-up and compilation are excluded; the compile
time of each path (plain, feature) is reported separately. AMED methods use an untrained predictor
(same cost as a trained one).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks._common import write_csv  # noqa: E402

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


class Timed:
    """Forwards to the model and adds up the wall time spent inside its calls (CPU runs only)."""

    def __init__(self, model):
        self.model, self.info = model, model.info
        self.inside = 0.0

    def __call__(self, x, sigma):
        t = time.perf_counter()
        out = self.model(x, sigma)
        self.inside += time.perf_counter() - t
        return out

    def with_feature(self, x, sigma):
        t = time.perf_counter()
        out = self.model.with_feature(x, sigma)
        self.inside += time.perf_counter() - t
        return out


class Recording:
    """Forwards to the model and records every call (kind, x, sigma), to replay them as the bound."""

    def __init__(self, model):
        self.model, self.info = model, model.info
        self.calls = []

    def __call__(self, x, sigma):
        self.calls.append(("plain", x.clone(), sigma.clone()))
        return self.model(x, sigma)

    def with_feature(self, x, sigma):
        self.calls.append(("feature", x.clone(), sigma.clone()))
        return self.model.with_feature(x, sigma)


def _sync():
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()


def _time(fn):
    """(wall seconds, CPU seconds of this process) of one call."""
    _sync()
    t, c = time.perf_counter(), time.process_time()
    fn()
    _sync()
    return time.perf_counter() - t, time.process_time() - c


def _quantile(v, q):
    return float(torch.quantile(torch.tensor(v, dtype=torch.float64), q))


@torch.no_grad()
def bench_batch(model, batch, nfe, repeats, do_compile, compile_kw, device="cpu"):
    noise = amed.randn_seeds(range(batch), model.info.shape, device=device)
    x, sigma = noise * 10.0, torch.full((batch,), 10.0, device=device)  # example batch for compilation
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
        recorder = Recording(model)
        run(recorder)  # the calls the sampler makes, with their inputs
        calls = {k: sum(c[0] == k for c in recorder.calls) for k in ("plain", "feature")}

        def bound(m):  # the same calls back to back, nothing in between
            for kind, xi, si in recorder.calls:
                if kind == "plain":
                    m(xi, si)
                else:
                    m.with_feature(xi, si)

        for m in variants.values():  # warm-up
            run(m)
            bound(m)
        t_bound = {k: [] for k in variants}
        t_run = {k: [] for k in variants}
        c_bound = {k: [] for k in variants}
        c_run = {k: [] for k in variants}
        same_run = {k: [] for k in variants}
        on_cpu = torch.device(device).type == "cpu"
        for i in range(repeats):  # interleaved pairs; alternate which half of a pair goes first
            for k, m in variants.items():
                timed = Timed(m) if on_cpu else m
                order = [("bound", lambda m=m: bound(m)), ("run", lambda timed=timed: run(timed))]
                for what, fn in (order if i % 2 == 0 else order[::-1]):
                    wall, cpu = _time(fn)
                    (t_bound if what == "bound" else t_run)[k].append(wall)
                    (c_bound if what == "bound" else c_run)[k].append(cpu)
                    if what == "run" and on_cpu:
                        same_run[k].append(timed.inside / wall)  # the run's own network time / its wall time
        run_eager = statistics.median(t_run["eager"])
        for k in variants:
            ratios = [b / r for b, r in zip(t_bound[k], t_run[k])]
            cpu_ratios = [b / r for b, r in zip(c_bound[k], c_run[k])]
            run_s, bound_s = statistics.median(t_run[k]), statistics.median(t_bound[k])
            n_calls = calls["plain"] + calls["feature"]
            rows.append({"method": name, "batch": batch, "nfe": nfe, "variant": k,
                         "plain_calls": calls["plain"], "feature_calls": calls["feature"], "pairs": repeats,
                         "seconds": round(run_s, 5), "images_per_s": round(batch / run_s, 2),
                         "call_ms": round(bound_s / n_calls * 1e3, 3),
                         "bound_images_per_s": round(batch / bound_s, 2),
                         "ratio_median": round(statistics.median(ratios), 4),
                         "ratio_iqr": round(_quantile(ratios, 0.75) - _quantile(ratios, 0.25), 4),
                         "ratio_min_based": round(min(t_bound[k]) / min(t_run[k]), 4),
                         # CPU time of the process (one thread): immune to preemption by other jobs
                         "ratio_median_cputime": round(statistics.median(cpu_ratios), 4) if on_cpu else "",
                         "ratio_iqr_cputime": round(_quantile(cpu_ratios, 0.75) - _quantile(cpu_ratios, 0.25), 4)
                         if on_cpu else "",
                         # the bound from the same run: its NFE network calls' own time / the run's wall time
                         "ratio_same_run_median": round(statistics.median(same_run[k]), 5) if on_cpu else "",
                         "ratio_same_run_min": round(min(same_run[k]), 5) if on_cpu else "",
                         "speedup_vs_eager": round(run_eager / run_s, 4),
                         "compile_s_plain": round(compile_s.get("plain", 0.0), 2) if k == "compiled" else "",
                         "compile_s_feature": round(compile_s.get("feature", 0.0), 2) if k == "compiled" else ""})
            r = rows[-1]
            print(f"{name:20s} b={batch:<4d} {k:9s} {r['images_per_s']:9.1f} img/s  bound {r['bound_images_per_s']:9.1f}"
                  f"  ratio median {r['ratio_median']:.4f} (IQR {r['ratio_iqr']:.4f})  min-based "
                  f"{r['ratio_min_based']:.4f}  CPU-time ratio {r['ratio_median_cputime']} "
                  f"(IQR {r['ratio_iqr_cputime']})", flush=True)
    if do_compile and recompile_count() != graphs:
        print(f"WARNING: batch {batch}: {recompile_count() - graphs} recompilation(s) during the benchmark")
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="digits-8")
    ap.add_argument("--batches", default="256,64,1")
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--repeats", type=int, default=15, help="interleaved (bound, run) pairs per method and variant")
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
    write_csv(args.out, rows)
    print(f"{'method':20s} {'batch':>5s} {'variant':9s} {'img/s':>10s} {'bound':>10s} {'ratio':>7s} {'IQR':>7s} "
          f"{'minratio':>8s} {'vs eager':>8s}")
    for r in rows:
        print(f"{r['method']:20s} {r['batch']:5d} {r['variant']:9s} {r['images_per_s']:10.1f} "
              f"{r['bound_images_per_s']:10.1f} {r['ratio_median']:7.4f} {r['ratio_iqr']:7.4f} "
              f"{r['ratio_min_based']:8.4f} {r['speedup_vs_eager']:8.3f}")
    for r in rows:
        if r["variant"] == "compiled" and r["method"] == METHODS[0][0]:
            print(f"compile time, batch {r['batch']}: plain {r['compile_s_plain']} s, "
                  f"feature {r['compile_s_feature']} s")
    print(f"-> {args.out}")


if __name__ == "__main__":
    main()
