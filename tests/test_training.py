"""Converged, seeded training: the budget, held-out validation and the snapshot choice (untrained start and
neutral predictor included), training seeds on one cache, the end-to-end objective's gradient, divergence."""

import json

import numpy as np
import pytest
import torch

import amed
from amed.cache import TeacherCache
from amed.plugin import student_grid, student_solver
from amed.predictor import AMEDPredictor
from amed.sampling import ModelCall
from amed.testbed import GaussianMixture
from amed.training import (AUTHORS_STEPS, TrainingDiverged, build_teacher_cache, default_config, end_to_end_loss,
                           plan_budget, teacher_states)

GMM = GaussianMixture.random((3, 8, 8), components=8, seed=0, dtype=torch.float32, std=0.1)
GMM64 = GaussianMixture(GMM.means.double(), GMM.stds.double())
SHAPE = (3, 8, 8)


def test_budget_is_counted_in_steps_with_the_authors_minimum():
    assert plan_budget(10_000, 128).steps == AUTHORS_STEPS == 79  # the authors' single pass
    b = plan_budget(1024, 32)  # fewer trajectories: more epochs over the same teacher states
    assert (b.steps, b.batches_per_epoch, round(b.epochs, 3)) == (79, 32, 2.469)
    assert plan_budget(1024, 32, epochs=2.5).steps == 80 and plan_budget(1024, 32, steps=7).steps == 7
    assert plan_budget(100_000, 128).steps == 782  # more trajectories than the minimum: one epoch
    with pytest.raises(ValueError, match="steps or epochs"):
        plan_budget(64, 32, steps=3, epochs=1)
    with pytest.raises(ValueError, match="epochs must be a positive number, got nan"):
        plan_budget(64, 32, epochs=float("nan"))


@pytest.mark.parametrize("objective,updates", [("per_interval", 3 * 5), ("end_to_end", 5)])
def test_updates_and_record(objective, updates):
    p = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, num_trajectories=64, batch=32, steps=5, holdout=32,
                             M=1, objective=objective)
    c = p.config
    assert (c.steps, c.updates, c.epochs, c.objective, c.holdout, c.num_trajectories) == (5, updates, 2.5, objective, 32, 64)
    steps = [v["step"] for v in c.validation if v.get("candidate") != "neutral"]
    assert steps[0] == 0 and steps[-1] == 5 and c.validation[-1]["candidate"] == "neutral"
    assert all(len(v["point_l2"]) == 3 and v["point_l2"][-1] == v["endpoint_l2"] for v in c.validation)
    # The record survives a save/load round trip.
    assert AMEDConfig_roundtrip(p) == c.to_json()


def AMEDConfig_roundtrip(p):
    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as d:
        p.save(Path(d) / "p")
        return json.loads((Path(d) / "p.json").read_text())["config"]


def test_neutral_predictor_is_the_base_solver_on_the_doubled_grid():
    cfg = default_config("ipndm", 5, scale_time=0.2)
    p = AMEDPredictor.neutral(cfg, seed=7)
    r, c, a = p(torch.randn(4, 8, 8), torch.full((4,), 9.7, dtype=torch.float64), torch.full((4,), 0.47, dtype=torch.float64))
    assert torch.equal(r, torch.full((4,), 0.5, dtype=torch.float64))
    assert torch.equal(c, torch.ones(4, dtype=torch.float64)) and torch.equal(a, torch.ones(4, dtype=torch.float64))
    noise = amed.randn_seeds(range(8), SHAPE, dtype=torch.float64)
    t = student_grid(cfg)
    doubled = torch.cat([torch.stack([t[:-1], (t[:-1] * t[1:]).sqrt()], 1).flatten(), t[-1:]])
    x_base = amed.sample(GMM64, noise, solver="ipndm", nfe=None, schedule=doubled, afs=True,
                         solver_options={"max_order": 4})
    assert torch.allclose(amed.sample(GMM64, noise, predictor=p.double()), x_base, rtol=0, atol=1e-10)


def test_harmful_training_keeps_the_untrained_start_or_the_neutral_predictor():
    # lr 3 wrecks the heads: every snapshot is worse than where training started.
    kw = dict(solver="ipndm", nfe=5, num_trajectories=64, batch=32, steps=4, holdout=32, M=1, lr=3.0)
    best = amed.train_predictor(GMM, SHAPE, **kw)
    last = amed.train_predictor(GMM, SHAPE, select="last", **kw)
    v = best.config.validation
    start, neutral = v[0]["endpoint_l2"], v[-1]["endpoint_l2"]
    trained = [e["endpoint_l2"] for e in v[1:-1]]
    assert min(trained) > min(start, neutral)
    assert best.config.selected == ("init" if start <= neutral else "neutral")
    assert last.config.selected == "step 4"
    ref = AMEDPredictor(best.config, seed=0) if best.config.selected == "init" else AMEDPredictor.neutral(best.config)
    assert all(torch.equal(a, b) for a, b in zip(best.state_dict().values(), ref.state_dict().values()))
    assert not all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), ref.state_dict().values()))


def test_a_snapshot_that_beats_start_and_neutral_is_kept():
    p = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, num_trajectories=256, batch=32, steps=24, holdout=64,
                             M=3, schedule="polynomial")
    v = {e.get("candidate", f"step {e['step']}" if e["step"] else "init"): e["endpoint_l2"] for e in p.config.validation}
    assert p.config.selected.startswith("step ") and v[p.config.selected] == min(v.values())
    assert v[p.config.selected] < v["init"] and v[p.config.selected] < v["neutral"]


def test_training_seeds_share_one_cache_and_give_different_predictors(tmp_path, monkeypatch):
    cfg = default_config("ipndm", 5, M=1)
    cache = build_teacher_cache(GMM, tmp_path / "c", cfg, SHAPE, 64, batch=32, holdout=32)
    assert cache.meta["num_seeds"] == 96
    # Epochs and seeds re-use the cache: no teacher is computed again.
    monkeypatch.setattr(amed.training, "teacher_states", lambda *a, **k: pytest.fail("teacher recomputed"))
    kw = dict(solver="ipndm", nfe=5, num_trajectories=64, batch=32, steps=6, holdout=32, M=1, cache=cache)
    runs = [amed.train_predictor(GMM, SHAPE, train_seed=s, **kw) for s in (0, 1, 0)]
    same = lambda a, b: all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))  # noqa: E731
    assert same(runs[0], runs[2]) and not same(runs[0], runs[1])
    assert [r.config.train_seed for r in runs] == [0, 1, 0] and {r.config.seed for r in runs} == {0}


def test_cache_and_on_the_fly_teacher_agree_over_epochs(tmp_path):
    kw = dict(solver="amed", nfe=5, num_trajectories=64, batch=32, steps=5, holdout=32, M=1, train_seed=3)
    cache = build_teacher_cache(GMM, tmp_path / "c", default_config("amed", 5, M=1), SHAPE, 64, batch=32, holdout=32)
    a = amed.train_predictor(GMM, SHAPE, cache=cache, **kw)
    b = amed.train_predictor(GMM, SHAPE, **kw)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


@pytest.mark.parametrize("solver", ["ipndm", "amed"])
def test_end_to_end_gradient_matches_finite_differences(solver):
    cfg = default_config(solver, 5, M=1, scale_time=0.2, schedule="polynomial")
    pred = AMEDPredictor(cfg, seed=1).double()
    solver_obj = student_solver(cfg)
    grid = student_grid(cfg)
    noise = amed.randn_seeds(range(6), SHAPE, dtype=torch.float64)
    target = teacher_states(GMM64, noise, cfg)
    x0 = noise * float(grid[0])

    def loss():
        return end_to_end_loss(cfg, solver_obj, pred, ModelCall(GMM64, afs=cfg.afs, features=True), x0, target, grid)[0]

    with torch.enable_grad():
        params = dict(pred.named_parameters())
        names = ["fc_r.bias", "fc_scale_time.bias", "map_layer0.weight", "fc_scale_dir.weight"]
        grads = torch.autograd.grad(loss(), [params[n] for n in names])
    eps = 1e-6
    with torch.no_grad():
        for name, g in zip(names, grads):
            p = params[name].view(-1)
            p[0] += eps
            up = loss().item()
            p[0] -= 2 * eps
            down = loss().item()
            p[0] += eps
            fd = (up - down) / (2 * eps)
            assert g.view(-1)[0].item() == pytest.approx(fd, rel=1e-5, abs=1e-9), name


class NaNAtMidpoints:
    """GMM, but NaN whenever sigma is not a grid time (the mid-point calls of AMED)."""

    def __init__(self, grid):
        self.grid = grid.float()

    def __call__(self, x, sigma):
        out = GMM(x, sigma)
        off = (sigma.view(-1, 1) - self.grid.view(1, -1)).abs().min(1).values > 1e-4 * sigma
        return torch.where(off.view(-1, 1, 1, 1), torch.full_like(out, float("nan")), out)


def test_a_nan_midpoint_call_stops_training():
    from amed.training import teacher_grid

    cfg = default_config("ipndm", 5, M=1)  # the teacher (on the fly) runs on grid times only: finite
    with pytest.raises(TrainingDiverged, match="step 1 \\(batch 0\\), interval 0"):
        amed.train_predictor(NaNAtMidpoints(teacher_grid(cfg)), SHAPE, solver="ipndm", nfe=5, num_trajectories=32,
                             batch=32, M=1, steps=2)


def test_a_nan_teacher_shard_stops_training(tmp_path):
    cfg = default_config("amed", 5, M=1)
    cache = build_teacher_cache(GMM, tmp_path / "c", cfg, SHAPE, 32, batch=32)
    path = cache.shard_path(0)
    arr = np.load(path)
    arr[3, 2] = np.nan  # one trajectory's state at t_2, recorded with a valid checksum
    np.save(path, arr)
    meta = json.loads((tmp_path / "c/meta.json").read_text())
    meta["shard_sha256"]["0"] = amed.predictor.sha256_file(path)
    (tmp_path / "c/meta.json").write_text(json.dumps(meta))
    fresh = TeacherCache(tmp_path / "c", {k: v for k, v in meta.items() if k != "shard_sha256"})
    with pytest.raises(TrainingDiverged, match="interval 1"):
        amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, num_trajectories=32, batch=32, M=1, cache=fresh, steps=1)


def test_a_mismatched_cache_is_replaced_only_when_asked(tmp_path):
    a, b = default_config("ipndm", 5, M=1), default_config("ipndm", 5, M=2)
    build_teacher_cache(GMM, tmp_path / "c", a, SHAPE, 32, batch=32)
    with pytest.raises(ValueError, match="was built for"):
        build_teacher_cache(GMM, tmp_path / "c", b, SHAPE, 32, batch=32)
    c = build_teacher_cache(GMM, tmp_path / "c", b, SHAPE, 32, batch=32, replace_mismatched=True)
    assert c.complete() and c.meta["M"] == 2
    (tmp_path / "c/meta.json").write_text("[1, 2]")  # not an object
    with pytest.raises(ValueError, match="must hold a JSON object"):
        build_teacher_cache(GMM, tmp_path / "c", b, SHAPE, 32, batch=32)
    assert build_teacher_cache(GMM, tmp_path / "c", b, SHAPE, 32, batch=32, replace_mismatched=True).complete()


def test_teacher_inherits_the_students_solver_options():
    assert default_config("dpmpp3m", 5, solver_options={"max_order": 2, "predict_x0": False}).teacher_options == \
        {"max_order": 2, "predict_x0": False}
    assert default_config("ipndm", 5).teacher_options == {"max_order": 4}
    assert default_config("ipndm", 5, teacher_options={"max_order": 3}).teacher_options == {"max_order": 3}
    assert default_config("ipndm", 5, teacher="heun").teacher_options == {}
