"""Reproduced vs reported (paper Tables 2-5): side by side with the difference where the metric is the paper's,
and, per dataset / ablation block, whether the paper's ordering at NFE 5 (Table 3: the smallest NFE) held."""
import os
import sys

import pandas as pd
from scipy.stats import kendalltau

from amed.predictor import atomic_write_bytes

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
paper = pd.read_csv(snakemake.input.paper, comment="#")  # noqa: F821
paper["table"] = paper["table"].astype(str)
datasets = snakemake.params.datasets  # noqa: F821
tables = [("2", snakemake.input.table)] + [  # noqa: F821
    (os.path.basename(p).removeprefix("table").removesuffix(".csv"), p) for p in snakemake.input.get("tables", [])]  # noqa: F821
rows, lines = [], ["# Audit: reproduced vs the paper", ""]


def ordering(table, label, mine, ref, same_metric, d):
    """One line: does the paper's ordering of ``mine``'s methods hold at NFE 5 (or the smallest common NFE)?"""
    nfes = sorted(set(mine["nfe"]) & set(ref["nfe"]))
    nfe = 5 if 5 in nfes else (nfes[0] if nfes else None)
    at = mine[mine["nfe"] == nfe].set_index("method")["value"]
    p = ref[ref["nfe"] == nfe].set_index("method")["value"]
    common = [m for m in at.index if m in p.index]
    if len(common) < 2:
        return f"- Table {table}, **{label}**: no paper ordering to compare with."
    order, porder = sorted(common, key=lambda m: at[m]), sorted(common, key=lambda m: p[m])
    tau = kendalltau([at[m] for m in common], [p[m] for m in common]).statistic
    note = "" if same_metric else f" (no paper number for {d['metric']}: orderings only, against {d['paper']})"
    return (f"- Table {table}, **{label}**: the paper's NFE-{nfe} ordering {'held' if order == porder else 'did NOT hold'}"
            f"{note}; Kendall tau {tau:.2f}. Ours: {' < '.join(order)}. Paper: {' < '.join(porder)}.")


for table, path in tables:
    ours = pd.read_csv(path)
    ptab = paper[paper["table"] == table]
    for ds in dict.fromkeys(ours["dataset"]):
        d = datasets[ds]
        mine = ours[ours["dataset"] == ds]
        ref = ptab[ptab["dataset"] == d["paper"]] if d["paper"] else ptab.iloc[:0]
        same_metric = d["metric"] == "inception"
        for r in mine.itertuples():
            hit = ref[(ref["method"] == r.method) & (ref["nfe"] == r.nfe)]
            rep = float(hit["value"].iloc[0]) if len(hit) and same_metric else None
            rows.append({"table": table, "dataset": ds, "method": r.method, "nfe": r.nfe, "metric": r.metric,
                         "reproduced": r.value, "reported": rep, "difference": None if rep is None else round(r.value - rep, 4),
                         "source": (f"Table {table}, {hit['source'].iloc[0]}" if len(hit) else "") if same_metric else
                         "no paper number (different metric)"})
        blocks = [("", mine)] if table in ("2", "3") else \
            [(b, mine[mine["method"].str.startswith(b + "[")]) for b in dict.fromkeys(mine["method"].str.split("[").str[0])]
        for block, sub in blocks:
            lines.append(ordering(table, f"{ds}{' ' + block if block else ''}", sub, ref, same_metric, d))
out = pd.DataFrame(rows)
atomic_write_bytes(snakemake.output.csv, out.to_csv(index=False).encode())  # noqa: F821
atomic_write_bytes(snakemake.output.md, ("\n".join(lines) + "\n").encode())  # noqa: F821
print("\n".join(lines))
