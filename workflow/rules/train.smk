# Stage 3: train the AMED predictor g_phi (Algorithm 1) of each AMED method at each NFE, once per training seed
# (K predictors per cell from one teacher cache; train.seeds in the config).


rule train:
    input:
        unpack(lambda w: experiments.train_input(config, w)),
    output:
        weights="results/{dataset}/{method}/nfe{nfe}/seed{tseed}/predictor.safetensors",
        record="results/{dataset}/{method}/nfe{nfe}/seed{tseed}/predictor.json",
    params:
        cache=lambda w, input: experiments.cache_flag(input),
        prompts=lambda w, input: experiments.prompts_flag(input),
        stem=lambda w, output: output.weights.removesuffix(".safetensors"),
    log:
        "results/logs/train/{dataset}/{method}/nfe{nfe}/seed{tseed}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{method}/nfe{nfe}/seed{tseed}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "amed train --settings {input.settings:q} {params.cache} {params.prompts} --train-seed {wildcards.tseed} "
        "--quiet --out {params.stem:q} > {log:q} 2>&1"
