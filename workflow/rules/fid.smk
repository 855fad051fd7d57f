# Stage 5: the metric of one cell (FD-digits on the embedded data, Inception FID on the paper's).


rule fid:
    input:
        shards=lambda w: grid.fid_shards(config, w),
        ref="results/{dataset}/fid_ref.npz",
    output:
        "results/{dataset}/{method}/nfe{nfe}/fid.json",
    params:
        amed=AMED,
        metric=lambda w: DS[w.dataset]["metric"],
        num=lambda w: grid.fid_num(config, w),
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
        "{params.amed} fid --images {input.shards} --ref {input.ref} --metric {params.metric} --num {params.num} "
        "--out {output} > {log} 2>&1"
