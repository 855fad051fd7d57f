"""Fig. 3: sample quality vs NFE (single-step dashed, multistep solid) from a long CSV
(dataset, method, nfe, metric, value). Snakemake: input.csv -> output.png, output.csv; params.single_step
(optional list of method names). CLI: python fig3.py table2.csv --png fig3.png [--single-step a b]."""
import argparse
import sys

from amed.analysis import plot_quality_vs_nfe, read_long_csv

if "snakemake" in globals():
    sys.stderr = sys.stdout = open(snakemake.log[0], "w") if snakemake.log else sys.stdout  # noqa: F821
    src, png, out_csv = snakemake.input.csv, snakemake.output.png, snakemake.output.csv  # noqa: F821
    single, model = snakemake.params.get("single_step"), snakemake.params.get("model", "")  # noqa: F821
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("csv", help="long CSV: dataset,method,nfe,metric,value")
    ap.add_argument("--png", default="fig3.png")
    ap.add_argument("--csv-out", default=None, help="data CSV (default: next to the PNG)")
    ap.add_argument("--single-step", nargs="*", default=None, help="single-step method names (default: by name pattern)")
    ap.add_argument("--model", default="")
    a = ap.parse_args()
    src, png, out_csv, single, model = a.csv, a.png, a.csv_out, a.single_step, a.model

rows = read_long_csv(src)
plot_quality_vs_nfe(rows, png, out_csv, model=model, single_step=single)
print(f"{len(rows)} points, {len({r['method'] for r in rows})} methods -> {png}")
