"""Table 3/4/5 as a long CSV: dataset, method (the paper's row name), nfe (as the paper counts it), metric,
value, n_samples, sampler_nfe, cell (the results/{dataset}/{cell}/nfe{n}/ directory it came from)."""
import json
import sys

import pandas as pd

from amed.predictor import atomic_write_bytes

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
rows = []
for (ds, method, nfe, nfe_paper, cell), path in zip(snakemake.params.rows, snakemake.input.fid):  # noqa: F821
    rec = json.load(open(path))
    rows.append({"dataset": ds, "method": method, "nfe": nfe_paper, "metric": rec["metric"],
                 "value": round(rec["value"], 4), "n_samples": rec["num_images"], "sampler_nfe": nfe, "cell": cell})
atomic_write_bytes(snakemake.output[0], pd.DataFrame(rows).to_csv(index=False).encode())  # noqa: F821
print(f"{len(rows)} cells -> {snakemake.output[0]}")  # noqa: F821
