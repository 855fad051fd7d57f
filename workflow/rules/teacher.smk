# Stage 2: teacher trajectories for AMED training (resumable cache; a killed job resumes its shards).
# {method} here is the cache's owner: the first method (Table 2, then Table 4/5 variants) with these teacher
# settings; every cell with the same settings trains from it (grid.teacher_input).


rule teacher:
    input:
        unpack(lambda w: grid.prompts_input(config, w)),
        model="results/{dataset}/model.json",
    output:
        "results/{dataset}/teacher/{method}/nfe{nfe}/teacher.json",
    params:
        amed=AMED,
        device=config["device"],
        compile=grid.compile_flag(config),
        model=lambda w: DS[w.dataset]["model"],
        args=lambda w, input: grid.teacher_params(config, w, input),
        cache=lambda w, output: os.path.join(os.path.dirname(output[0]), "cache"),
    log:
        "results/logs/teacher/{dataset}/{method}/nfe{nfe}.log",
    benchmark:
        "results/benchmarks/teacher/{dataset}/{method}/nfe{nfe}.tsv"
    threads: RES["threads"]
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    shell:
        "export OMP_NUM_THREADS={threads}; "
        "{params.amed} teacher --model {params.model} {params.args} --device {params.device} "
        "{params.compile} --quiet "
        "--out {params.cache} > {log} 2>&1 && cp {params.cache}/meta.json {output}"
