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

pytestmark = pytest.mark.skipif(
    os.environ.get("AMED_SLURM_TEST") != "1" or shutil.which("sbatch") is None,
    reason="needs a SLURM cluster: run `bash ../shared/tools/slurm-local-up.sh` and set AMED_SLURM_TEST=1")


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
    r = _run(local, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    r = _run(cluster, "--profile", str(ROOT / "profiles" / "slurm-ci"))
    assert r.returncode == 0, (r.stdout + r.stderr)[-5000:]
    assert "sbatch" in (r.stdout + r.stderr) or (cluster / ".snakemake" / "slurm_logs").exists()
    for name in ("table2.csv", "table2.md", "audit.csv"):
        assert (cluster / "results" / name).read_text() == (local / "results" / name).read_text(), name
    # every job ran as a SLURM job except the local report rules, and each wrote its benchmark
    assert list((cluster / "results" / "benchmarks" / "sample").rglob("*.tsv"))
