"""Training curves of the trained cells: held-out endpoint L2 of the student's rollout against Adam updates, one
panel per (method, NFE), one line per training seed, the neutral predictor dashed, the kept snapshot marked.
Snakemake: input.records -> output.png, output.csv. CLI: python training_curves.py results/*/*/nfe*/seed*/predictor.json."""
import argparse
import json
import sys

from amed.analysis import plot_training_curves, training_curve_rows

if "snakemake" in globals():
    sys.stderr = sys.stdout = open(snakemake.log[0], "w") if snakemake.log else sys.stdout  # noqa: F821
    a = argparse.Namespace(records=list(snakemake.input.records), png=snakemake.output.png,  # noqa: F821
                           csv_out=snakemake.output.csv)  # noqa: F821
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("records", nargs="+", help="predictor .json records")
    ap.add_argument("--png", default="training_curves.png")
    ap.add_argument("--csv-out", default=None)
    a = ap.parse_args()

runs = [(p, json.load(open(p))["config"]) for p in a.records]
plot_training_curves(runs, a.png, a.csv_out)
print(f"{len(training_curve_rows(runs))} points from {len(runs)} predictors -> {a.png}")
