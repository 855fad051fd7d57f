# Stage 5: the metric of one cell (FD-digits on the embedded data, Inception FID on the paper's), with its
# bootstrap interval and replicates (shared draws across cells, for paired comparisons); one per training seed
# for AMED cells. The noise floor: FD of N real images against the full reference, where the images exist.


rule fid:
    input:
        unpack(lambda w: experiments.fid_input(config, w)),
    output:
        "results/{dataset}/{method}/nfe{nfe}/fid.json",
    params:
        seeds=lambda w: experiments.fid_seeds(config, w),
    log:
        "results/logs/fid/{dataset}/{method}/nfe{nfe}.log",
    benchmark:
        "results/benchmarks/fid/{dataset}/{method}/nfe{nfe}.tsv"
    resources:
        mem_mb=RES["mem_mb"],
        runtime=RES["runtime"],
        gpu=RES["gpu"],
    conda:
        "../envs/amed.yaml"
    shell:
        "amed fid --settings {input.settings:q} --images {input.shards:q} --ref {input.ref:q} "
        "--seeds {params.seeds} --out {output:q} > {log:q} 2>&1"


use rule fid as fid_seed with:
    output:
        "results/{dataset}/{method}/nfe{nfe}/seed{tseed}/fid.json",
    log:
        "results/logs/fid/{dataset}/{method}/nfe{nfe}/seed{tseed}.log",
    benchmark:
        "results/benchmarks/fid/{dataset}/{method}/nfe{nfe}/seed{tseed}.tsv"


rule noise_floor:
    input:
        ref="results/{dataset}/fid_ref.npz",
    output:
        "results/{dataset}/noise_floor.json",
    params:
        ref=lambda w: DS[w.dataset]["ref"],
        n=lambda w: experiments.sample_counts(config, w.dataset),
        repeats=20,
    log:
        "results/logs/noise_floor/{dataset}.log",
    benchmark:
        "results/benchmarks/noise_floor/{dataset}.tsv"
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/noise_floor.py"
