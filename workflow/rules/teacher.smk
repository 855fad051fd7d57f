# Stage 2: teacher trajectories for AMED training (resumable cache; a killed job resumes its shards, a cache
# built for other settings is replaced). {method} here is the cache's owner: the first method (Table 2, then
# Table 4/5 variants) with these teacher settings; every cell with the same settings trains from it
# (experiments.teacher_input). The manifest teacher.json (a copy of the cache's meta.json) is the declared output.


rule teacher:
    input:
        unpack(lambda w: experiments.teacher_rule_input(config, w)),
    output:
        "results/{dataset}/teacher/{method}/nfe{nfe}/teacher.json",
    params:
        prompts=lambda w, input: experiments.prompts_flag(input),
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
        "amed teacher --settings {input.settings:q} {params.prompts} --replace-mismatched --quiet "
        "--out {params.cache:q} > {log:q} 2>&1 && cp {params.cache:q}/meta.json {output:q}"


rule teacher_prune:  # train.prune_cache: the shards go once every predictor trained from this cache exists
    input:
        manifest="results/{dataset}/teacher/{method}/nfe{nfe}/teacher.json",
        records=lambda w: experiments.cache_consumers(config, w),
    output:
        "results/{dataset}/teacher/{method}/nfe{nfe}/pruned.json",
    log:
        "results/logs/teacher_prune/{dataset}/{method}/nfe{nfe}.log",
    benchmark:
        "results/benchmarks/teacher_prune/{dataset}/{method}/nfe{nfe}.tsv"
    resources:
        mem_mb=500,
        runtime=10,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/prune_cache.py"
