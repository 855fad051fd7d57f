"""The captions of a text-to-image dataset (Table 3): fetched (verified download cache) or copied, as CSV."""
import shutil
import sys

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
from amed.download import default_cache_dir, fetch, is_offline  # noqa: E402
from amed.models.sd import read_captions  # noqa: E402

src, out = snakemake.params.prompts, snakemake.output[0]  # noqa: F821
remote = src.startswith(("https://", "http://"))
path = fetch(src, default_cache_dir() / "prompts", offline=is_offline()) if remote else src
captions = read_captions(path)  # rejects a file without the `text` column
shutil.copyfile(path, out + ".tmp")
shutil.move(out + ".tmp", out)
print(f"{len(captions)} captions {src} -> {out}")
