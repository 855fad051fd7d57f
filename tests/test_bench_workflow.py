"""The `bench` target and the benchmark scripts: plan, tiny real runs with finite positive ratios, the fused switch.

Every run writes into a tmp directory, never results/ of the repo.
"""

from __future__ import annotations

import csv
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from amed import ops

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}", "OMP_NUM_THREADS": "1"}
TINY = {"datasets": {"tiny": {"paper": "cifar10", "num_samples": 64, "shard_size": 32, "batch": 32, "nfe": [5],
                              "methods": {"ipndm": {"label": "iPNDM", "solver": "ipndm",
                                                    "options": {"max_order": 4}}}}},
        "bench": {"training": {"trajectories": 2, "batch": 2}}}
CSVS = {"solver_overhead", "sampling", "training", "kernels"}


def smk(workdir: Path, *args) -> subprocess.CompletedProcess:
    (workdir / "cfg.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir),
           f"--configfile={workdir / 'cfg.yaml'}", *args]
    return subprocess.run(cmd, capture_output=True, text=True, env=ENV, cwd=workdir)


def script(name: str, *args) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, str(ROOT / "benchmarks" / name), *args], capture_output=True, text=True,
                       env=ENV, cwd=ROOT)
    assert r.returncode == 0, r.stdout + r.stderr
    return r


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def positive(value: str) -> bool:
    return math.isfinite(float(value)) and float(value) > 0


@pytest.mark.slow
def test_dry_run_plans_the_four_csvs_and_all_does_not(tmp_path):
    r = smk(tmp_path, "-n", "--cores", "1", "bench")
    assert r.returncode == 0, r.stderr
    planned = set(re.findall(r"output: results/bench/(\w+)\.csv", r.stdout))
    assert planned == CSVS, r.stdout
    r = smk(tmp_path, "-n", "--cores", "1", "--quiet", "rules")  # the default target `all`
    assert r.returncode == 0, r.stderr
    assert "bench" not in r.stdout, r.stdout


@pytest.mark.slow
def test_bench_training_rule_runs(tmp_path):
    r = smk(tmp_path, "--cores", "1", "results/bench/training.csv")
    assert r.returncode == 0, r.stdout + r.stderr
    out = rows(tmp_path / "results/bench/training.csv")
    assert [row["run"] for row in out] == ["teacher-on-the-fly", "cache-build", "from-cache"]
    for row in out:
        assert positive(row["s_per_1000_traj"]) and 0 < float(row["network_share"]) <= 1.0 + 1e-6, row
    fly, _, cached = out
    assert int(fly["backward_calls"]) > 0 and positive(fly["net_bwd_s"]), fly  # the backward is measured
    assert int(cached["teacher_calls"]) == 0 and float(cached["cache_read_s"]) > 0, cached
    assert (tmp_path / "results/logs/bench/training.log").exists()


def test_solver_overhead_tiny(tmp_path):
    out = tmp_path / "so.csv"
    script("solver_overhead.py", "--batches", "1,2", "--repeats", "1", "--methods", "ddim,heun,amed-solver",
           "--out", str(out))
    got = rows(out)
    assert list(got[0]) == ["model", "method", "batch", "device", "backend", "threads", "steps", "calls", "repeats",
                            "network_ms_per_call", "outside_ms_per_step", "step_ratio_min", "step_ratio_median",
                            "overhead_min", "overhead_median"]
    assert {(r["method"], r["batch"]) for r in got} == {(m, b) for m in ("ddim", "heun", "amed-solver")
                                                         for b in ("1", "2")}
    for r in got:
        assert r["model"] == "digits-8" and r["backend"] == "torch", r  # CPU: no fused path to compare
        for k in ("step_ratio_min", "step_ratio_median", "overhead_min", "overhead_median", "network_ms_per_call"):
            assert positive(r[k]), (k, r)
        assert float(r["step_ratio_min"]) <= float(r["step_ratio_median"]), r
    heun = next(r for r in got if r["method"] == "heun")
    assert (heun["steps"], heun["calls"]) == ("5", "10")


def test_bench_sampling_tiny(tmp_path):
    out = tmp_path / "sa.csv"
    script("bench_sampling.py", "--batches", "2", "--repeats", "2", "--no-compile", "--out", str(out))
    got = rows(out)
    assert {"ratio_median", "ratio_iqr", "ratio_min_based", "plain_calls", "feature_calls"} <= set(got[0])
    for r in got:
        assert r["variant"] == "eager"
        assert positive(r["ratio_median"]) and positive(r["ratio_min_based"]) and float(r["ratio_iqr"]) >= 0, r
        assert int(r["plain_calls"]) + int(r["feature_calls"]) == 5, r  # the bound counts the calls made
    amed_row = next(r for r in got if r["method"] == "amed-solver")
    assert int(amed_row["feature_calls"]) > 0, amed_row  # AMED reads features at t_n


def test_fused_switch(monkeypatch):
    x = torch.zeros(2, 3)
    assert ops.backend(x) == "torch"  # not CUDA: no fused path exists
    monkeypatch.delenv("AMED_FUSED", raising=False)
    assert ops.fused_enabled()
    monkeypatch.setenv("AMED_FUSED", "0")
    assert not ops.fused_enabled()
    with ops.use_fused(True):
        assert ops.fused_enabled()  # the override wins over the environment
        with ops.use_fused(False):
            assert not ops.fused_enabled()
        assert ops.fused_enabled()
    assert not ops.fused_enabled()
    monkeypatch.setenv("AMED_FUSED", "maybe")
    with pytest.raises(ValueError, match="'maybe'"):
        ops.fused_enabled()
    c = torch.tensor([0.5, 2.0], dtype=torch.float64)
    torch.testing.assert_close(ops.lincomb([x + 1, x + 2], [1.0, c]), torch.tensor([[2.0] * 3, [5.0] * 3]))


def test_device_script_names_every_measured_csv():
    """benchmarks/device.sh is the one device script: its header names each CSV of benchmarks/measured/ that a section
    writes, and an unknown section is refused before anything runs."""
    script = (ROOT / "benchmarks/device.sh").read_text()
    # solver_overhead_convnet{64,128,256}_h200.csv names three files
    script = re.sub(r"(\w*)\{([\d,]+)\}(\w*\.csv)", lambda m: " ".join(m[1] + v + m[3] for v in m[2].split(",")), script)
    named = set(re.findall(r"[\w.]+\.csv", script))
    assert {p.name for p in (ROOT / "benchmarks/measured").glob("*.csv")} <= named
    r = subprocess.run(["bash", str(ROOT / "benchmarks/device.sh"), "nope"], capture_output=True, text=True,
                       cwd=ROOT, env={**ENV, "OUT": "/nonexistent/device-out"})
    assert r.returncode == 2 and "unknown section 'nope'" in r.stderr
