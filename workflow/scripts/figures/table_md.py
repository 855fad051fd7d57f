"""A long CSV (dataset, method, nfe, metric, value) as Markdown, methods x NFE, one table per (dataset,
metric), best per column in bold. Generic for Table 4 (teacher ablation) and Table 5 (schedule ablation).
Snakemake: input.csv -> output.md; params.title, params.row. CLI: python table_md.py t4.csv --md t4.md --title "Table 4"."""
import argparse
import sys

from amed.analysis import long_to_markdown, read_long_csv
from amed._io import atomic_write_bytes

if "snakemake" in globals():
    sys.stderr = sys.stdout = open(snakemake.log[0], "w") if snakemake.log else sys.stdout  # noqa: F821
    p = snakemake.params  # noqa: F821
    a = argparse.Namespace(csv=snakemake.input.csv, md=snakemake.output.md, title=p.get("title", ""),  # noqa: F821
                           row=p.get("row", "method"), col=p.get("col", "nfe"), fmt=p.get("fmt", "{:.2f}"))
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv")
    ap.add_argument("--md", default="-", help="output Markdown ('-' = stdout)")
    ap.add_argument("--title", default="")
    ap.add_argument("--row", default="method", help="column laid out as table rows")
    ap.add_argument("--col", default="nfe", help="column laid out as table columns")
    ap.add_argument("--fmt", default="{:.2f}")
    a = ap.parse_args()

md = long_to_markdown(read_long_csv(a.csv), title=a.title, row=a.row, col=a.col, fmt=a.fmt)
if a.md == "-":
    print(md)
else:
    atomic_write_bytes(a.md, md.encode())
    print(f"{a.csv} -> {a.md}")
