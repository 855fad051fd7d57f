"""Fig. 5: relative alignment ||x^B - x^G|| - ||x^S - x^G|| of a greedy grid search on r_n (c_n = 1),
N = 6 polynomial time points, ground truth Heun ~80 NFE. Snakemake: params.model, params.samples,
params.solvers -> output.png, output.csv. CLI: python fig5.py --model digits-8 -n 128 --png fig5.png."""
import argparse
import sys

import amed
from amed.analysis import FIG5_SOLVERS, alignment_rows, load_on, plot_relative_alignment, relative_alignment
from amed.sampling import conditioned

if "snakemake" in globals():
    sys.stderr = sys.stdout = open(snakemake.log[0], "w") if snakemake.log else sys.stdout  # noqa: F821
    p = snakemake.params  # noqa: F821
    a = argparse.Namespace(model=p.model, samples=int(p.get("samples", 128)), solvers=list(p.get("solvers", FIG5_SOLVERS)),
                           num_points=int(p.get("num_points", 6)), device=p.get("device", "auto"),
                           png=snakemake.output.png, csv_out=snakemake.output.csv)  # noqa: F821
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="digits-8")
    ap.add_argument("-n", "--samples", type=int, default=128)
    ap.add_argument("--solvers", nargs="+", default=list(FIG5_SOLVERS))
    ap.add_argument("--num-points", type=int, default=6, help="student time points N (paper: 6)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--png", default="fig5.png")
    ap.add_argument("--csv-out", default=None)
    a = ap.parse_args()

model, device = load_on(a.model, a.device)
seeds = list(range(a.samples))
with conditioned(model, seeds):
    ra = relative_alignment(model, amed.randn_seeds(seeds, model.info.shape, device=device), a.solvers,
                            num_points=a.num_points)
plot_relative_alignment(ra, a.png, a.csv_out, model=a.model)
for r in alignment_rows(ra):
    print(f"{r['solver']:8s} step {r['step']} (t={r['t_next']:.3g}): alignment {r['alignment_mean']:+.4f} "
          f"(> 0 for {r['frac_positive']:.0%}, < 0 for {r['frac_negative']:.0%} of samples), r = {r['r_mean']:.2f} ± {r['r_std']:.2f}")
