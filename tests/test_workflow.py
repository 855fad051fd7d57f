"""The Snakemake workflow: config validation, dry-run plans, lint, and kill/resume of a tiny real run.

Every run uses a tiny config in a tmp directory (`--configfile`, `--directory`), never results/ of the repo.
"""

from __future__ import annotations

import base64
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SNAKEFILE = ROOT / "Snakefile"
ENV = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}

pytest.importorskip("snakemake")

# One method x one NFE, 6 shards of 32 seeds: each shard is one short `amed sample` job.
TINY = {"datasets": {"tiny": {"paper": "cifar10", "num_samples": 192, "shard_size": 32, "batch": 64, "nfe": [5],
                              "methods": {"ipndm": {"label": "iPNDM", "solver": "ipndm",
                                                    "options": {"max_order": 4}}}}}}


def smk(workdir: Path, config: dict | Path | None, *args, **kw) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir)]
    if config is not None:
        if isinstance(config, dict):
            path = workdir / "cfg.yaml"
            path.write_text(yaml.safe_dump(config))
            config = path
        cmd += [f"--configfile={config}"]
    return subprocess.run(cmd + list(args), capture_output=True, text=True, env=ENV, cwd=workdir, **kw)


def job_counts(out: str) -> dict:
    stats = out[out.index("Job stats:"):]
    return {m[1]: int(m[2]) for m in re.finditer(r"^(\w+)\s+(\d+)$", stats, re.M)}


def test_schema_enums_match_the_package_registries():
    import amed
    from amed.plugin import PLUGIN_BASES

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    method = schema["$defs"]["method"]["properties"]
    assert set(method["solver"]["enum"]) == set(amed.SOLVERS) | {"amed"} | set(PLUGIN_BASES)
    assert set(method["schedule"]["enum"]) == set(amed.SCHEDULES) | {"gits"}  # gits: searched by the workflow
    assert set(method["train"]["properties"]["teacher"]["enum"]) == set(amed.SOLVERS) | {None}  # null: package default


def _walk(node, path="$"):
    """Every object schema: each property has a description and a default; unknown keys are refused."""
    if isinstance(node, dict):
        if node.get("type") == "object" and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for k, v in node["properties"].items():
                assert "description" in v and "default" in v, f"{path}.{k}"
        for k, v in node.items():
            _walk(v, f"{path}.{k}")


def test_schema_describes_and_defaults_every_key():
    _walk(yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text()))


BAD = {
    "unknown solver": ({"datasets": {"d": {"methods": {"x": {"solver": "euler"}}}}}, "'euler' is not one of"),
    "unknown kind": ({"datasets": {"d": {"methods": {"x": {"kind": "amed", "solver": "amed"}}}}},
                     "'amed' is not one of ['baseline', 'amed_solver', 'amed_plugin']"),
    "heun even NFE with AFS": ({"datasets": {"d": {"nfe": [4], "methods": {"x": {"solver": "heun", "afs": True}}}}},
                               "datasets.d.methods.x: NFE 4 is unreachable"),
    "amed even NFE with AFS": ({"datasets": {"d": {"nfe": [6], "methods": {"x": {
        "kind": "amed_solver", "solver": "amed", "schedule": "time_uniform", "afs": True}}}}},
        "datasets.d.methods.x: NFE 6 is unreachable (2 NFE per step, afs=True)"),
    "plugin on a non-base": ({"datasets": {"d": {"methods": {"x": {"kind": "amed_plugin", "solver": "heun"}}}}},
                             "datasets.d.methods.x.solver: 'heun' is not allowed for kind 'amed_plugin'; allowed values"),
    "typo'd key": ({"datasets": {"d": {"nfes": [5], "methods": {"x": {"solver": "ipndm"}}}}},
                   "Additional properties are not allowed ('nfes' was unexpected)"),
    "negative sample count": ({"datasets": {"d": {"num_samples": -5, "methods": {"x": {"solver": "ipndm"}}}}},
                              "-5 is less than the minimum of 1"),
    "rho nan": ({"datasets": {"d": {"methods": {"x": {"solver": "ipndm", "rho": float("nan")}}}}},
                "datasets.d.methods.x.rho: must be a positive finite number (or null), got nan"),
    "negative rho": ({"datasets": {"d": {"methods": {"x": {"solver": "ipndm", "rho": -7}}}}},
                     "-7 is less than or equal to the minimum of 0"),
    "max_order out of range": ({"datasets": {"d": {"methods": {"x": {"solver": "ipndm", "options": {"max_order": 7}}}}}},
                               "datasets.d.methods.x: ipndm: max_order must be 1..4, got 7"),
    "teacher option out of range": ({"datasets": {"d": {"nfe": [5], "methods": {"x": {
        "kind": "amed_plugin", "solver": "ipndm", "afs": True, "train": {"teacher_options": {"max_order": 9}}}}}}},
        "datasets.d.methods.x: ipndm: max_order must be 1..4, got 9"),
    "imported with seeds": ({"datasets": {"d": {"nfe": [5], "methods": {"x": {
        "kind": "amed_solver", "solver": "amed", "afs": True, "imported": {5: "snap.pkl"}, "train": {"seeds": 3}}}}}},
        "datasets.d.methods.x.imported: an imported predictor is one run; set train.seeds to 1, got 3"),
    "shell text in an option": ({"datasets": {"d": {"methods": {"x": {"solver": "ipndm",
                                 "options": {"max_order": "3 || touch HACKED #"}}}}}}, "max_order must be 1..4"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_config_fails_at_parse_time(tmp_path, case):
    config, message = BAD[case]
    r = smk(tmp_path, config, "-n")
    assert r.returncode != 0
    assert message in r.stdout + r.stderr, r.stdout + r.stderr
    assert not (tmp_path / "results").exists()  # nothing ran


def test_dry_run_plans_the_default_grid(tmp_path):
    r = smk(tmp_path, ROOT / "config.yaml", "-n", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    # 6 baselines x 4 NFE, one 512-seed shard each; AMED: 2 methods x 4 NFE teacher caches, each cell 3 training seeds
    # with a predictor, a shard and a metric each; a settings file per cell.
    c = job_counts(r.stdout)
    assert (c["sample"], c["fid"], c["teacher"], c["settings"]) == (24, 24, 8, 32), c
    assert (c["train"], c["sample_seed"], c["fid_seed"], c["total"]) == (24, 24, 24, 168), c


def test_dry_run_plans_the_paper_grid(tmp_path):
    r = smk(tmp_path, ROOT / "config" / "paper.yaml", "-n", "results/table2.csv", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    c = job_counts(r.stdout)  # 30 (method, dataset) rows x 4 NFE x 5 shards; 8 AMED rows x 4 NFE, one training seed
    assert (c["sample"] + c["sample_seed"], c["fid"] + c["fid_seed"]) == (600, 120), c
    assert (c["teacher"], c["train"], c["model"], c["fid_ref"]) == (24, 32, 4, 4), c  # LSUN: teacher on the fly


def test_sample_jobs_need_the_predictor_weights_and_rules_call_the_amed_entry_point(tmp_path):
    # A truncated or missing predictor.safetensors must make Snakemake (re)train, not sample from a record alone;
    # every shell line calls the `amed` entry point (under --sdm conda: the rule's environment), never the
    # interpreter that parsed the Snakefile.
    target = "results/digits/amed_plugin/nfe5/seed0/samples/000000.npz"
    r = smk(tmp_path, ROOT / "config.yaml", "-n", "-p", target)
    assert r.returncode == 0, r.stderr
    out = r.stdout + r.stderr
    assert "results/digits/amed_plugin/nfe5/seed0/predictor.safetensors" in out.split("rule sample_seed:")[1]
    shells = [line.split("Shell command:", 1)[-1].strip() for line in out.splitlines() if "--settings" in line]
    assert len(shells) == 3, shells  # teacher, train, sample
    assert all(re.fullmatch(r"export OMP_NUM_THREADS=\d+; amed (teacher|train|sample) .*", c) for c in shells), shells
    assert " -m amed" not in out


def test_lint_is_clean():
    r = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--lint"], capture_output=True,
                       text=True, env=ENV, cwd=ROOT)
    assert r.returncode == 0 and "Congratulations" in r.stdout + r.stderr, r.stdout + r.stderr


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    work = tmp_path_factory.mktemp("uninterrupted")
    r = smk(work, TINY, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    return work


def _shards(work: Path) -> dict:
    return {p.name: p.stat().st_mtime_ns for p in (work / "results/tiny/ipndm/nfe5/samples").glob("*.npz")}


def _incomplete(work: Path) -> set:
    """Outputs snakemake marked incomplete (a job killed before snakemake recorded it as finished)."""
    root = work / ".snakemake" / "incomplete"
    names = {base64.urlsafe_b64decode(p.name).decode() for p in root.glob("*") if p.is_file()} if root.exists() else set()
    return {Path(n).name for n in names}


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGKILL], ids=["sigint", "sigkill"])
def test_kill_during_sampling_then_rerun(tmp_path, reference_run, sig):
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(TINY))
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(tmp_path),
           f"--configfile={tmp_path / 'cfg.yaml'}", "--cores", "1"]
    # SIGINT as a terminal delivers it: a test run started in the background of a non-interactive shell
    # (`cmd &`) inherits SIGINT ignored, and so would snakemake, which would then sample every shard.
    p = subprocess.Popen(cmd, env=ENV, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    t0 = time.monotonic()
    while len(_shards(tmp_path)) < 2 and p.poll() is None and time.monotonic() - t0 < 120:
        time.sleep(0.05)
    os.killpg(p.pid, sig)  # the whole group: snakemake and the running `amed sample`
    p.wait(timeout=60)
    done = {k: v for k, v in _shards(tmp_path).items() if k not in _incomplete(tmp_path)}  # not trusted
    assert 1 <= len(done) < 6, f"the kill missed the sampling stage ({len(done)} shards)"
    assert not (tmp_path / "results/table2.csv").exists()

    if sig == signal.SIGKILL:  # a killed snakemake leaves its lock behind; --unlock is the documented remedy
        subprocess.run(cmd + ["--unlock"], capture_output=True, env=ENV, cwd=tmp_path, check=True)
    r = subprocess.run(cmd + ["--rerun-incomplete"], capture_output=True, text=True, env=ENV, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-3000:]
    after = _shards(tmp_path)
    assert len(after) == 6
    assert {k: after[k] for k in done} == done  # finished shards were not redone
    for name in ("table2.csv", "audit.csv"):
        assert (tmp_path / "results" / name).read_text() == (reference_run / "results" / name).read_text()


def test_train_defaults_come_from_the_package():
    """The schema leaves the package's training defaults null (experiments resolves them from amed.training), and the
    defaults it does spell out equal `amed train`'s."""
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    import experiments

    from amed.cli import build_parser
    from amed.training import default_config

    schema = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())
    train = schema["$defs"]["method"]["properties"]["train"]["properties"]
    for key in experiments.PACKAGE_TRAIN_DEFAULTS:
        assert train[key]["default"] is None, key
    sub = build_parser()._subparsers._group_actions[0].choices["train"]
    flags = {a.dest: a.default for a in sub._actions}
    for key, dest in [("trajectories", "trajectories"), ("holdout", "holdout"), ("batch", "batch"), ("seed", "seed"),
                      ("steps", "steps"), ("epochs", "epochs"), ("objective", "objective"), ("select", "select"),
                      ("validate_every", "validate_every")]:
        assert train[key]["default"] == flags[dest], key
    for solver, kind in [("amed", "amed_solver"), ("ipndm", "amed_plugin"), ("dpmpp3m", "amed_plugin")]:
        m = {"kind": kind, "solver": solver, "schedule": "logsnr" if solver == "dpmpp3m" else "polynomial", "rho": None,
             "options": {"max_order": 3} if solver != "amed" else {}, "train": {k: None for k in experiments.PACKAGE_TRAIN_DEFAULTS}}
        got = experiments.package_train_defaults(m)
        cfg = default_config(solver, 5, schedule=m["schedule"], solver_options=m["options"] or None)
        assert (got["teacher"], got["M"], got["teacher_options"], got["scale_dir"], got["scale_time"]) == \
            (cfg.teacher, cfg.M, cfg.teacher_options, cfg.scale_dir, cfg.scale_time)
        assert got["lr"] == flags["lr"] == 5e-3



def test_nfe_reachability_is_the_package_rule():
    """One rule (amed.solvers.reachable_nfe) decides NFE reachability for amed.plan, AMEDConfig and the workflow's
    parse-time check and `afs: auto`."""
    sys.path.insert(0, str(ROOT / "workflow" / "scripts"))
    import experiments

    import amed
    from amed.solvers import nfe_options, reachable_nfe

    for solver, s in amed.SOLVERS.items():
        for nfe in range(1, 13):
            for afs in (False, True):
                try:
                    amed.plan(solver, nfe, afs=afs)
                    ok = True
                except ValueError:
                    ok = False
                assert reachable_nfe(s.evals_per_step, afs, nfe) == ok, (solver, nfe, afs)
        m = {"kind": "baseline", "solver": solver, "afs": "auto"}
        assert [experiments.afs_for(m, n) for n in (3, 4)] == [s.evals_per_step == 2, False], solver
    for nfe in range(0, 13):
        for afs in (False, True):
            cfg = amed.AMEDConfig(nfe=max(nfe, 1), afs=afs)
            cfg.nfe = nfe  # bypass construction checks: num_points alone decides
            try:
                ok = cfg.num_points == (nfe + afs) // 2 + 1
            except ValueError:
                ok = False
            assert reachable_nfe(2, afs, nfe) == ok, (nfe, afs)
    assert nfe_options(2, True, range(1, 12)) == [1, 3, 5, 7, 9, 11] and nfe_options(2, False, range(1, 6)) == [2, 4]

PRUNE = {"datasets": {"tiny": {"paper": None, "num_samples": 16, "shard_size": 16, "batch": 16, "nfe": [5],
                               "methods": {"amed_plugin": {
                                   "kind": "amed_plugin", "solver": "ipndm", "afs": "auto", "options": {"max_order": 4},
                                   "train": {"M": 1, "trajectories": 32, "holdout": 16, "batch": 16, "steps": 2,
                                             "seeds": 2, "prune_cache": True}}}}},
         "uncertainty": {"n_boot": 20}}


@pytest.mark.slow
def test_a_pruned_teacher_cache_is_rebuilt_when_a_training_job_reruns(tmp_path):
    r = smk(tmp_path, PRUNE, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    cache = tmp_path / "results/tiny/teacher/amed_plugin/nfe5/cache"
    assert (cache.parent / "pruned.json").exists() and (cache / "meta.json").exists()
    assert not list(cache.glob("shard-*.npy"))  # pruned once both seeds' predictors existed
    before = (tmp_path / "results/tiny/amed_plugin/nfe5/seed1/predictor.safetensors").read_bytes()
    (tmp_path / "results/tiny/amed_plugin/nfe5/seed1/predictor.json").unlink()
    r = smk(tmp_path, PRUNE, "--cores", "2")
    assert r.returncode == 0, r.stderr[-3000:]
    # the training job rebuilt the cache first: the same teacher, the same predictor; then the cache went again
    assert (tmp_path / "results/tiny/amed_plugin/nfe5/seed1/predictor.safetensors").read_bytes() == before
    assert not list(cache.glob("shard-*.npy"))
