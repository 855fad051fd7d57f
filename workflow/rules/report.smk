# Stage 6: Table 2 (long CSV + paper layout), the audit against the paper's numbers, the resolved config.


localrules:
    resolved_config,
    table2,
    audit,


rule resolved_config:
    output:
        "results/config.resolved.yaml",
    params:
        config=config,
    log:
        "results/logs/resolved_config.log",
    benchmark:
        "results/benchmarks/resolved_config.tsv"
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/resolved_config.py"


rule table2:
    input:
        fid=grid.all_fid(config),
        config="results/config.resolved.yaml",
    output:
        csv="results/table2.csv",
        md="results/table2.md",
    params:
        grid=grid.grid(config),
        datasets=DS,
    log:
        "results/logs/table2.log",
    benchmark:
        "results/benchmarks/table2.tsv"
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/table2.py"


rule audit:
    input:
        table="results/table2.csv",
        paper=os.path.join(workflow.basedir, "workflow/resources/paper_results.csv"),
    output:
        csv="results/audit.csv",
        md="results/audit.md",
    params:
        datasets=DS,
    log:
        "results/logs/audit.log",
    benchmark:
        "results/benchmarks/audit.tsv"
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/audit.py"
