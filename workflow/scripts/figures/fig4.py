"""Fig. 4: PCA of sampling trajectories (Heun, 80 NFE): relative projection error onto the top-2
principal components and cumulative explained variance. Snakemake: params.model, params.trajectories,
params.nfe, params.batch -> output.png, output.csv. CLI: python fig4.py --model digits-8 -n 1000 --png fig4.png."""
import argparse
import sys

from amed.analysis import PAPER_PROJ_ERROR, load_on, plot_trajectory_pca, sampler_pca

if "snakemake" in globals():
    sys.stderr = sys.stdout = open(snakemake.log[0], "w") if snakemake.log else sys.stdout  # noqa: F821
    p = snakemake.params  # noqa: F821
    a = argparse.Namespace(model=p.model, trajectories=int(p.get("trajectories", 1000)), nfe=int(p.get("nfe", 80)),
                           batch=int(p.get("batch", 250)), device=p.get("device", "auto"),
                           png=snakemake.output.png, csv_out=snakemake.output.csv)  # noqa: F821
else:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default="digits-8")
    ap.add_argument("-n", "--trajectories", type=int, default=1000)
    ap.add_argument("--nfe", type=int, default=80, help="Heun NFE (paper: 80)")
    ap.add_argument("--batch", type=int, default=250)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--png", default="fig4.png")
    ap.add_argument("--csv-out", default=None)
    a = ap.parse_args()

model, device = load_on(a.model, a.device)
pca, t = sampler_pca(model, range(a.trajectories), model.info.shape, batch=a.batch, device=device,
                     solver="heun", nfe=a.nfe, schedule="polynomial", rho=7.0)
plot_trajectory_pca(pca, a.png, a.csv_out, t=t, model=a.model, solver=f"Heun, {a.nfe} NFE")
worst = float(pca["proj_error_mean"].max())
print(f"{a.model}: max mean top-2 projection error {worst:.2%} (paper: <= {PAPER_PROJ_ERROR:.0%}, "
      f"{'within' if worst <= PAPER_PROJ_ERROR else 'ABOVE'}); explained variance with 1/2/3 PCs: "
      + "/".join(f"{float(v):.4%}" for v in pca["explained_mean"][:3]) + f" over {a.trajectories} trajectories")
