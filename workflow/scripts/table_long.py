"""Table 3/4/5 as a long CSV: dataset, method (the paper's row name), nfe (as the paper counts it), train_seed, metric,
value and its interval, n_samples, sampler_nfe, cell (the results/{dataset}/{cell}/nfe{n}/ directory it came from),
selected (which candidate a trained predictor kept) and fid (the fid.json, with its bootstrap replicates)."""
import json
import os
import sys

import pandas as pd

from amed._io import atomic_write_bytes

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
rows = []
for (ds, method, nfe, nfe_paper, cell, seed), path in zip(snakemake.params.rows, snakemake.input.fid):  # noqa: F821
    rec = json.load(open(path))
    record = os.path.join(os.path.dirname(path), "predictor.json")
    selected = (json.load(open(record)).get("config") or {}).get("selected") if seed is not None else None
    lo, hi = rec.get("ci", [None, None])
    rows.append({"dataset": ds, "method": method, "nfe": nfe_paper, "train_seed": seed, "metric": rec["metric"],
                 "value": round(rec["value"], 4), "ci_lo": lo, "ci_hi": hi, "n_samples": rec["num_images"],
                 "sampler_nfe": nfe, "cell": cell, "selected": selected or "", "fid": path})
df = pd.DataFrame(rows)
df["train_seed"] = df["train_seed"].astype("Int64")
atomic_write_bytes(snakemake.output[0], df.to_csv(index=False).encode())  # noqa: F821
print(f"{len(rows)} rows -> {snakemake.output[0]}")  # noqa: F821
