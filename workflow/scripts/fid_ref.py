"""Reference statistics of one dataset: computed from the embedded data, or fetched (EDM-format mu/sigma .npz)."""
import shutil
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
from amed.cli import main  # noqa: E402
from amed.fid import load_stats  # noqa: E402
from amed.models.download import default_cache_dir, fetch  # noqa: E402

ref, out = snakemake.params.ref, snakemake.output[0]  # noqa: F821
if ref == "digits":
    if main(["fid-ref", "--data", "digits", "--out", out]) != 0:
        sys.exit(f"amed fid-ref failed for {ref!r}")
elif ref.startswith(("https://", "http://")):
    path = fetch(ref, default_cache_dir() / "fid-refs", progress=False)
    tmp = out + ".tmp"
    shutil.copyfile(path, tmp)
    shutil.move(tmp, out)
elif ref == "coco-val2014":  # Table 3: MS-COCO val2014 images, centre-cropped and resized to 256, Inception
    try:
        from amed.fid import coco_reference_stats  # noqa: E402
    except ImportError:
        sys.exit("ref 'coco-val2014' needs amed.fid.coco_reference_stats(out, resolution=256), not in the package yet")
    coco_reference_stats(out, resolution=256)
else:
    sys.exit(f"ref must be 'digits', 'coco-val2014' or an https:// URL of an .npz with mu and sigma, got {ref!r}")
mu, sigma = load_stats(out)  # rejects files without mu/sigma
print(f"reference statistics {ref} -> {out} (dim {mu.shape[0]})")
