"""Write the validated config, with every schema default filled in, next to the results it produced."""
import sys

import yaml

from amed._io import atomic_write_bytes

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
text = "# The config this run used, after schema validation (defaults filled in).\n"
text += yaml.safe_dump(dict(snakemake.params.config), sort_keys=False)  # noqa: F821
atomic_write_bytes(snakemake.output[0], text.encode())  # noqa: F821
print(f"wrote {snakemake.output[0]}")  # noqa: F821
