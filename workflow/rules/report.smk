# Stage 6: Tables 2-5 (long CSV + paper layout), the audit against the paper's numbers, the resolved config.


localrules:
    resolved_config,
    table2,
    audit,
    table_csv,
    table_md,
    audit_paper,
    training_curves,


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
        fid=experiments.all_fid(config),
        records=experiments.table2_records(config),
        floors=experiments.noise_floors(config),
        config="results/config.resolved.yaml",
    output:
        csv=report("results/table2.csv", caption="../report/table2.rst", category="Tables"),
        md="results/table2.md",
    params:
        runs=experiments.table2_runs(config),
        datasets=DS,
        level=config["uncertainty"]["level"],
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
        csv=report("results/audit.csv", caption="../report/audit.rst", category="Audit"),
        md="results/audit.md",
        values="results/audit_values.csv",
    params:
        datasets=DS,
        uncertainty=config["uncertainty"],
        table5_methods=config["table5"]["methods"],
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


rule training_curves:  # held-out endpoint L2 of the student's rollout against updates, every trained cell of Table 2
    input:
        records=experiments.table2_records(config),
    output:
        png=report("results/training_curves.png", caption="../report/training_curves.rst", category="Figures"),
        csv="results/training_curves.csv",
    log:
        "results/logs/training_curves.log",
    benchmark:
        "results/benchmarks/training_curves.tsv"
    resources:
        mem_mb=1000,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/figures/training_curves.py"


rule table_csv:  # Table 3 (SD), 4 (teacher ablation), 5 (schedule ablation): long CSV of their cells
    input:
        fid=lambda w: experiments.table_fid(config, w.table)[0],
        config="results/config.resolved.yaml",
    output:
        report("results/{table}.csv", caption="../report/tables.rst", category="Tables"),
    params:
        rows=lambda w: experiments.table_fid(config, w.table)[1],
    log:
        "results/logs/{table}_csv.log",
    benchmark:
        "results/benchmarks/{table}_csv.tsv"
    wildcard_constraints:
        table="table3|table4|table5|beyond",
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/table_long.py"


rule table_md:
    input:
        csv="results/{table}.csv",
    output:
        md="results/{table}.md",
    params:
        title=lambda w: {"table3": "Table 3 (reproduced): text-to-image, NFE counts both CFG branches",
                         "table4": "Table 4 (reproduced): teacher solvers",
                         "table5": "Table 5 (reproduced): time schedules"}[w.table],
    log:
        "results/logs/{table}_md.log",
    benchmark:
        "results/benchmarks/{table}_md.tsv"
    wildcard_constraints:
        table="table3|table4|table5",
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/figures/table_md.py"


rule audit_paper:  # the audit of every table this config produces (rule all's audit covers Table 2 only)
    input:
        table="results/table2.csv",
        tables=[f"results/{t}.csv" for t in ("table3", "table4", "table5") if config[t]["dataset"] is not None],
        paper=os.path.join(workflow.basedir, "workflow/resources/paper_results.csv"),
    output:
        csv=report("results/audit_paper.csv", caption="../report/audit.rst", category="Audit"),
        md="results/audit_paper.md",
        values="results/audit_paper_values.csv",
    params:
        datasets=DS,
        uncertainty=config["uncertainty"],
        table5_methods=config["table5"]["methods"],
    log:
        "results/logs/audit_paper.log",
    benchmark:
        "results/benchmarks/audit_paper.tsv"
    resources:
        mem_mb=500,
        runtime=5,
    conda:
        "../envs/amed.yaml"
    script:
        "../scripts/audit.py"
