"""Table 2: the long CSV (one row per cell and training seed, with its interval) and the paper's layout in Markdown
(mean +- spread over training seeds, the interval of the mean, the noise floor, and which cells kept the neutral
predictor)."""
import json
import sys

import numpy as np

from amed._io import atomic_write_bytes, write_csv
from amed.uncertainty import mean_interval

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
NAMES = {"fd-digits": "FD-digits (Frechet distance in digit-classifier features; not Inception FID)",
         "inception": "FID (Inception-v3, 2048-d pool features)"}
runs, datasets = snakemake.params.runs, snakemake.params.datasets  # noqa: F821
records = {p.split("/predictor.json")[0]: json.load(open(p)) for p in snakemake.input.get("records", [])}  # noqa: F821
floors = {p.split("/")[1]: json.load(open(p)) for p in snakemake.input.get("floors", [])}  # noqa: F821
rows, reps = [], {}
for (ds, method, nfe, seed), path in zip(runs, snakemake.input.fid):  # noqa: F821
    rec = json.load(open(path))
    run = f"results/{ds}/{method}/nfe{nfe}" + ("" if seed is None else f"/seed{seed}")
    selected = (records.get(run, {}).get("config") or {}).get("selected") if seed is not None else None
    lo, hi = rec.get("ci", [None, None])
    rows.append({"dataset": ds, "method": method, "nfe": nfe, "train_seed": "" if seed is None else seed,
                 "metric": rec["metric"], "value": f"{rec['value']:.4f}",
                 "ci_lo": "" if lo is None else f"{lo:.4f}", "ci_hi": "" if hi is None else f"{hi:.4f}",
                 "n_samples": rec["num_images"], "selected": selected or "", "fid": path})
    reps[(ds, method, nfe, seed)] = rec.get("replicates")
write_csv(snakemake.output.csv, rows)  # noqa: F821


def cell_text(ds, key, nfe):
    sub = [r for r in rows if r["dataset"] == ds and r["method"] == key and r["nfe"] == nfe]
    vals = np.array([float(r["value"]) for r in sub])
    if len(sub) == 1 and sub[0]["train_seed"] == "":  # a baseline: the value and its interval
        r = sub[0]
        return f"{vals[0]:.2f}" + (f" [{float(r['ci_lo']):.2f}, {float(r['ci_hi']):.2f}]" if r["ci_lo"] else "")
    text = f"{vals.mean():.2f} ± {vals.std(ddof=1):.2f}" if len(vals) > 1 else f"{vals[0]:.2f}"
    rr = [reps[(ds, key, nfe, r["train_seed"])] for r in sub]
    if all(x is not None for x in rr):
        lo, hi = mean_interval(vals, np.array(rr), level)
        text += f" [{max(lo, 0.0):.2f}, {hi:.2f}]"
    neutral = sum(r["selected"] == "neutral" for r in sub)
    return text + (f" (neutral {neutral}/{len(sub)})" if neutral else "")


level = float(snakemake.params.level)  # noqa: F821
md = ["# Table 2 (reproduced)", "",
      "Lower is better. Baselines: the value over n samples (evaluation seeds 0..n-1) and its "
      f"{level:.0%} interval over other sets of n samples (value ± z × bootstrap standard deviation; like the value "
      "and the noise floor it keeps the metric's finite-n bias, so compare cells at the same n - the audit compares "
      "them pairwise). AMED methods: mean ± standard deviation over the training seeds (one predictor each, trained "
      "on the same teacher cache, scored on the same evaluation seeds) and the interval of that mean (a two-level "
      "bootstrap: training seeds, then samples). \"neutral k/K\": k of the "
      "K predictors kept the neutral predictor (r = 0.5, c = 1, a = 1: the base solver on the doubled grid) because "
      "it did better on the held-out trajectories than every training snapshot.", ""]
for ds, d in datasets.items():
    if not any(r["dataset"] == ds for r in rows):
        continue
    nfes = list(d["nfe"])
    n = d["num_samples"]
    md += [f"## {d['label'] or ds} ({d['model']})", "", f"Metric: {NAMES[d['metric']]}; {n} samples per cell."]
    fl = (floors.get(ds) or {}).get("floor", {}).get(str(n))
    if fl and fl.get("mean") is not None:
        md.append(f"Noise floor: {fl['mean']:.2f} ± {fl['sd']:.2f} (the metric of {n} real images drawn from the data "
                  f"set against the full reference, {floors[ds]['repeats']} draws): no sampler scores lower at this n.")
    elif ds in floors:
        md.append(f"Noise floor: not available ({floors[ds].get('why') or (fl or {}).get('why', '')}).")
    md += ["", "| Method | " + " | ".join(f"NFE {k}" for k in nfes) + " |", "|---|" + "---:|" * len(nfes)]
    for key, m in d["methods"].items():
        md.append(f"| {m['label'] or key} | " + " | ".join(cell_text(ds, key, k) for k in nfes) + " |")
    md.append("")
atomic_write_bytes(snakemake.output.md, "\n".join(md).encode())  # noqa: F821
print(f"{len(rows)} rows -> {snakemake.output.csv}, {snakemake.output.md}")  # noqa: F821
