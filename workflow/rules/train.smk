# Stage 3: train the AMED predictor g_phi (Algorithm 1) of each AMED method at each NFE.


rule train:
    input:
        unpack(lambda w: grid.teacher_input(config, w)),
    output:
        weights="results/{dataset}/{method}/nfe{nfe}/predictor.safetensors",
        record="results/{dataset}/{method}/nfe{nfe}/predictor.json",
    params:
        amed=AMED,
        device=config["device"],
        model=lambda w: DS[w.dataset]["model"],
        args=lambda w, input: grid.train_params(config, w, input),
        cache=lambda w, input: os.path.join(os.path.dirname(input.teacher), "cache"),
        stem=lambda w, output: output.weights.removesuffix(".safetensors"),
    log:
        "results/logs/train/{dataset}/{method}/nfe{nfe}.log",
    benchmark:
        "results/benchmarks/train/{dataset}/{method}/nfe{nfe}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{params.amed} train --model {params.model} {params.args} --cache {params.cache} --device {params.device} "
        "--quiet --out {params.stem} > {log} 2>&1"
