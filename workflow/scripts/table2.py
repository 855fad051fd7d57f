"""Table 2: the long CSV (dataset, method, nfe, metric, value, n_samples) and the paper's layout in Markdown."""
import csv
import io
import json
import sys

from amed.predictor import atomic_write_bytes

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
NAMES = {"fd-digits": "FD-digits (Frechet distance in digit-classifier features; not Inception FID)",
         "inception": "FID (Inception-v3, 2048-d pool features)"}
grid, datasets = snakemake.params.grid, snakemake.params.datasets  # noqa: F821
rows = []
for (ds, method, nfe), path in zip(grid, snakemake.input.fid):  # noqa: F821
    rec = json.load(open(path))
    rows.append({"dataset": ds, "method": method, "nfe": nfe, "metric": rec["metric"],
                 "value": f"{rec['value']:.4f}", "n_samples": rec["num_images"]})
buf = io.StringIO()
w = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
w.writeheader()
w.writerows(rows)
atomic_write_bytes(snakemake.output.csv, buf.getvalue().encode())  # noqa: F821

md = ["# Table 2 (reproduced)", "", "Lower is better. Each cell: one metric over n_samples images (seeds 0..n-1).", ""]
for ds, d in datasets.items():
    nfes = list(d["nfe"])
    val = {(r["method"], r["nfe"]): float(r["value"]) for r in rows if r["dataset"] == ds}
    md += [f"## {d['label'] or ds} ({d['model']})", "", f"Metric: {NAMES[d['metric']]}; {d['num_samples']} samples.", "",
           "| Method | " + " | ".join(f"NFE {n}" for n in nfes) + " |", "|---|" + "---:|" * len(nfes)]
    for key, m in d["methods"].items():
        md.append(f"| {m['label'] or key} | " + " | ".join(f"{val[(key, n)]:.2f}" for n in nfes) + " |")
    md.append("")
atomic_write_bytes(snakemake.output.md, "\n".join(md).encode())  # noqa: F821
print(f"{len(rows)} cells -> {snakemake.output.csv}, {snakemake.output.md}")  # noqa: F821
