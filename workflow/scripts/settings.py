"""Write one cell's settings file (amed.settings): the resolved config of a (dataset, method, NFE) cell."""
import sys

from amed.settings import write_settings

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
path = write_settings(snakemake.output[0], dict(snakemake.params.settings))  # noqa: F821
print(f"settings -> {path}")
