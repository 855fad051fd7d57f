"""Fig. 7: learned AMED coefficients r_n, c_n per step (mean ± std over samples) vs DPM-Solver-2
(r = 0.5, c = 1). Snakemake: input.predictor, params.model, params.samples -> output.png, output.csv.
CLI: python fig7.py results/digits/amed_solver/nfe5/predictor.json --model digits-8 --png fig7.png."""
import argparse
import sys

import amed
from amed.analysis import coefficient_rows, load_on, plot_coefficients
from amed.sampling import conditioned

if "snakemake" in globals():
    sys.stderr = sys.stdout = open(snakemake.log[0], "w") if snakemake.log else sys.stdout  # noqa: F821
    p = snakemake.params  # noqa: F821
    a = argparse.Namespace(predictor=snakemake.input.predictor, model=p.model, samples=int(p.get("samples", 1000)),  # noqa: F821
                           device=p.get("device", "auto"), png=snakemake.output.png, csv_out=snakemake.output.csv)  # noqa: F821
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("predictor", help="predictor .json/.safetensors")
    ap.add_argument("--model", default="digits-8")
    ap.add_argument("-n", "--samples", type=int, default=1000)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--png", default="fig7.png")
    ap.add_argument("--csv-out", default=None)
    a = ap.parse_args()

model, device = load_on(a.model, a.device)
predictor = amed.load_predictor(a.predictor)
seeds = list(range(a.samples))
with conditioned(model, seeds):
    coef = amed.amed_coefficients(model, amed.randn_seeds(seeds, model.info.shape, device=device), predictor)
name = f"{predictor.config.solver} NFE {predictor.config.nfe}"
plot_coefficients(coef, a.png, a.csv_out, model=a.model, predictor=name)
for r in coefficient_rows(coef):
    print(f"step {r['step']}: r = {r['r_mean']:.3f} ± {r['r_std']:.3f}, c = {r['c_mean']:.4f} ± {r['c_std']:.4f}")
