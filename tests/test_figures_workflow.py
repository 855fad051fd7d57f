"""The paper's other tables and figures in the workflow: dry-run plans (default and paper configs), the new
config sections, and one tiny end-to-end run of Table 4, Figures 3 and 4 and the report.

Every run uses a tiny config in a tmp directory (`--configfile`, `--directory`), never results/ of the repo.
"""

from __future__ import annotations

import copy
import json

import pandas as pd
import pytest
import yaml

from test_workflow import ROOT, job_counts, smk

pytest.importorskip("snakemake")

SCHEMA = yaml.safe_load((ROOT / "workflow/schemas/config.schema.yaml").read_text())


pytestmark = pytest.mark.slow  # Snakemake end to end: `pytest -m "not slow"` skips this module


def test_new_sections_are_documented_with_defaults():
    props = SCHEMA["properties"]
    for key in ("table3", "table4", "table5", "figures"):
        assert "description" in props[key] and "default" in props[key], key
        assert props[key]["additionalProperties"] is False, key
    ds = SCHEMA["$defs"]["dataset"]["properties"]
    for key in ("table2", "guidance", "prompts"):
        assert "description" in ds[key] and "default" in ds[key], key
    # the schedule enum of Table 5's rows is the method schema's (= amed.SCHEDULES, checked in test_workflow)
    row = props["table5"]["properties"]["schedules"]["items"]["properties"]["schedule"]
    assert row["enum"] == SCHEMA["$defs"]["method"]["properties"]["schedule"]["enum"]


def test_default_paper_target_plan(tmp_path):
    r = smk(tmp_path, ROOT / "config.yaml", "-n", "paper", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    c = job_counts(r.stdout)
    # Table 2: 24 baseline cells (one 512-seed shard each) and 8 AMED cells x 3 training seeds. Table 4: 2 methods x
    # 4 teachers x 4 NFE = 32 trained cells (256 samples: not Table 2's cells), Table 5: DPM++(3M) x 3 schedules x 4
    # NFE baseline cells and as many plugin cells; every trained cell has 3 training seeds. Teacher caches are shared
    # wherever teacher, grid, M and trajectories coincide: Table 4's Heun-teacher AMED-Solver and iPNDM-teacher
    # plugin (1,024 trajectories) use Table 2's caches, Table 5 (256 trajectories) shares none: 8 + 24 + 12.
    assert (c["sample"], c["fid"], c["train"], c["teacher"]) == (24 + 12, 24 + 12, 3 * (8 + 32 + 12), 8 + 24 + 12), c
    assert (c["sample_seed"], c["fid_seed"]) == (c["train"], c["train"]), c
    assert (c["sample_grid"], c["table_csv"], c["table_md"], c["audit_paper"]) == (32, 2, 2, 1), c
    assert all(c[f] == 1 for f in ("fig3", "fig4", "fig5", "fig7", "table2")), c
    assert "table3" not in r.stdout and "prompts" not in c  # Table 3 is paper-config only


def test_default_all_is_still_table2_only(tmp_path):
    r = smk(tmp_path, ROOT / "config.yaml", "-n", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    c = job_counts(r.stdout)
    assert "table_csv" not in c and "fig4" not in c and c["total"] == 168, c


def test_paper_config_plans_table3_on_stable_diffusion(tmp_path):
    r = smk(tmp_path, ROOT / "config/paper.yaml", "-n", "-p", "results/table3.csv")
    assert r.returncode == 0, r.stderr
    c = job_counts(r.stdout)
    # 2 methods x 4 sampler NFE (4/6/8/10 = paper NFE 8/12/16/20) x 3 shards of 10,000 seeds; one plugin per NFE
    assert (c["sample"] + c["sample_seed"], c["fid"] + c["fid_seed"]) == (24, 8), c
    assert (c["train"], c["teacher"], c["prompts"], c["fid_ref"]) == (4, 4, 1, 1), c
    assert "--prompts results/sd_v1_4/prompts.csv" in r.stdout  # the guidance scale is in the settings file
    assert "--seeds 20000-29999" in r.stdout and "--seeds 0-29999" in r.stdout


def test_paper_config_plans_every_target_and_reuses_table2_cells(tmp_path):
    r = smk(tmp_path, ROOT / "config/paper.yaml", "-n", "paper", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    c = job_counts(r.stdout)
    # Table 2: 600 shards. Table 4: 24 new cells (Heun/iPNDM-teacher rows are Table 2's), Table 5: 20 new cells
    # (logSNR DPM++(3M) is Table 2's), 5 shards each; Table 3: 24. One teacher cache shared by Tables 4 and 5;
    # LSUN's 8 trained cells compute their teacher on the fly (no cache).
    assert (c["sample"] + c["sample_seed"], c["train"], c["teacher"], c["fid"] + c["fid_seed"]) == \
        (600 + 120 + 100 + 24, 32 + 24 + 12 + 4, 32 + 24 + 12 + 4 - 4 - 8, 120 + 24 + 20 + 8), c
    assert (c["sample_grid"], c["table_csv"], c["audit_paper"], c["fig4"]) == (120, 3, 1, 1), c



def test_paper_config_plans_beyond_on_cifar10_and_the_default_shares_gits_grids(tmp_path):
    r = smk(tmp_path, ROOT / "config/paper.yaml", "-n", "beyond", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    c = job_counts(r.stdout)
    # 3 methods x 4 NFE GITS grids; iPNDM's own schedule is Table 2's; 4 new AMED cells per method, 5 shards each.
    assert (c["gits"], c["sample"], c["sample_seed"], c["train"]) == (12, 40, 80, 16), c
    # The default's AMED-Solver under interval_search searches no grid of its own: 3 searched methods x 4 NFE.
    r = smk(tmp_path, ROOT / "config.yaml", "-n", "beyond", "--quiet", "rules")
    assert r.returncode == 0, r.stderr
    assert job_counts(r.stdout)["gits"] == 12


TINY = {
    "datasets": {"tiny": {
        "paper": "cifar10", "num_samples": 32, "shard_size": 32, "batch": 32, "nfe": [5],
        "methods": {
            "ipndm": {"label": "iPNDM", "solver": "ipndm", "options": {"max_order": 4}},
            "amed_plugin": {"kind": "amed_plugin", "solver": "ipndm", "afs": "auto", "options": {"max_order": 4},
                            "train": {"teacher": "ipndm", "M": 1, "teacher_options": {"max_order": 4},
                                      "trajectories": 32, "holdout": 32, "batch": 32, "steps": 2, "seeds": 2}}}}},
    "table4": {"dataset": "tiny", "methods": ["amed_plugin"], "teachers": {"ipndm": {"max_order": 4}, "dpm2": {}},
               "nfe": [5]},
    "figures": {"dataset": "tiny", "fig4": {"trajectories": 8, "nfe": 10, "batch": 8}, "grid": {"count": 16},
                "fig7": {"method": None}},
}


def test_bad_table_sections_fail_at_parse_time(tmp_path):
    cfg = copy.deepcopy(TINY)
    cfg["table4"]["methods"] = ["ipndm"]
    r = smk(tmp_path, cfg, "-n")
    assert r.returncode != 0 and "table4.methods: 'ipndm' is not an AMED method of datasets.tiny" in r.stderr + r.stdout


def test_tiny_table4_fig3_fig4_grid_and_report(tmp_path):
    targets = ["results/table4.csv", "results/table4.md", "results/fig3.png", "results/fig4.png",
               "results/tiny/amed_plugin/nfe5/grid.png", "results/audit_paper.csv"]
    cfg = copy.deepcopy(TINY)
    r = smk(tmp_path, cfg, "--cores", "2", *targets)
    assert r.returncode == 0, r.stderr[-3000:]
    t4 = pd.read_csv(tmp_path / "results/table4.csv")
    # the iPNDM-teacher row IS Table 2's plugin cell; the DPM-2 row is its own, trained on its own teacher cache
    assert dict(zip(t4["method"], t4["cell"])) == {"amed_plugin[teacher=ipndm]": "amed_plugin",
                                                  "amed_plugin[teacher=dpm2]": "amed_plugin.teacher-dpm2"}
    assert (t4["n_samples"] == 32).all() and t4["value"].notna().all()
    assert (tmp_path / "results/tiny/teacher/amed_plugin.teacher-dpm2/nfe5/teacher.json").exists()
    assert "| amed_plugin[teacher=dpm2] |" in (tmp_path / "results/table4.md").read_text()
    fig4 = pd.read_csv(tmp_path / "results/fig4.csv")
    assert (fig4["n"] == 8).all() and (fig4[fig4["panel"] == "a"]["mean"] >= 0).all()
    assert len(pd.read_csv(tmp_path / "results/tiny/amed_plugin/nfe5/grid.csv")) == 16
    for png in targets[2:5]:
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    audit = pd.read_csv(tmp_path / "results/audit_paper.csv")
    assert set(audit["table"].astype(str)) == {"2", "4"}
    r = smk(tmp_path, cfg, "--report", str(tmp_path / "report.html"), *targets)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (tmp_path / "report.html").stat().st_size > 10_000


def test_tiny_beyond_target_searches_gits_grids_and_judges_both_claims(tmp_path):
    cfg = copy.deepcopy(TINY)
    del cfg["table4"], cfg["figures"]
    cfg["beyond"] = {"dataset": "tiny", "methods": ["ipndm", "amed_plugin"], "nfe": [5],
                     "gits": {"num_fine": 11, "warmup": 16}}
    cfg["uncertainty"] = {"n_boot": 50}
    r = smk(tmp_path, cfg, "--cores", "2", "beyond")
    assert r.returncode == 0, r.stderr[-3000:]
    grid = json.loads((tmp_path / "results/tiny/gits/amed_plugin.schedule-gits/nfe5/grid.json").read_text())
    assert grid["format"] == "amed-grid" and grid["amed"] is True and grid["nfe"] == 5
    # the plugin trained on the searched grid records it
    rec = json.loads((tmp_path / "results/tiny/amed_plugin.schedule-gits/nfe5/seed0/predictor.json").read_text())
    assert rec["config"]["schedule"] == "explicit" and rec["config"]["grid"] == grid["grid"]
    t = pd.read_csv(tmp_path / "results/beyond.csv")
    assert set(t["method"]) == {"ipndm[schedule=polynomial]", "ipndm[schedule=gits]",
                                "amed_plugin[schedule=polynomial]", "amed_plugin[schedule=gits]"}
    md = (tmp_path / "results/beyond.md").read_text()
    assert "**2 claims:" in md and "GITS improves ipndm" in md and "AMED on GITS beats both" in md
