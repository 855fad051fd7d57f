# Stage 4: sample one seed shard of one (dataset, method, NFE) cell; `amed sample` writes atomically.


rule sample:
    input:
        unpack(lambda w: grid.sample_input(config, w)),
    output:
        "results/{dataset}/{method}/nfe{nfe}/samples/{shard}.npz",
    params:
        amed=AMED,
        device=config["device"],
        compile=grid.compile_flag(config),
        model=lambda w: DS[w.dataset]["model"],
        args=lambda w, input: grid.sample_params(config, w, input),
        seeds=lambda w: grid.shard_seeds(DS[w.dataset], w.shard),
        batch=lambda w: DS[w.dataset]["batch"],
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
        "{params.amed} sample --model {params.model} {params.args} --seeds {params.seeds} --batch {params.batch} "
        "--device {params.device} {params.compile} --quiet --out {output} > {log} 2>&1"
