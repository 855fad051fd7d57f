"""Quality evidence for the embedded model: FD-digits at high NFE, and NFE-5 solver errors.

    python benchmarks/embedded_quality.py [--model digits-8] [--n-fd 1797] [--n-gt 256] [--out results/bench]

Writes ``<out>/embedded_quality_<model>.csv`` with columns metric, solver, schedule, afs, nfe, value, n:

* ``fd_digits``: FD-digits (Frechet distance in the project's digit-classifier feature space, NOT
  Inception FID) between samples and the whole data set; ``fd_digits_data_halves`` is the floor (two
  disjoint halves of the data, at half the sample size).
* ``l2_to_gt``: mean over samples of ||x_solver - x_gt||_2 (64 pixels, data in [-1, 1]), x_gt = Heun with
  ``--gt-nfe`` NFE from the same noise; ``gt_self_error`` is the same distance from Heun at half that NFE.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks._common import write_csv  # noqa: E402

import amed  # noqa: E402
from amed.features import digit_features  # noqa: E402
from amed.fid import feature_stats, frechet_distance  # noqa: E402
from amed.models.embedded import load_embedded  # noqa: E402
from amed.models.train_embedded import load_dataset  # noqa: E402

NFE5 = [  # (solver, schedule, afs) at NFE 5; combinations the planner rejects are skipped
    ("ddim", "polynomial", False), ("ddim", "logsnr", False),
    ("ipndm", "polynomial", False), ("ipndm", "logsnr", False), ("ipndm", "polynomial", True),
    ("dpmpp2m", "logsnr", False), ("dpmpp3m", "logsnr", False), ("dpmpp3m", "polynomial", False),
    ("unipc", "logsnr", False), ("dpm2", "polynomial", True), ("dpm2", "logsnr", True), ("heun", "polynomial", True),
]


def batched_sample(den, noise: torch.Tensor, batch: int = 512, **kw) -> torch.Tensor:
    return torch.cat([amed.sample(den, noise[i:i + batch], **kw) for i in range(0, len(noise), batch)])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default="digits-8")
    p.add_argument("--model-dir", default=None, help="asset directory (default: the package's)")
    p.add_argument("--n-fd", type=int, default=1797)
    p.add_argument("--fd-nfe", type=int, default=100)
    p.add_argument("--n-gt", type=int, default=256)
    p.add_argument("--gt-nfe", type=int, default=500)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=ROOT / "results" / "bench")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    den = load_embedded(a.model, a.model_dir)
    shape = den.info.shape
    rows: list[dict] = []

    def add(metric, value, solver="", schedule="", afs="", nfe="", n=""):
        rows.append(dict(metric=metric, solver=solver, schedule=schedule, afs=afs, nfe=nfe, value=f"{value:.6g}", n=n))
        print(f"{metric:22s} {solver:8s} {schedule:11s} afs={afs!s:5s} nfe={nfe!s:4s} {value:.5f}", flush=True)

    is_digits = den.info.extra.get("dataset") == "digits"
    if is_digits:
        data = torch.from_numpy(load_dataset("digits"))
        ref = feature_stats(digit_features(data))
        half = [feature_stats(digit_features(data[i::2])) for i in (0, 1)]
        add("fd_digits_data_halves", frechet_distance(*half[0], *half[1]), n=len(data) // 2)

        def fd(x):  # samples live in the model's (centred) space: decode to images first
            return frechet_distance(*feature_stats(digit_features(den.decode(x))), *ref)

    # FD-digits at high NFE (heun).
    noise_fd = amed.randn_seeds(range(a.n_fd), shape)
    t0 = time.time()
    x_hi = batched_sample(den, noise_fd, solver="heun", nfe=a.fd_nfe, schedule="polynomial")
    print(f"heun NFE {a.fd_nfe} on {a.n_fd} samples: {time.time() - t0:.0f}s", flush=True)
    if is_digits:
        add("fd_digits", fd(x_hi), "heun", "polynomial", False, a.fd_nfe, a.n_fd)
        add("fd_digits_half", fd(x_hi[: len(data) // 2]), "heun", "polynomial", False, a.fd_nfe, len(data) // 2)
    add("sample_mean", float(x_hi.mean()), "heun", "polynomial", False, a.fd_nfe, a.n_fd)
    add("sample_std", float(x_hi.std()), "heun", "polynomial", False, a.fd_nfe, a.n_fd)

    # Ground-truth endpoints on a subset of the same noise.
    noise = noise_fd[: a.n_gt]
    t0 = time.time()
    x_gt = batched_sample(den, noise, solver="heun", nfe=a.gt_nfe, schedule="polynomial")
    x_gt2 = x_hi[: a.n_gt] if a.gt_nfe // 2 == a.fd_nfe else batched_sample(
        den, noise, solver="heun", nfe=a.gt_nfe // 2, schedule="polynomial")
    print(f"ground truth heun NFE {a.gt_nfe}: {time.time() - t0:.0f}s", flush=True)

    def l2(x):
        return float((x - x_gt).flatten(1).norm(dim=1).mean())

    add("gt_self_error", l2(x_gt2), "heun", "polynomial", False, a.gt_nfe // 2, a.n_gt)
    add("l2_to_gt", l2(x_hi[: a.n_gt]), "heun", "polynomial", False, a.fd_nfe, a.n_gt)
    for solver, schedule, afs in NFE5:
        try:
            x = amed.sample(den, noise, solver=solver, nfe=5, schedule=schedule, afs=afs)
        except ValueError as e:
            print(f"skip {solver}/{schedule}/afs={afs}: {e}")
            continue
        add("l2_to_gt", l2(x), solver, schedule, afs, 5, a.n_gt)
        if is_digits:
            xf = batched_sample(den, noise_fd, solver=solver, nfe=5, schedule=schedule, afs=afs)
            add("fd_digits", fd(xf), solver, schedule, afs, 5, a.n_fd)

    a.out.mkdir(parents=True, exist_ok=True)
    path = a.out / f"embedded_quality_{a.model}.csv"
    write_csv(path, rows)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
