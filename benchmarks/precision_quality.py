"""What torch.compile, CUDA graphs, channels-last and bf16/fp16 autocast do to speed *and* samples.

    python benchmarks/precision_quality.py [--device cuda] [--n 4096] [--batch 1024] [--nfe 5]
                                           [--variants eager,compiled,...] [--out results/bench/precision.csv]

The embedded model (digits-8) samples the same seeds under every variant; eager float32 is the
reference. Methods: iPNDM and DPM-Solver++(3M) at NFE 5, and AMED-Plugin (iPNDM) and AMED-Solver with
predictors trained here in eager float32 (the workflow's settings, ``--trajectories`` each), so the
predictor sees the low-precision network only at sampling time, as a user who switches autocast on would.
Per (variant, method): images/s (warm-up and compilation excluded), FD-digits against the data, the
mean |x - x_ref| of the final samples in [-1, 1] units, the share of uint8 pixels that differ from the
reference and the largest such difference. Variants that need CUDA (reduce-overhead, fp16) are skipped
on the CPU with a note.
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
from amed.compile import compile_denoiser  # noqa: E402
from amed.features import digit_features  # noqa: E402
from amed.fid import feature_stats, frechet_distance  # noqa: E402
from amed.models.base import to_uint8  # noqa: E402
from amed.models.train_embedded import load_dataset  # noqa: E402

VARIANTS = {  # name -> compile_denoiser options (None = eager)
    "eager": None,
    "compiled": {},
    "reduce-overhead": {"mode": "reduce-overhead"},
    "channels-last": {"channels_last": True},
    "autocast-bf16": {"autocast": torch.bfloat16},
    "autocast-fp16": {"autocast": torch.float16},
    "reduce-overhead+bf16": {"mode": "reduce-overhead", "autocast": torch.bfloat16},
}
CUDA_ONLY = {"reduce-overhead", "autocast-fp16", "reduce-overhead+bf16"}
FIELDS = ["device", "variant", "method", "nfe", "n", "images_per_s", "speedup_vs_eager", "fd_digits",
          "fd_digits_eager", "mean_abs_diff", "frac_pixels_differ", "max_uint8_diff", "compile_s"]


def _sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--n", type=int, default=4096, help="samples per (variant, method)")
    ap.add_argument("--batch", type=int, default=1024)
    ap.add_argument("--nfe", type=int, default=5)
    ap.add_argument("--trajectories", type=int, default=1024, help="training trajectories per AMED predictor")
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--backend", default="inductor", help="torch.compile backend ('eager' for a quick smoke run)")
    ap.add_argument("--out", default="results/bench/precision.csv")
    args = ap.parse_args(argv)
    device = torch.device(args.device)
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {unknown}; choose from {list(VARIANTS)}")
    if args.n % args.batch:
        raise SystemExit(f"--n ({args.n}) must be a multiple of --batch ({args.batch}) (one compiled shape)")
    model = amed.load_model("digits-8").to(device).eval()
    shape = model.info.shape

    t0 = time.perf_counter()
    preds = {}
    for key, solver, kw in [("amed-plugin-ipndm", "ipndm", dict(M=7, scale_time=0.2)),
                            ("amed-solver", "amed", dict(schedule="time_uniform", M=7, scale_time=0.2))]:
        preds[key] = amed.train_predictor(model, shape, solver=solver, nfe=args.nfe,
                                          num_trajectories=args.trajectories, batch=min(256, args.trajectories),
                                          device=device, **kw)
    print(f"trained 2 predictors ({args.trajectories} trajectories each) in {time.perf_counter() - t0:.1f} s",
          flush=True)
    methods = {
        "ipndm": dict(solver="ipndm", nfe=args.nfe, solver_options={"max_order": 4}),
        "dpmpp3m": dict(solver="dpmpp3m", nfe=args.nfe, schedule="logsnr"),
        **{k: dict(predictor=p) for k, p in preds.items()},
    }
    ref_img = to_uint8(torch.from_numpy(load_dataset("digits"))).permute(0, 3, 1, 2).float() / 127.5 - 1
    ref_stats = feature_stats(digit_features(ref_img).numpy())
    seeds = list(range(args.n))
    chunks = [amed.randn_seeds(seeds[i:i + args.batch], shape, device=device) for i in range(0, args.n, args.batch)]

    def run(net, kw):
        return torch.cat([amed.sample(net, z, **kw) for z in chunks])

    def images(x):  # uint8 NHWC as the workflow stores them (the embedded model adds its mean image)
        return model.images(x.to(device)).cpu()

    def fd(x):
        u8 = images(x).permute(0, 3, 1, 2).float() / 127.5 - 1
        return frechet_distance(*feature_stats(digit_features(u8).numpy()), *ref_stats)

    reference, eager_speed, rows = {}, {}, []
    for variant in variants:
        if variant in CUDA_ONLY and device.type != "cuda":
            print(f"{variant}: skipped (needs CUDA)")
            continue
        opts = VARIANTS[variant]
        if opts is None:
            net, compile_s = model, 0.0
        else:
            t = time.perf_counter()
            net = compile_denoiser(model, backend=args.backend, example_batch=args.batch, **opts)
            compile_s = time.perf_counter() - t
        for name, kw in methods.items():
            with torch.no_grad():
                t = time.perf_counter()
                run(net, kw)  # warm-up: lazy compiles (AMED's feature path), CUDA-graph recording
                _sync(device)
                compile_s += time.perf_counter() - t if opts is not None else 0.0
                best = float("inf")
                for _ in range(3):
                    _sync(device)
                    t = time.perf_counter()
                    x = run(net, kw)
                    _sync(device)
                    best = min(best, time.perf_counter() - t)
            x = x.float().cpu()
            if variant == "eager":
                reference[name], eager_speed[name] = x, args.n / best
            ref = reference.get(name)
            u8, u8_ref = images(x).int(), (images(ref).int() if ref is not None else None)
            row = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
                   "variant": variant, "method": name, "nfe": args.nfe, "n": args.n,
                   "images_per_s": round(args.n / best, 1),
                   "speedup_vs_eager": round(args.n / best / eager_speed[name], 3) if name in eager_speed else "",
                   "fd_digits": round(fd(x), 3), "fd_digits_eager": round(fd(ref), 3) if ref is not None else "",
                   "mean_abs_diff": f"{(x - ref).abs().mean().item():.3e}" if ref is not None else "",
                   "frac_pixels_differ": round((u8 != u8_ref).float().mean().item(), 5) if ref is not None else "",
                   "max_uint8_diff": int((u8 - u8_ref).abs().max()) if ref is not None else "",
                   "compile_s": round(compile_s, 1)}
            rows.append(row)
            print(" ".join(f"{k}={v}" for k, v in row.items() if k not in ("device", "n", "nfe")), flush=True)
        if opts is not None and hasattr(net, "release"):
            net.release()
    write_csv(args.out, rows, FIELDS)
    print(f"precision_quality: {len(rows)} rows -> {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
