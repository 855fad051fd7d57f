"""The run plan of the config: per stage the jobs, network calls, GPU-hours (FLOPs per call at the assumed
throughput plan.gpu_tflops) and disk, for `all` (Table 2) and `paper` (every table), and each teacher cache."""
import sys

import costs as run_costs
import pandas as pd

from amed._io import atomic_write_bytes

sys.stderr = sys.stdout = open(snakemake.log[0], "w")  # noqa: F821 (snakemake injects it)
config = snakemake.params.config  # noqa: F821
costs = run_costs.network_costs(snakemake.input.costs)  # noqa: F821
rows, md = [], ["# Run plan", "",
                f"GPU-hours assume {config['plan']['gpu_tflops']:g} TFLOP/s sustained on one GPU (config plan.gpu_tflops) "
                f"and the FLOPs of one network call in workflow/resources/network_costs.csv (counted on this project's "
                f"networks; Stable Diffusion's is stated). Training counts a backward pass as two forward passes.", ""]
for scope in ("all", "paper"):
    plan = run_costs.run_plan(config, costs, scope)
    rows += [dict(r, scope=scope) for r in plan]
    md += ["```", run_costs.format_run_plan(plan, config, scope), "```", ""]
md += ["```", run_costs.format_cache_plan(run_costs.teacher_cache_plan(config), config), "```", ""]
atomic_write_bytes(snakemake.output.csv, pd.DataFrame(rows).to_csv(index=False).encode())  # noqa: F821
atomic_write_bytes(snakemake.output.md, "\n".join(md).encode())  # noqa: F821
print("\n".join(md))
