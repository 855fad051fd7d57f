"""Recipe interval_search and the per-interval r biases: the record and file round trip, old files, the start
equal to the authors' predictor, the grid lookup, and the search picking each interval's best bias."""

import json

import pytest
import torch

import amed
from amed.plugin import amed_interval, init_state, student_grid, student_solver
from amed.predictor import AMEDConfig, AMEDPredictor, load_predictor
from amed.sampling import ModelCall
from amed.testbed import GaussianMixture
from amed.training import SEARCH_BIASES, default_config, search_interval_bias, teacher_states

GMM = GaussianMixture.random((3, 8, 8), components=8, seed=0, dtype=torch.float32, std=0.1)
GMM64 = GaussianMixture(GMM.means.double(), GMM.stds.double())
SHAPE = (3, 8, 8)


def _call(p, cfg, n, B=4):
    t = student_grid(cfg)
    return p(torch.randn(B, 8, 8, generator=torch.Generator().manual_seed(n)), t[n].expand(B), t[n + 1].expand(B))


def test_the_recipe_is_recorded_and_round_trips(tmp_path):
    p = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, num_trajectories=64, batch=32, steps=2, holdout=32,
                             M=1, scale_time=0.2, recipe="interval_search")
    c = p.config
    assert (c.recipe, c.interval_bias, c.objective) == ("interval_search", True, "per_interval")
    assert len(c.search["bias"]) == 3 == p.r_bias.numel() and c.search["trajectories"] == 64
    assert all(b in SEARCH_BIASES for b in c.search["bias"])
    p.save(tmp_path / "p")
    rec = json.loads((tmp_path / "p.json").read_text())
    assert rec["num_parameters"] == 8971 + 3 and rec["config"]["recipe"] == "interval_search"
    q = load_predictor(tmp_path / "p")
    assert q.config.to_json() == c.to_json()
    assert torch.equal(q.r_bias, p.r_bias)
    for n in range(3):
        assert all(torch.equal(u, v) for u, v in zip(_call(p, c, n), _call(q, q.config, n)))
    # The authors' recipe keeps the authors' parameter set.
    a = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, num_trajectories=32, batch=32, steps=1, M=1)
    assert (a.config.recipe, a.config.interval_bias, a.config.search) == ("authors", False, None)
    assert not hasattr(a, "r_bias") and sum(x.numel() for x in a.parameters()) == 8929 + 21


def test_files_written_before_the_recipe_existed_still_load(tmp_path, monkeypatch):
    cfg = default_config("amed", 5, M=1)
    p = AMEDPredictor(cfg, seed=3)
    plain = AMEDConfig.to_json
    monkeypatch.setattr(AMEDConfig, "to_json",
                        lambda self: {k: v for k, v in plain(self).items() if k not in ("recipe", "interval_bias", "search")})
    p.save(tmp_path / "old")
    assert "recipe" not in json.loads((tmp_path / "old.json").read_text())["config"]
    monkeypatch.undo()
    q = load_predictor(tmp_path / "old")
    assert (q.config.recipe, q.config.interval_bias) == ("authors", False) and not hasattr(q, "r_bias")
    assert all(torch.equal(u, v) for u, v in zip(_call(p, cfg, 1), _call(q, q.config, 1)))


def test_bias_and_recipe_are_checked():
    with pytest.raises(ValueError, match="needs interval_bias=True"):
        AMEDConfig(recipe="interval_search")
    with pytest.raises(ValueError, match="recipe must be one of .* got 'warm'"):
        AMEDConfig(recipe="warm")
    with pytest.raises(ValueError, match="interval_bias must be true or false, got 1"):
        AMEDConfig(interval_bias=1)
    with pytest.raises(ValueError, match="needs interval_bias=True"):
        amed.train_predictor(GMM, SHAPE, nfe=5, num_trajectories=32, batch=32, steps=1, M=1,
                             recipe="interval_search", interval_bias=False)


def test_zero_biases_are_the_authors_predictor_and_each_bias_moves_its_interval_only():
    cfg = default_config("amed", 7, M=1, scale_time=0.2)
    with_bias = default_config("amed", 7, M=1, scale_time=0.2, interval_bias=True)
    p, q = AMEDPredictor(cfg, seed=5), AMEDPredictor(with_bias, seed=5)
    for n in range(4):  # same initialisation, zero biases: the same (r, c, a) on every interval
        assert all(torch.equal(u, v) for u, v in zip(_call(p, cfg, n), _call(q, with_bias, n)))
    r_neutral, _, _ = _call(AMEDPredictor.neutral(with_bias), with_bias, 2)
    assert torch.equal(r_neutral, torch.full((4,), 0.5, dtype=torch.float64))
    with torch.no_grad():
        q.r_bias[2] = -3.0
    for n in range(4):
        r_p, r_q = _call(p, cfg, n)[0], _call(q, with_bias, n)[0]
        if n == 2:
            assert torch.allclose(torch.logit(r_q), torch.logit(r_p) - 3.0, atol=1e-5)
        else:
            assert torch.equal(r_p, r_q)


def test_biases_need_a_time_of_the_grid():
    cfg = default_config("amed", 5, M=1, interval_bias=True)
    p = AMEDPredictor(cfg)
    with pytest.raises(ValueError, match="t_cur=5.0, not a point of its grid"):
        p(torch.zeros(2, 8, 8), torch.full((2,), 5.0, dtype=torch.float64), torch.full((2,), 1.0, dtype=torch.float64))
    t = student_grid(cfg)
    with pytest.raises(ValueError, match="one t_cur per batch"):
        p(torch.zeros(2, 8, 8), t[:2], t[1:3])


@pytest.mark.parametrize("solver", ["amed", "ipndm"])
def test_the_search_picks_each_intervals_best_bias(solver):
    cfg = default_config(solver, 5, M=1, schedule="polynomial", interval_bias=True, recipe="interval_search")
    pred = AMEDPredictor(cfg, seed=2).double()
    solver_obj, grid = student_solver(cfg), student_grid(cfg)
    seeds = list(range(500, 524))
    noise = amed.randn_seeds(seeds, SHAPE, dtype=torch.float64)
    target = teacher_states(GMM64, noise, cfg)
    found = search_interval_bias(cfg, solver_obj, pred, GMM64, noise, target, seeds, 8, grid)
    assert found["bias"] == pred.r_bias.detach().tolist()
    for n, row in enumerate(found["loss"]):
        assert len(row) == len(SEARCH_BIASES) and row[SEARCH_BIASES.index(found["bias"][n])] == min(row)

    # Independently: roll the student out with the chosen biases; interval n's loss at its chosen bias is the
    # table's minimum and no larger than at bias 0 (the authors' start), from the recipe's start states.
    x, state = noise * float(grid[0]), init_state(cfg, solver_obj)
    for n in range(grid.numel() - 1):
        start = target[n] if solver == "amed" and n > 0 else x
        losses = {}
        for bias in (0.0, found["bias"][n]):
            with torch.no_grad():
                pred.r_bias[n] = bias
                out, st, _ = amed_interval(cfg, solver_obj, pred, start, grid[n].expand(24), grid[n + 1].expand(24),
                                           ModelCall(GMM64, afs=cfg.afs and n == 0, features=True), state)
            losses[bias] = ((out - target[n + 1]).square().flatten(1).sum(1).mean().item(), out, st)
        assert losses[found["bias"][n]][0] == pytest.approx(min(found["loss"][n]), rel=1e-9)
        assert losses[found["bias"][n]][0] <= losses[0.0][0]
        _, x, state = losses[found["bias"][n]]
    assert any(b != 0.0 for b in found["bias"])  # the search moved r somewhere


def test_the_searched_start_changes_training_and_is_a_candidate():
    kw = dict(solver="amed", nfe=5, num_trajectories=64, batch=32, steps=4, holdout=32, M=1, schedule="polynomial")
    authors = amed.train_predictor(GMM, SHAPE, **kw)
    searched = amed.train_predictor(GMM, SHAPE, recipe="interval_search", **kw)
    init_a, init_s = authors.config.validation[0], searched.config.validation[0]
    assert init_a["step"] == init_s["step"] == 0
    # The searched start is better on the held-out rollout than the random start of the same seed.
    assert init_s["endpoint_l2"] < init_a["endpoint_l2"]
    assert searched.config.train_seconds > 0


def test_the_train_command_takes_the_recipe():
    from amed.cli import build_parser

    args = build_parser().parse_args(["train", "--model", "digits-8", "--nfe", "5", "--out", "p",
                                      "--recipe", "interval_search"])
    assert args.recipe == "interval_search"
    assert build_parser().parse_args(["train", "--model", "digits-8", "--nfe", "5", "--out", "p"]).recipe == "authors"
