"""Reference statistics of one dataset: the embedded data, MS-COCO val2014 (Table 3), or an EDM-format .npz
(mu, sigma) fetched from a URL or copied from a local path; amed.reference.reference_stats decides which."""
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
from amed.fid import load_stats  # noqa: E402
from amed.reference import reference_stats  # noqa: E402

ref, out = snakemake.params.ref, snakemake.output[0]  # noqa: F821
captions = getattr(snakemake.input, "prompts", None)  # noqa: F821 (coco-val2014: the prompts' image_id column)
reference_stats(ref, out, captions=captions)
mu, sigma = load_stats(out)  # rejects files without mu/sigma
print(f"reference statistics {ref} -> {out} (dim {mu.shape[0]})")
