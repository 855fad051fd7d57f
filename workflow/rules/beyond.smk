# Beyond the paper: GITS time grids (amed.search_schedule) for cells whose schedule is `gits`, and the comparison
# of each `beyond` method on its own schedule and on a GITS grid (results/beyond.csv, results/beyond.md).


rule gits:  # the DP grid of one cell: warm-up on a fine teacher grid, cost of each jump, the coefficient-weighted DP
    input:
        settings="results/{dataset}/{method}/nfe{nfe}/settings.json",
        model="results/{dataset}/model.json",
    output:
        "results/{dataset}/gits/{method}/nfe{nfe}/grid.json",
    log:
        "results/logs/gits/{dataset}/{method}/nfe{nfe}.log",
    benchmark:
        "results/benchmarks/gits/{dataset}/{method}/nfe{nfe}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "amed gits --settings {input.settings:q} --quiet --out {output:q} > {log:q} 2>&1"


rule beyond_md:  # the table with intervals and the verdicts of its two claims
    input:
        csv="results/beyond.csv",
    output:
        md=report("results/beyond.md", caption="../report/beyond.rst", category="Beyond the paper"),
    params:
        beyond=config["beyond"],
        uncertainty=config["uncertainty"],
        datasets=DS,
    log:
        "results/logs/beyond_md.log",
    benchmark:
        "results/benchmarks/beyond_md.tsv"
    localrule: True
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/beyond.py"
