"""The audit: every ordering claim of the paper's tables this config reproduces, judged with intervals over the
evaluated samples and the training seeds (amed.audit), and the reproduced-vs-reported values where the metric is
the paper's."""
import json
import sys

import numpy as np
import pandas as pd

from amed._io import atomic_write_bytes
from amed.audit import judge, pairs_table2, pairs_table4, pairs_table5, paper_claims, summary

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
paper = pd.read_csv(snakemake.input.paper, comment="#")  # noqa: F821
paper["table"] = paper["table"].astype(str)
paper_rows = paper.to_dict("records")
P = snakemake.params  # noqa: F821
datasets, level, boot_seed = P.datasets, float(P.uncertainty["level"]), int(P.uncertainty["boot_seed"])
tables = [("2", snakemake.input.table)] + [  # noqa: F821
    (p.rsplit("/", 1)[-1].removeprefix("table").removesuffix(".csv"), p) for p in snakemake.input.get("tables", [])]  # noqa: F821


def ours_of(df: pd.DataFrame) -> dict:
    """(method, nfe) -> (values over runs, replicates [runs, n_boot]) from a long table's fid.json paths."""
    out = {}
    for (method, nfe), g in df.groupby(["method", "nfe"], sort=False):
        recs = [json.load(open(p)) for p in g["fid"]]
        reps = [r.get("replicates") for r in recs]
        out[(method, int(nfe))] = (np.array([r["value"] for r in recs]),
                                   np.array(reps) if all(x is not None for x in reps) else None)
    return out


claims, values = [], []
for table, path in tables:
    ours_all = pd.read_csv(path)
    for ds in dict.fromkeys(ours_all["dataset"]):
        d = datasets[ds]
        mine = ours_all[ours_all["dataset"] == ds]
        ours = ours_of(mine)
        same_metric = d["metric"] == "inception"
        ref = paper[(paper["table"] == table) & (paper["dataset"] == d["paper"])] if d["paper"] else paper.iloc[:0]
        for (method, nfe), (vals, _) in ours.items():
            hit = ref[(ref["method"] == method) & (ref["nfe"] == nfe)]
            rep = float(hit["value"].iloc[0]) if len(hit) and same_metric else None
            values.append({"table": table, "dataset": ds, "method": method, "nfe": nfe, "metric": d["metric"],
                           "reproduced": round(float(vals.mean()), 4), "runs": len(vals), "reported": rep,
                           "difference": None if rep is None else round(float(vals.mean()) - rep, 4),
                           "source": (f"Table {table}, {hit['source'].iloc[0]}" if len(hit) else "") if same_metric
                           else "no paper number (different metric)"})
        if not d["paper"]:
            continue
        if table in ("2", "3"):
            amed_keys = {k for k, m in d["methods"].items() if m["kind"] != "baseline"}
            pf = pairs_table2(amed_keys)
        elif table == "4":
            pf = pairs_table4
        else:
            t5 = P.table5_methods
            bases = {m["solver"]: k for k, m in t5.items() if m["kind"] == "baseline"}
            pf = pairs_table5({k: bases.get(m["solver"]) for k, m in t5.items() if m["kind"] == "amed_plugin"})
        for c in paper_claims(paper_rows, table, d["paper"], set(ours), pf):
            if ours[(c.better, c.nfe)][1] is None or ours[(c.worse, c.nfe)][1] is None:
                continue  # a cell scored without replicates cannot be judged
            claims.append({"dataset": ds, "paper_dataset": d["paper"], **judge(c, ours, level, boot_seed)})

embedded = [ds for ds in dict.fromkeys(r["dataset"] for r in claims) if datasets[ds]["metric"] != "inception"]
lines = ["# Audit of the paper's claims", ""]
if embedded:
    lines += [f"**On {', '.join(embedded)} these are analogues of the paper's claims, not verdicts on them:** the paper "
              f"measured Inception FID on {', '.join(sorted({datasets[d]['paper'] for d in embedded}))}; here the same "
              "orderings are tested on another model with another metric. They say whether the method behaves as "
              "claimed on this model, nothing about the paper's numbers.", ""]
lines += [f"**{summary(claims)}.**" if claims else "No claim of the paper could be judged with this config.", "",
          "A claim is an ordering the paper reports: \"A < B\" at one NFE when the paper's A is lower (better) than its "
          "B. Decision rule: both cells are scored on the same evaluation seeds; the difference mean(A) - mean(B) (means "
          "over training seeds for AMED methods) gets a "
          f"{level:.0%} two-level basic-bootstrap interval - replicate b resamples the evaluated samples (the same "
          "resample for both cells: paired) and the training seeds of each method. **held**: the interval lies below 0; "
          "**not held**: above 0; **inconclusive**: it contains 0. \"seed pairs\": pairs (run of A, run of B) in which "
          "A scored lower. With 3 training seeds the between-seed part of the interval is coarse (a bootstrap over 3 "
          "values understates their spread by about a fifth).", ""]
if claims:
    lines += ["| table | dataset | NFE | claim (paper) | paper | ours | A - B [interval] | seed pairs | verdict |",
              "|---|---|---:|---|---|---|---|---:|---|"]
    for r in claims:
        lines.append(f"| {r['table']} | {r['dataset']} | {r['nfe']} | {r['claim']} | {r['paper_better']:g} < "
                     f"{r['paper_worse']:g} | {r['ours_better']:.2f} vs {r['ours_worse']:.2f} | {r['difference']:+.2f} "
                     f"[{r['ci_lo']:+.2f}, {r['ci_hi']:+.2f}] | {r['pairs_won']}/{r['pairs']} | {r['verdict']} |")
    lines.append("")
same = [v for v in values if v["reported"] is not None]
if same:
    lines += ["## Reproduced vs reported (same metric)", "", "| table | dataset | method | NFE | reproduced | reported | "
              "difference |", "|---|---|---|---:|---:|---:|---:|"]
    lines += [f"| {v['table']} | {v['dataset']} | {v['method']} | {v['nfe']} | {v['reproduced']:.2f} | {v['reported']:.2f} "
              f"| {v['difference']:+.2f} |" for v in same] + [""]
cols = ["dataset", "paper_dataset", "table", "nfe", "claim", "better", "worse", "paper_better", "paper_worse",
        "ours_better", "ours_worse", "difference", "ci_lo", "ci_hi", "level", "runs_better", "runs_worse", "pairs_won",
        "pairs", "verdict", "source"]
atomic_write_bytes(snakemake.output.csv, pd.DataFrame(claims, columns=cols).to_csv(index=False).encode())  # noqa: F821
atomic_write_bytes(snakemake.output.values, pd.DataFrame(values).to_csv(index=False).encode())  # noqa: F821
atomic_write_bytes(snakemake.output.md, ("\n".join(lines) + "\n").encode())  # noqa: F821
print("\n".join(lines))
