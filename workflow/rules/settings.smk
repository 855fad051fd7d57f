# Stage 0: each cell's settings as data (amed.settings): every job of the cell reads this file, so no config value
# is ever pasted into a shell line. Rewritten only when the cell's settings change (Snakemake's params trigger).


localrules:
    settings,


rule settings:
    output:
        "results/{dataset}/{method}/nfe{nfe}/settings.json",
    params:
        settings=lambda w: experiments.cell_settings(config, w.dataset, w.method, int(w.nfe)),
    log:
        "results/logs/settings/{dataset}/{method}/nfe{nfe}.log",
    benchmark:
        "results/benchmarks/settings/{dataset}/{method}/nfe{nfe}.tsv"
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/settings.py"
