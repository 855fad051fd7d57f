"""Sample grid: a samples .npz (uint8 NHWC ``images`` + ``seeds``, as `amed sample` writes) -> grid PNG
(nearest-neighbour upscaled small images) + CSV (cell -> seed). Snakemake: input.npz -> output.png,
output.csv; params.count. CLI: python grid.py samples.npz --png grid.png [--count 64 --cols 8 --scale 8]."""
import argparse
import sys

import numpy as np

from amed.analysis import write_sample_grid

if "snakemake" in globals():
    sys.stderr = sys.stdout = open(snakemake.log[0], "w") if snakemake.log else sys.stdout  # noqa: F821
    p = snakemake.params  # noqa: F821
    a = argparse.Namespace(npz=snakemake.input.npz, png=snakemake.output.png, csv_out=snakemake.output.csv,  # noqa: F821
                           count=int(p.get("grid_count", p.get("count", 64))), cols=p.get("cols"), scale=p.get("scale"))
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("npz")
    ap.add_argument("--png", default="grid.png")
    ap.add_argument("--csv-out", default=None)
    ap.add_argument("--count", type=int, default=64, help="first COUNT images")
    ap.add_argument("--cols", type=int, default=None)
    ap.add_argument("--scale", type=int, default=None, help="upscale factor (default: to 64 px)")
    a = ap.parse_args()

with np.load(a.npz) as f:
    images = f["images"][: a.count]
    seeds = f["seeds"][: a.count] if "seeds" in f else None
write_sample_grid(images, a.png, a.csv_out, seeds=seeds, cols=a.cols, scale=a.scale)
print(f"{len(images)} images {images.shape[1:]} -> {a.png}")
