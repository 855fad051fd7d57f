# Stage 7: the paper's figures (3, 4, 5, 7) on figures.dataset's model, and one sample grid per Table 2 cell.
# Each figure writes its PNG and the CSV of the plotted numbers; the scripts also run from the command line.

FIG = config["figures"]
FIG_DS = FIG["dataset"]


localrules:
    fig3,
    sample_grid,


rule fig3:  # quality vs NFE of the whole Table 2
    input:
        csv="results/table2.csv",
    output:
        png=report("results/fig3.png", caption="../report/fig3.rst", category="Figures"),
        csv="results/fig3.csv",
    log:
        "results/logs/fig3.log",
    benchmark:
        "results/benchmarks/fig3.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/figures/fig3.py"


rule fig4:  # PCA of Heun trajectories
    input:
        model=f"results/{FIG_DS}/model.json",
    output:
        png=report("results/fig4.png", caption="../report/fig4.rst", category="Figures"),
        csv="results/fig4.csv",
    params:
        model=DS[FIG_DS]["model"] if FIG_DS else None,
        device=config["device"],
        **(FIG["fig4"]),
    log:
        "results/logs/fig4.log",
    benchmark:
        "results/benchmarks/fig4.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/figures/fig4.py"


rule fig5:  # relative alignment of a greedy search on r_n
    input:
        model=f"results/{FIG_DS}/model.json",
    output:
        png=report("results/fig5.png", caption="../report/fig5.rst", category="Figures"),
        csv="results/fig5.csv",
    params:
        model=DS[FIG_DS]["model"] if FIG_DS else None,
        device=config["device"],
        **(FIG["fig5"]),
    log:
        "results/logs/fig5.log",
    benchmark:
        "results/benchmarks/fig5.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/figures/fig5.py"


rule fig7:  # learned r_n, c_n of the Table 2 AMED-Solver predictor (training seed 0)
    input:
        predictor=f"results/{FIG_DS}/{FIG['fig7']['method']}/nfe{FIG['fig7']['nfe']}/seed0/predictor.json",
    output:
        png=report("results/fig7.png", caption="../report/fig7.rst", category="Figures"),
        csv="results/fig7.csv",
    params:
        model=DS[FIG_DS]["model"] if FIG_DS else None,
        device=config["device"],
        samples=FIG["fig7"]["samples"],
    log:
        "results/logs/fig7.log",
    benchmark:
        "results/benchmarks/fig7.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/figures/fig7.py"


rule sample_grid:  # the first figures.grid.count seeds of shard 0 of one cell (training seed 0 for AMED cells)
    input:
        npz=lambda w: experiments.grid_input(config, w),
    output:
        png=report("results/{dataset}/{method}/nfe{nfe}/grid.png", caption="../report/grid.rst",
                   category="Sample grids", subcategory="{dataset}", labels={"method": "{method}", "NFE": "{nfe}"}),
        csv="results/{dataset}/{method}/nfe{nfe}/grid.csv",
    params:
        grid_count=FIG["grid"]["count"],
    log:
        "results/logs/grid/{dataset}/{method}/nfe{nfe}.log",
    benchmark:
        "results/benchmarks/grid/{dataset}/{method}/nfe{nfe}.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/figures/grid.py"
