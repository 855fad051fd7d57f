# Stage 4: sample one seed shard of one (dataset, method, NFE) cell - of each training seed's predictor for AMED
# cells; `amed sample` writes atomically. Every setting comes from the cell's settings file (and the predictor).


rule sample:
    input:
        unpack(lambda w: experiments.sample_input(config, w)),
    output:
        "results/{dataset}/{method}/nfe{nfe}/samples/{shard}.npz",
    params:
        seeds=lambda w: experiments.shard_seeds(config, w),
        predictor=lambda w, input: experiments.predictor_flag(input),
        prompts=lambda w, input: experiments.prompts_flag(input),
    log:
        "results/logs/sample/{dataset}/{method}/nfe{nfe}/{shard}.log",
    benchmark:
        "results/benchmarks/sample/{dataset}/{method}/nfe{nfe}/{shard}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "amed sample --settings {input.settings:q} {params.predictor} {params.prompts} --seeds {params.seeds} "
        "--quiet --out {output:q} > {log:q} 2>&1"


use rule sample as sample_seed with:
    output:
        "results/{dataset}/{method}/nfe{nfe}/seed{tseed}/samples/{shard}.npz",
    log:
        "results/logs/sample/{dataset}/{method}/nfe{nfe}/seed{tseed}/{shard}.log",
    benchmark:
        "results/benchmarks/sample/{dataset}/{method}/nfe{nfe}/seed{tseed}/{shard}.tsv"
