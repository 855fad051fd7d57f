"""The audit of claims on small synthetic tables: which pairs are claims, their direction, and the verdicts."""

import numpy as np

from amed.audit import Claim, judge, pairs_table2, pairs_table4, pairs_table5, paper_claims, summary

PAPER = [
    {"table": "2", "dataset": "cifar10", "method": "amed_solver", "nfe": 5, "value": 7.59, "source": "T2"},
    {"table": "2", "dataset": "cifar10", "method": "dpm2", "nfe": 5, "value": 57.3, "source": "T2"},
    {"table": "2", "dataset": "cifar10", "method": "ipndm", "nfe": 5, "value": 13.59, "source": "T2"},
    {"table": "2", "dataset": "cifar10", "method": "ddim", "nfe": 5, "value": 49.66, "source": "T2"},
    {"table": "2", "dataset": "cifar10", "method": "amed_solver", "nfe": 9, "value": 3.67, "source": "T2"},
    {"table": "2", "dataset": "cifar10", "method": "dpmpp3m", "nfe": 9, "value": 3.42, "source": "T2"},
    {"table": "2", "dataset": "cifar10", "method": "ipndm", "nfe": 9, "value": 3.67, "source": "T2"},  # a tie
    {"table": "2", "dataset": "ffhq", "method": "amed_solver", "nfe": 5, "value": 14.8, "source": "T2b"},
]


def _cell(value, noise=0.0, n_boot=300, seed=0, runs=1, spread=0.0):
    """Runs of one cell: FD values and bootstrap replicates (shared sample noise `noise` * z_b)."""
    z = np.random.default_rng(99).normal(size=n_boot)  # the same resample in every cell: paired
    own = np.random.default_rng(seed).normal(size=(runs, n_boot))
    vals = value + spread * np.linspace(-1, 1, runs) if runs > 1 else np.array([value])
    return vals, vals[:, None] + noise * z[None, :] + 0.05 * own


def test_claims_are_the_papers_pairs_in_its_direction():
    present = {("amed_solver", 5), ("dpm2", 5), ("ipndm", 5), ("ddim", 5), ("amed_solver", 9), ("dpmpp3m", 9),
               ("ipndm", 9)}
    claims = paper_claims(PAPER, "2", "cifar10", present, pairs_table2({"amed_solver"}))
    got = {(c.nfe, c.better, c.worse) for c in claims}
    # Baseline-vs-baseline pairs are not AMED claims; the AMED/iPNDM tie at NFE 9 is no claim; FFHQ is another block.
    assert got == {(5, "amed_solver", "dpm2"), (5, "amed_solver", "ipndm"), (5, "amed_solver", "ddim"),
                   (9, "dpmpp3m", "amed_solver")}
    # A cell we did not run is no claim.
    assert len(paper_claims(PAPER, "2", "cifar10", present - {("dpm2", 5)}, pairs_table2({"amed_solver"}))) == 3


def test_verdicts_follow_the_interval():
    claim = Claim("2", 5, "amed_solver", "ipndm", 7.59, 13.59)
    clear = {("amed_solver", 5): _cell(10.0, runs=3, spread=0.2), ("ipndm", 5): _cell(14.0, seed=1)}
    reversed_ = {("amed_solver", 5): _cell(16.0, runs=3, spread=0.2), ("ipndm", 5): _cell(14.0, seed=1)}
    noisy = {("amed_solver", 5): _cell(13.0, runs=3, spread=4.0), ("ipndm", 5): _cell(14.0, seed=1)}
    rows = [judge(claim, t) for t in (clear, reversed_, noisy)]
    assert [r["verdict"] for r in rows] == ["held", "not held", "inconclusive"]
    assert rows[0]["ci_hi"] < 0 < rows[1]["ci_lo"] and rows[2]["ci_lo"] < 0 < rows[2]["ci_hi"]
    assert rows[0]["pairs_won"] == 3 and rows[0]["pairs"] == 3 and rows[1]["pairs_won"] == 0
    assert summary(rows) == "3 claims: 1 held, 1 not held, 1 inconclusive"


def test_shared_sample_noise_cancels_in_a_paired_claim():
    # Large sampling noise shared by both cells (same evaluation seeds) leaves the small gap resolvable.
    claim = Claim("2", 5, "a", "b", 1.0, 2.0)
    t = {("a", 5): _cell(10.0, noise=5.0), ("b", 5): _cell(10.6, noise=5.0, seed=1)}
    assert judge(claim, t)["verdict"] == "held"


def test_table4_and_table5_pairs():
    assert pairs_table4("amed_solver[teacher=heun]", "amed_solver[teacher=dpm2]")
    assert not pairs_table4("amed_solver[teacher=heun]", "amed_plugin[teacher=heun]")
    ok = pairs_table5({"amed_plugin_dpmpp3m": "dpmpp3m"})
    assert ok("amed_plugin_dpmpp3m[schedule=logsnr]", "dpmpp3m[schedule=logsnr]")
    assert not ok("amed_plugin_dpmpp3m[schedule=logsnr]", "dpmpp3m[schedule=uniform]")
    assert not ok("dpmpp3m[schedule=logsnr]", "dpmpp3m[schedule=uniform]")
