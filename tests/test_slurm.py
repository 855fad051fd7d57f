"""The workflow through real SLURM (`--profile profiles/slurm-ci`) gives the same table as a local run.

Needs a SLURM cluster: CI runs `bash ../shared/tools/slurm-local-up.sh` and sets AMED_SLURM_TEST=1.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
TINY = {"datasets": {"tiny": {"paper": "cifar10", "num_samples": 64, "shard_size": 32, "batch": 64, "nfe": [5],
                              "methods": {"ipndm": {"label": "iPNDM", "solver": "ipndm",
                                                    "options": {"max_order": 4}}}}}}

pytestmark = [pytest.mark.slow, pytest.mark.skipif(
    os.environ.get("AMED_SLURM_TEST") != "1" or shutil.which("sbatch") is None,
    reason="needs a SLURM cluster: run `bash ../shared/tools/slurm-local-up.sh` and set AMED_SLURM_TEST=1")]


def _run(work: Path, *args, timeout: int = 600) -> subprocess.CompletedProcess:
    (work / "cfg.yaml").write_text(yaml.safe_dump(TINY))
    # SIGINT, not SIGTERM: on SIGINT snakemake cancels its SLURM jobs and exits (snakemake-slurm.md, pitfall 3).
    cmd = ["timeout", "-s", "INT", "-k", "60", str(timeout), sys.executable, "-m", "snakemake",
           "-s", str(ROOT / "Snakefile"), "--directory", str(work), f"--configfile={work / 'cfg.yaml'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=work)


def test_slurm_run_equals_local_run(tmp_path):
    local, cluster = tmp_path / "local", tmp_path / "slurm"
    local.mkdir()
    cluster.mkdir()
    r_local = r = _run(local, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(cluster, "--profile", str(ROOT / "profiles" / "slurm-ci"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert "sbatch" in (r.stdout + r.stderr) or (cluster / ".snakemake" / "slurm_logs").exists()
    for name in ("table2.csv", "table2.md", "audit.csv"):
        assert (cluster / "results" / name).read_text() == (local / "results" / name).read_text(), name
    # every job ran as a SLURM job except the local report rules, and each wrote its benchmark
    assert list((cluster / "results" / "benchmarks" / "sample").rglob("*.tsv"))
    # One sbatch job per Snakemake job of a cluster rule (no job ran twice, none ran unsubmitted): the jobs the local
    # run counted per rule, against the SLURM logs per rule. 64 samples in shards of 32: two sample jobs.
    local_jobs = _job_stats(r_local.stderr + r_local.stdout)
    submitted = {d.name.removeprefix("rule_"): len(list(d.rglob("*.log")))
                 for d in (cluster / ".snakemake" / "slurm_logs").glob("rule_*")}
    assert submitted["sample"] == 2 and submitted["fid"] == 1, submitted
    assert all(local_jobs.get(rule) == n for rule, n in submitted.items()), (submitted, local_jobs)
    assert not {"settings", "table2", "audit", "resolved_config"} & set(submitted), submitted  # localrules
    print(f"SLURM jobs submitted: {sum(submitted.values())} of {sum(local_jobs.values())} Snakemake jobs: {submitted}")


def _job_stats(log: str) -> dict:
    """{rule: count} from the 'Job stats' table Snakemake prints (the last one)."""
    table = log.rsplit("Job stats:", 1)[1].splitlines()
    out = {}
    for line in table[3:]:
        parts = line.split()
        if len(parts) != 2 or not parts[1].isdigit():
            break
        if parts[0] != "total":
            out[parts[0]] = int(parts[1])
    return out
