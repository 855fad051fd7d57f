# AMED workflow (index). Stages live in workflow/rules/*.smk; see results/README.md.
#   snakemake --profile profiles/local           # default config.yaml: Table 2 on embedded digits-8, offline, CPU
#   snakemake --profile profiles/local paper     # + Tables 4, 5, Figures 3/4/5/7, sample grids, full audit
#   snakemake --report results/report.html paper # the HTML report (figures, tables, captions, rule runtimes)
#   snakemake --profile profiles/slurm results/table2.csv --configfile=config/paper.yaml   # paper grid, SLURM
#   snakemake --cores 1 bench                    # benchmarks -> results/bench/*.csv (on demand only)
import os
import re
import sys

from snakemake.utils import min_version, validate

min_version("8.0")

sys.path.insert(0, os.path.join(workflow.basedir, "workflow", "scripts"))
import experiments  # noqa: E402  (semantic config checks + CLI arguments; the registries come from `amed`)
import costs as run_costs  # noqa: E402  (what the run will cost, printed at start)


# The default config.yaml; a --configfile on the command line REPLACES it rather than being deep-merged
# into it (a merge would keep config.yaml's datasets next to the paper's).
if not workflow.config_settings.configfiles:
    workflow.configfile("config.yaml" if os.path.exists("config.yaml") else os.path.join(workflow.basedir, "config.yaml"))


experiments.normalise_config(config)  # YAML reads `imported: {5: ...}` with an integer key; the schema wants strings
validate(config, "workflow/schemas/config.schema.yaml")
try:
    experiments.check(config)  # NFE reachability, solver/kind pairs, registry keys: fails before any job runs
except ValueError as e:
    raise WorkflowError(f"invalid config: {e}") from None
envvars:
    "PATH",


# Shell rules call the `amed` entry point. Put the one installed next to this snakemake first on PATH, so a
# venv's workflow works without activating the venv; under --sdm conda each job's environment comes first.
if os.path.exists(os.path.join(os.path.dirname(sys.executable), "amed")):
    os.environ["PATH"] = os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", "")
if config["cache_dir"]:
    os.environ.update({"AMED_CACHE": str(config["cache_dir"])})  # read by amed.load_model in every job

DS = config["datasets"]
METHODS = experiments.methods(config)  # Table 2's methods + the generated Table 4/5 variants ("{base}.{axis}-{value}")
RES = config["resources"]


report: "workflow/report/workflow.rst"


onstart:  # what the run will cost, before anything is submitted (also `snakemake plan` -> results/plan.md)
    costs = run_costs.network_costs(os.path.join(workflow.basedir, "workflow/resources/network_costs.csv"))
    for scope in ("all", "paper"):
        print(run_costs.format_run_plan(run_costs.run_plan(config, costs, scope), config, scope), file=sys.stderr)
    print(run_costs.format_cache_plan(run_costs.teacher_cache_plan(config), config), file=sys.stderr)


wildcard_constraints:
    dataset="|".join(DS),
    method="|".join(sorted({re.escape(k) for ms in METHODS.values() for k in ms}, key=lambda k: (-len(k), k))),
    nfe="|".join(sorted({str(n) for ms in METHODS.values() for m in ms.values() for n in m["nfe"]})),
    shard=r"\d{6}",
    tseed=r"\d+",


include: "workflow/rules/settings.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/teacher.smk"
include: "workflow/rules/train.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/fid.smk"
include: "workflow/rules/report.smk"
include: "workflow/rules/figures.smk"
include: "workflow/rules/beyond.smk"
include: "workflow/rules/bench.smk"  # `bench` target only; not in `all` or `paper`


rule all:
    default_target: True
    input:
        "results/table2.csv",
        "results/table2.md",
        "results/audit.csv",
        "results/audit.md",
        experiments.training_curve_targets(config),


rule paper:  # Tables 3 (paper config only), 4 and 5, Figures 3/4/5/7, sample grids and the audit of Tables 2-5
    input:
        experiments.paper_targets(config),


rule plan:  # the cost of this config's run (jobs, GPU-hours, disk per stage; teacher caches) - runs nothing else
    input:
        costs=os.path.join(workflow.basedir, "workflow/resources/network_costs.csv"),
    output:
        md="results/plan.md",
        csv="results/plan.csv",
    params:
        config=config,
    log:
        "results/logs/plan.log",
    localrule: True
    conda:
        "workflow/envs/amed.yaml"
    script:
        "workflow/scripts/plan.py"


rule beyond:  # AMED on GITS time grids (results/beyond.{csv,md}); not part of `all` or `paper`
    input:
        experiments.beyond_targets(config),


rule figures:
    input:
        experiments.figure_targets(config),
