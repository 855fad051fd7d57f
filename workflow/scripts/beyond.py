"""results/beyond.md: each method on its own schedule and on a GITS grid (mean ± sd over training seeds, interval),
and the verdicts of two claims per NFE, judged like the audit's (paired over evaluation seeds, two-level over
training seeds): "GITS improves the base solver" (base[gits] < base[own]) and "AMED on GITS beats both"
(AMED[gits] < AMED[own] and AMED[gits] < its base solver[gits], where that base is in the comparison); for a
method trained with another recipe (train.recipe, e.g. interval_search), "the recipe beats the authors'" against
the same method under the authors' recipe, on each schedule."""
import json
import sys

import numpy as np
import pandas as pd

from amed._io import atomic_write_bytes
from amed.uncertainty import compare, mean_interval, verdict

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
P = snakemake.params  # noqa: F821
b, level, boot_seed = P.beyond, float(P.uncertainty["level"]), int(P.uncertainty["boot_seed"])
d = P.datasets[b["dataset"]]
specs = {**d["methods"], **b["extra"]}
df = pd.read_csv(snakemake.input.csv)  # noqa: F821
runs = {}
for (row, nfe), g in df.groupby(["method", "nfe"], sort=False):
    recs = [json.load(open(p)) for p in g["fid"]]
    runs[(row, int(nfe))] = (np.array([r["value"] for r in recs]), np.array([r["replicates"] for r in recs]))


def key(m, sched):
    own = specs[m]["schedule"]
    return f"{m}[schedule={own if sched == 'own' else 'gits'}]"


def cell(m, sched, nfe):
    v, r = runs[(key(m, sched), nfe)]
    lo, hi = mean_interval(v, r, level, boot_seed)
    sd = f" ± {v.std(ddof=1):.2f}" if len(v) > 1 else ""
    return f"{v.mean():.2f}{sd} [{max(lo, 0):.2f}, {hi:.2f}]"


def judge(a, b_, nfe):
    va, ra = runs[(a, nfe)]
    vb, rb = runs[(b_, nfe)]
    c = compare(va, ra, vb, rb, level, boot_seed)
    return verdict(c), c


nfes = list(b["nfe"])
md = ["# Beyond the paper: AMED on GITS time grids", "",
      f"{d['label'] or b['dataset']} ({d['model']}), {d['metric']}, lower is better. Each cell: mean ± sd over training "
      f"seeds [{level:.0%} interval of the mean] (baselines: one run). `gits`: a GITS grid (Chen et al., ICML 2024) "
      f"searched for that cell (warm-up {b['gits']['warmup']}"
      + (f", AMED jumps priced on {b['gits']['jump_warmup']} of them" if b["gits"].get("jump_warmup") else "")
      + f", {b['gits']['num_fine']} fine points, coefficient "
      f"{b['gits']['coeff']}, metric {b['gits']['metric']}); AMED grids choose the student's N points, the predictor "
      "the mid-points.", "", "| method | schedule | " + " | ".join(f"NFE {n}" for n in nfes) + " |",
      "|---|---|" + "---:|" * len(nfes)]
for m in b["methods"]:
    for sched in ("own", "gits"):
        md.append(f"| {specs[m]['label'] or m} | {specs[m]['schedule'] if sched == 'own' else 'gits'} | "
                  + " | ".join(cell(m, sched, n) for n in nfes) + " |")
md += ["", "Verdicts (decision rule as in the audit: the interval of the difference below 0 = held, above 0 = not "
       "held, else inconclusive; a claim with two parts holds if both do and fails if either fails):", "",
       "| claim | NFE | difference [interval] | verdict |", "|---|---:|---|---|"]
rows, counts = [], {"held": 0, "not held": 0, "inconclusive": 0}
for m in b["methods"]:
    base = specs[m]["solver"] if specs[m]["kind"] == "amed_plugin" else None
    base_key = next((k for k in b["methods"] if specs[k]["kind"] == "baseline" and specs[k]["solver"] == base), None)
    for nfe in nfes:
        if specs[m]["kind"] == "baseline":
            v, c = judge(key(m, "gits"), key(m, "own"), nfe)
            text = f"GITS improves {m}: {m}[gits] < {m}[own]"
            diff = f"{c.difference:+.2f} [{c.lo:+.2f}, {c.hi:+.2f}]"
        else:
            v1, c1 = judge(key(m, "gits"), key(m, "own"), nfe)
            parts, diffs = [v1], [f"{c1.difference:+.2f} [{c1.lo:+.2f}, {c1.hi:+.2f}]"]
            text = f"AMED on GITS beats both: {m}[gits] < {m}[own]"
            if base_key is not None:
                v2, c2 = judge(key(m, "gits"), key(base_key, "gits"), nfe)
                parts.append(v2)
                diffs.append(f"{c2.difference:+.2f} [{c2.lo:+.2f}, {c2.hi:+.2f}]")
                text += f" and < {base_key}[gits]"
            v = "held" if all(p == "held" for p in parts) else "not held" if "not held" in parts else "inconclusive"
            diff = "; ".join(diffs)
        counts[v] += 1
        rows.append((text, nfe, diff, v))
        md.append(f"| {text} | {nfe} | {diff} | {v} |")


def recipe(m):
    return (specs[m].get("train") or {}).get("recipe") or "authors"


# A method trained with another recipe (e.g. interval_search) against the same method under the authors' recipe.
for m in b["methods"]:
    if specs[m]["kind"] == "baseline" or recipe(m) == "authors":
        continue
    same = ("kind", "solver", "schedule", "afs")
    sib = next((k for k in b["methods"] if recipe(k) == "authors"
                and all(specs[k].get(f) == specs[m].get(f) for f in same)), None)
    if sib is None:
        continue
    for sched in ("own", "gits"):
        for nfe in nfes:
            v, c = judge(key(m, sched), key(sib, sched), nfe)
            text = f"recipe {recipe(m)} beats the authors': {key(m, sched)} < {key(sib, sched)}"
            diff = f"{c.difference:+.2f} [{c.lo:+.2f}, {c.hi:+.2f}]"
            counts[v] += 1
            rows.append((text, nfe, diff, v))
            md.append(f"| {text} | {nfe} | {diff} | {v} |")
md.insert(2, f"**{len(rows)} claims: {counts['held']} held, {counts['not held']} not held, "
             f"{counts['inconclusive']} inconclusive.**")
md.insert(3, "")
atomic_write_bytes(snakemake.output.md, ("\n".join(md) + "\n").encode())  # noqa: F821
print("\n".join(md))
