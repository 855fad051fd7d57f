# Stage 1: materialise and verify the checkpoint and the reference statistics of each dataset.


rule model:
    output:
        "results/{dataset}/model.json",
    params:
        model=lambda w: DS[w.dataset]["model"],
        identity=lambda w: experiments.model_identity(DS[w.dataset]["model"]),
    log:
        "results/logs/model/{dataset}.log",
    benchmark:
        "results/benchmarks/model/{dataset}.tsv"
    resources:
        mem_mb=RES["mem_mb"],
        runtime=60,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/model.py"


rule fid_ref:  # coco-val2014 reads the prompts' image_id column (Table 3); a local .npz ref is an input
    input:
        unpack(lambda w: experiments.fid_ref_input(config, w)),
    output:
        "results/{dataset}/fid_ref.npz",
    params:
        ref=lambda w: DS[w.dataset]["ref"],
    log:
        "results/logs/fid_ref/{dataset}.log",
    benchmark:
        "results/benchmarks/fid_ref/{dataset}.tsv"
    resources:
        mem_mb=lambda w: 8000 if DS[w.dataset]["ref"] == "coco-val2014" else 1000,
        runtime=lambda w: 360 if DS[w.dataset]["ref"] == "coco-val2014" else 30,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/fid_ref.py"


rule prompts:  # text-to-image datasets (Table 3): the captions CSV, prompt i <-> seed i
    output:
        "results/{dataset}/prompts.csv",
    params:
        prompts=lambda w: DS[w.dataset]["prompts"],
    log:
        "results/logs/prompts/{dataset}.log",
    benchmark:
        "results/benchmarks/prompts/{dataset}.tsv"
    resources:
        mem_mb=1000,
        runtime=30,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/prompts.py"
