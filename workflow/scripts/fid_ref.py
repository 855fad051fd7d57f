"""Reference statistics of one dataset: the embedded data, MS-COCO val2014 (Table 3), or an EDM-format .npz
(mu, sigma) fetched from a URL or copied from a local path."""
import os
import shutil
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
from amed.cli import main  # noqa: E402
from amed.fid import coco_reference_stats, load_stats  # noqa: E402
from amed.models.download import default_cache_dir, fetch  # noqa: E402

ref, out = snakemake.params.ref, snakemake.output[0]  # noqa: F821
offline = os.environ.get("AMED_OFFLINE", "0").lower() not in ("", "0", "false", "no")
if ref == "digits":
    if main(["fid-ref", "--data", "digits", "--out", out]) != 0:
        sys.exit(f"amed fid-ref failed for {ref!r}")
elif ref == "coco-val2014":  # Table 3: val2014 images (those of the prompts' image_id), crop + resize 256, Inception
    captions = getattr(snakemake.input, "prompts", None)  # noqa: F821
    coco_reference_stats(out, resolution=256, captions=captions)
elif ref.startswith(("https://", "http://")) or ref.endswith(".npz"):
    path = fetch(ref, default_cache_dir() / "fid-refs", offline=offline) if "://" in ref else ref
    load_stats(path)  # rejects files without mu/sigma before anything is written
    shutil.copyfile(path, out + ".tmp")
    shutil.move(out + ".tmp", out)
else:
    sys.exit(f"ref must be 'digits', 'coco-val2014', an https:// URL or a local path of an .npz with mu and sigma, "
             f"got {ref!r}")
mu, sigma = load_stats(out)  # rejects files without mu/sigma
print(f"reference statistics {ref} -> {out} (dim {mu.shape[0]})")
