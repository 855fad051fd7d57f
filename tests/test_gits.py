"""GITS schedules: the DP against brute force, the cost of one jump recomputed by hand, grid files, explicit
grids in amed.sample, the search on the embedded model, and AMED trained and sampled on a searched grid."""

import itertools
import json

import numpy as np
import pytest
import torch

import amed
from amed import gridfile
from amed.cli import main
from amed.gits import GITS_SEED_BASE, cost_matrix, dp_path, gits_seeds, path_cost, search_schedule
from amed.gridfile import load_grid
from amed.training import teacher_grid, training_seeds


class Counting:
    """A denoiser wrapper that counts network calls (and hides the model's identity)."""

    def __init__(self, inner):
        self.inner, self.calls = inner, 0

    def __call__(self, x, sigma):
        self.calls += 1
        return self.inner(x, sigma)

    def with_feature(self, x, sigma):  # the bottleneck feature contract, so a trained predictor accepts it
        self.calls += 1
        return self.inner.with_feature(x, sigma)


@pytest.fixture(scope="module")
def model():
    return amed.load_model("digits-8").eval()


# ------------------------------------------------------------------------------------------ the DP
def brute_force(C, K, coeff):
    n = C.shape[0]
    best = None
    for mid in itertools.combinations(range(1, n - 1), K - 1):
        path = [0, *mid, n - 1]
        v = path_cost(C, path, coeff)
        if best is None or v < best[0] - 1e-12:
            best = (v, path)
    return best


@pytest.mark.parametrize("coeff", [0.8, 1.0, 1.15, 1.5])
@pytest.mark.parametrize("seed", range(4))
def test_dp_finds_the_brute_force_optimum(seed, coeff):
    rng = np.random.default_rng(seed)
    n = 9
    # Costs of both signs (the "dev" metric is a difference), growing with the jump length like real ones.
    C = rng.normal(size=(n, n)) * 0.3 + (np.arange(n)[None, :] - np.arange(n)[:, None]) ** 2 / 10
    for K in range(1, n):
        path, value = dp_path(C, K, coeff)
        v_bf, p_bf = brute_force(C, K, coeff)
        assert len(path) == K + 1 and path[0] == 0 and path[-1] == n - 1
        assert all(a < b for a, b in zip(path[:-1], path[1:]))
        assert value == pytest.approx(v_bf, abs=1e-12)
        assert path_cost(C, path, coeff) == pytest.approx(v_bf, abs=1e-12)


def test_dp_coefficient_weights_later_jumps_and_ties_go_to_the_smaller_index():
    # Two 2-jump paths: 0-1-3 costs 1 + 2c, 0-2-3 costs 2 + c; c < 1 prefers the first, c > 1 the second.
    C = np.full((4, 4), np.inf)
    C[0, 1], C[1, 3], C[0, 2], C[2, 3], C[0, 3], C[1, 2] = 1.0, 2.0, 2.0, 1.0, 9.0, 9.0
    assert dp_path(C, 2, 0.8) == ([0, 1, 3], pytest.approx(2.6))
    assert dp_path(C, 2, 1.15) == ([0, 2, 3], pytest.approx(3.15))
    assert dp_path(C, 2, 1.0)[0] == [0, 1, 3]  # 3 == 3: the smaller index, as the authors' backtracking
    assert dp_path(C, 1, 1.15) == ([0, 3], 9.0)


def test_dp_bad_input_names_the_value():
    C = np.zeros((5, 5))
    with pytest.raises(ValueError, match="need at least 6 fine grid points, got 5"):
        dp_path(C, 5)
    with pytest.raises(ValueError, match="coeff must be positive and finite, got -1"):
        dp_path(C, 2, -1.0)
    with pytest.raises(ValueError, match="positive integer, got 0"):
        dp_path(C, 0)
    C[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        dp_path(C, 2)


# ------------------------------------------------------------------------------------ the cost
def test_cost_matrix_is_the_jump_error_recomputed_by_hand(model):
    """C[i][j] for the Euler jump, by an independent route: the teacher trajectory, D at its states, and
    the deviation from the chord by least squares, per sample, then the mean."""
    shape = model.info.shape
    fine = amed.get_schedule("polynomial", 9)
    seeds = gits_seeds(0, 6)
    traj = amed.sample_trajectory(model, amed.randn_seeds(seeds, shape), solver="ipndm", schedule=fine)
    X = traj.double().flatten(2).numpy()  # [n, B, F]

    def dist_from_chord(p, a, b):  # p, a, b: [F]
        u = (b - a)[:, None]
        coef = np.linalg.lstsq(u, p - a, rcond=None)[0]
        return np.linalg.norm(p - a - (u @ coef))

    for metric in ("dev", "l2", "l1"):
        C, finals = cost_matrix(model, shape, fine, seeds, metric=metric, batch=4)  # 2 chunks: 4 + 2 samples
        assert torch.equal(finals, traj[-1])
        assert np.isinf(C[np.tril_indices(9)]).all()
        for i, j in [(0, 1), (0, 8), (2, 5), (3, 8), (7, 8)]:
            t_i, t_j = float(fine[i]), float(fine[j])
            D = model(traj[i], torch.full((6,), t_i, dtype=torch.float32)).double().flatten(1).numpy()
            errs = []
            for b in range(6):
                x_jump = X[i, b] + (t_j - t_i) * (X[i, b] - D[b]) / t_i
                if metric == "dev":
                    errs.append(dist_from_chord(x_jump, X[0, b], X[-1, b]) - dist_from_chord(X[j, b], X[0, b], X[-1, b]))
                else:
                    errs.append(np.linalg.norm(x_jump - X[j, b], ord=1 if metric == "l1" else 2))
            assert C[i, j] == pytest.approx(np.mean(errs), rel=1e-5, abs=1e-6), (metric, i, j)


def test_amed_jump_is_one_neutral_amed_solver_interval(model):
    """jump='amed' for AMED-Solver: Euler to the geometric mid-point, the network there, the whole step along
    its direction (DPM-Solver-2, Eq. 9 with r = 0.5), recomputed by hand; under AFS the start is analytical."""
    shape = model.info.shape
    fine = amed.get_schedule("polynomial", 7)
    seeds = gits_seeds(0, 5)
    traj = amed.sample_trajectory(model, amed.randn_seeds(seeds, shape), solver="ipndm", schedule=fine)
    for afs in (False, True):
        C, _ = cost_matrix(model, shape, fine, seeds, metric="l2", jump="amed", afs_first=afs,
                           amed_solver=("amed", {}, 5, True), batch=8)
        for i, j in [(0, 1), (0, 6), (2, 4), (5, 6)]:
            t_i, t_j = fine[i].item(), fine[j].item()
            x = traj[i].double()
            sig = lambda t: torch.full((5,), t, dtype=torch.float32)  # noqa: E731
            if afs and i == 0:
                d = x / (1 + t_i**2) ** 0.5
            else:
                d = (x - model(traj[i], sig(t_i)).double()) / t_i
            s = (t_i * t_j) ** 0.5
            x_s = x + (s - t_i) * d
            d_s = (x_s - model(x_s.float(), sig(s)).double()) / s
            x_j = x + (t_j - t_i) * d_s
            want = (x_j - traj[j].double()).flatten(1).norm(dim=1).mean().item()
            assert C[i, j] == pytest.approx(want, rel=1e-4, abs=1e-5), (afs, i, j)


def test_plugin_search_can_price_jumps_as_amed_intervals(model):
    rec = search_schedule(model, model.info.shape, solver="ipndm", amed=True, nfe=3, afs=True, jump="amed",
                          num_fine=7, num_warmup=4)
    assert rec.grid.numel() == 3 and rec.record["search"]["jump"] == "amed" and rec.amed


def test_warm_up_reuses_the_teacher_evaluations(model):
    """The jumps start from D(x_i, t_i) of the teacher itself: one network call per fine step, no more."""
    counting = Counting(model)
    fine = amed.get_schedule("polynomial", 11)
    cost_matrix(counting, model.info.shape, fine, gits_seeds(0, 8), batch=4)
    assert counting.calls == 2 * 10  # 2 chunks x 10 teacher steps
    counting = Counting(model)  # Heun evaluates twice per step; only the call at its own state is reused
    cost_matrix(counting, model.info.shape, fine, gits_seeds(0, 4), teacher="heun", batch=4)
    assert counting.calls == 2 * 10


def test_afs_changes_only_the_jumps_from_the_start(model):
    fine = amed.get_schedule("polynomial", 9)
    plain, _ = cost_matrix(model, model.info.shape, fine, gits_seeds(0, 4), metric="l2")
    afs, _ = cost_matrix(model, model.info.shape, fine, gits_seeds(0, 4), metric="l2", afs_first=True)
    np.testing.assert_array_equal(afs[1:], plain[1:])
    assert (np.abs(afs[0, 1:] - plain[0, 1:]) > 1e-6).all()


def test_cost_is_per_seed_not_per_batch(model):
    fine = amed.get_schedule("polynomial", 9)
    a, _ = cost_matrix(model, model.info.shape, fine, gits_seeds(1, 8), batch=8)
    b, _ = cost_matrix(model, model.info.shape, fine, gits_seeds(1, 8), batch=3)
    up = np.triu_indices(9, 1)
    np.testing.assert_allclose(a[up], b[up], rtol=1e-5, atol=1e-6)


def test_amed_jumps_priced_on_the_first_warm_up_trajectories(model):
    """jump_warmup=k: AMED jump costs are the k-trajectory costs (whatever the batching), the teacher still runs on
    every seed (its final states for the AFS choice), and Euler costs ignore it."""
    shape, fine = model.info.shape, amed.get_schedule("polynomial", 7)
    student = ("amed", {}, 5, True)
    few, _ = cost_matrix(model, shape, fine, gits_seeds(0, 3), metric="l2", jump="amed", amed_solver=student, batch=8)
    part, finals = cost_matrix(model, shape, fine, gits_seeds(0, 8), metric="l2", jump="amed", amed_solver=student,
                               batch=2, jump_warmup=3)
    up = np.triu_indices(7, 1)
    np.testing.assert_allclose(part[up], few[up], rtol=1e-5, atol=1e-6)
    assert finals.shape[0] == 8
    full, _ = cost_matrix(model, shape, fine, gits_seeds(0, 8), metric="l2", batch=8)
    euler, _ = cost_matrix(model, shape, fine, gits_seeds(0, 8), metric="l2", batch=8, jump_warmup=3)
    np.testing.assert_array_equal(euler, full)
    with pytest.raises(ValueError, match=r"jump_warmup must be an integer in 1..8 \(the warm-up size\), got 9"):
        cost_matrix(model, shape, fine, gits_seeds(0, 8), jump="amed", amed_solver=student, jump_warmup=9)
    rec = search_schedule(model, shape, solver="amed", nfe=3, afs=True, num_fine=7, num_warmup=8, jump_warmup=3)
    assert rec.record["search"]["jump_warmup"] == 3 and rec.record["search"]["jump"] == "amed"


def test_warm_up_seeds_are_disjoint_from_evaluation_and_training_seeds():
    s = gits_seeds(3, 256)
    assert s[0] == GITS_SEED_BASE + 30_000_000 and len(set(s)) == 256
    assert min(s) > 49_999 and not set(s) & set(training_seeds(0, 10_000)) and not set(s) & set(training_seeds(99, 10_000))
    with pytest.raises(ValueError, match="got -1"):
        gits_seeds(-1, 4)


# ---------------------------------------------------------------------------------------- search
@pytest.fixture(scope="module")
def searched(model):
    return search_schedule(model, model.info.shape, solver="ipndm", nfe=4, num_fine=21, num_warmup=32, batch=16)


def test_search_on_the_embedded_model(model, searched):
    fine = amed.get_schedule("polynomial", 21)
    g, rec = searched.grid, searched.record
    idx = rec["search"]["indices"]
    assert g.numel() == 5 and torch.equal(g, fine[idx]) and idx[0] == 0 and idx[-1] == 20
    assert rec["model"] == "digits-8" and rec["model_sha256"] == model.info.sha256
    assert (rec["solver"], rec["nfe"], rec["afs"], rec["amed"]) == ("ipndm", 4, False, False)
    assert rec["search"]["seeds"] == {"first": GITS_SEED_BASE, "count": 32}
    # The grid is the DP optimum of the warm-up's cost matrix, and the search is a function of its seeds.
    C, _ = cost_matrix(model, model.info.shape, fine, gits_seeds(0, 32), batch=32)
    assert dp_path(C, 4, 1.15)[0] == idx
    again = search_schedule(model, model.info.shape, solver="ipndm", nfe=4, num_fine=21, num_warmup=32, batch=32)
    assert torch.equal(again.grid, g)


@pytest.mark.parametrize("metric", ["dev", "l2"])
def test_searched_grid_beats_the_polynomial_grid_on_held_out_seeds(model, metric):
    """The point of the search: iPNDM on the GITS grid ends closer to the teacher than on the EDM grid
    (here 1.5-1.8x closer; with 61 fine points and the dev metric it is not, see NOTES.md)."""
    rec = search_schedule(model, model.info.shape, solver="ipndm", nfe=5, num_fine=21, num_warmup=32, metric=metric)
    noise = amed.randn_seeds(range(64), model.info.shape)  # evaluation seeds, not the warm-up's
    ref = amed.sample(model, noise, solver="ipndm", schedule=amed.get_schedule("polynomial", 41))
    err = {}
    for name, schedule in [("gits", rec.grid), ("poly", "polynomial")]:
        x = amed.sample(model, noise, solver="ipndm", nfe=5, schedule=schedule)
        err[name] = float((x - ref).flatten(1).norm(dim=1).mean())
    assert err["gits"] < 0.8 * err["poly"], err


def test_search_with_afs_inserts_the_free_step(model):
    rec = search_schedule(model, model.info.shape, solver="ipndm", nfe=3, afs=True, num_fine=13, num_warmup=16)
    s = rec.record["search"]
    idx, k, dists = s["indices"], s["afs_index"], s["afs_distances"]
    # The DP picked 3 points (2 intervals, NFE 3 - the free step); k sits between its first two.
    assert rec.grid.numel() == 5 and idx[1] == k and 0 < k < idx[2]
    assert len(dists) == idx[2] - 1 and dists[k - 1] == min(dists)
    counting = Counting(model)
    amed.sample(counting, amed.randn_seeds(range(2), model.info.shape), schedule=rec)
    assert counting.calls == 3


def test_search_bad_input_names_the_value(model):
    shape = model.info.shape
    with pytest.raises(ValueError, match="need num_fine >= 10, got 6"):
        search_schedule(model, shape, nfe=9, num_fine=6)
    with pytest.raises(ValueError, match="unknown metric 'l3'"):
        search_schedule(model, shape, metric="l3")
    with pytest.raises(ValueError, match="NFE=5 is unreachable with afs=False"):
        search_schedule(model, shape, solver="heun", nfe=5)
    with pytest.raises(ValueError, match="AMED spends 2 NFE per interval: NFE=4"):
        search_schedule(model, shape, solver="amed", nfe=4, afs=True)
    with pytest.raises(ValueError, match="jump='amed' prices AMED intervals"):
        search_schedule(model, shape, jump="amed")
    with pytest.raises(ValueError, match="unknown teacher 'rk4'"):
        search_schedule(model, shape, teacher="rk4")


# ------------------------------------------------------------------------------------ grid files
def test_grid_file_round_trip(tmp_path, searched):
    path = searched.save(tmp_path / "g.json")
    back = load_grid(path)
    assert back.grid.tolist() == searched.grid.tolist()  # the same floats, bit for bit
    assert back.grid.dtype == torch.float64 and back.to_json() == searched.to_json()
    assert back.record["format"] == "amed-grid" and back.record["version"] == 1
    assert not list(tmp_path.glob(".*tmp"))  # written atomically, no temporary left behind


def _rewrite(path, edit, fix_checksum=True):
    rec = json.loads(path.read_text())
    edit(rec)
    if fix_checksum:
        rec["sha256"] = gridfile._checksum(rec)
    path.write_text(json.dumps(rec))


@pytest.mark.parametrize("edit,fix,match", [
    (lambda r: r["grid"].__setitem__(2, r["grid"][2] * 1.01), False, "checksum mismatch"),
    (lambda r: r.__setitem__("nfe", 7), False, "checksum mismatch"),
    (lambda r: r["grid"].__setitem__(2, r["grid"][1] * 2), True, "strictly decreasing"),
    (lambda r: r["grid"].__setitem__(4, -0.5), True, "finite and positive"),
    (lambda r: r.__setitem__("nfe", 7), True, "give NFE=4 for ipndm"),
    (lambda r: r.__setitem__("format", "amed-predictor"), True, "not an 'amed-grid' file"),
    (lambda r: r.__setitem__("version", 2), True, "version 2 is not supported"),
    (lambda r: r.pop("afs"), True, "lacks \\['afs'\\]"),
])
def test_edited_grid_files_are_refused(tmp_path, searched, edit, fix, match):
    path = searched.save(tmp_path / "g.json")
    _rewrite(path, edit, fix)
    with pytest.raises(ValueError, match=match):
        load_grid(path)


def test_corrupt_and_missing_grid_files(tmp_path, searched):
    path = searched.save(tmp_path / "g.json")
    path.write_bytes(path.read_bytes()[:100])
    with pytest.raises(ValueError, match="not valid JSON"):
        load_grid(path)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        load_grid(tmp_path / "nope.json")


# ------------------------------------------------------------------------ explicit grids in sample
def test_explicit_grid_gives_the_nfe_unless_one_is_given(model):
    noise = amed.randn_seeds(range(3), model.info.shape)
    grid = amed.get_schedule("polynomial", 41)
    counting = Counting(model)
    x = amed.sample(counting, noise, solver="ipndm", schedule=grid)
    assert counting.calls == 40 and x.shape == noise.shape
    assert torch.equal(x, amed.sample(model, noise, solver="ipndm", nfe=40, schedule=grid))
    with pytest.raises(ValueError, match="a 40-step grid gives NFE=40 for ipndm with afs=False, not 5"):
        amed.sample(model, noise, solver="ipndm", nfe=5, schedule=grid)
    counting = Counting(model)
    amed.sample(counting, noise, solver="heun", afs=True, schedule=grid[::8])  # 5 steps: 2 * 5 - 1
    assert counting.calls == 9
    with pytest.raises(ValueError, match="finite and positive"):
        amed.sample(model, noise, schedule=[float("inf"), 1.0, 0.002])


def test_grid_file_as_schedule(tmp_path, model, searched):
    path = searched.save(tmp_path / "g.json")
    noise = amed.randn_seeds(range(4), model.info.shape)
    plain = amed.sample(model, noise, solver="ipndm", schedule=searched.grid.tolist())
    assert torch.equal(amed.sample(model, noise, schedule=str(path)), plain)  # a path
    assert torch.equal(amed.sample(model, noise, schedule=load_grid(path)), plain)  # a loaded record
    assert torch.equal(amed.sample(model, noise, schedule=path, nfe=4, solver_options={"max_order": 4}), plain)
    for kw, match in [({"nfe": 5}, "searched for nfe=4, got nfe=5"), ({"solver": "ddim"}, "solver='ipndm', got solver='ddim'"),
                      ({"afs": True}, "searched for afs=False, got afs=True"),
                      ({"solver_options": {"max_order": 2}}, "searched for solver_options")]:
        with pytest.raises(ValueError, match=match):
            amed.sample(model, noise, schedule=path, **kw)
    other = amed.load_model("digits-8")
    object.__setattr__(other, "info", type(model.info)(**{**model.info.__dict__, "name": "digits-other"}))
    with pytest.raises(ValueError, match="searched on model 'digits-8', got model 'digits-other'"):
        amed.sample(other, noise, schedule=path)
    with pytest.raises(FileNotFoundError, match="missing.json"):
        amed.sample(model, noise, schedule=str(tmp_path / "missing.json"))


# ------------------------------------------------------------------------------- AMED on a grid
@pytest.mark.slow
@pytest.mark.parametrize("solver,amed_grid", [("ipndm", True), ("amed", True)])
def test_amed_trains_and_samples_on_a_searched_grid(tmp_path, model, solver, amed_grid):
    shape = model.info.shape
    rec = search_schedule(model, shape, solver=solver, amed=amed_grid, nfe=5, afs=True, num_fine=11, num_warmup=8)
    # The neutral AMED interval prices AMED-Solver's jumps; a multistep plugin keeps the authors' Euler jump.
    assert rec.record["search"]["jump"] == ("amed" if solver == "amed" else "euler")
    assert rec.grid.numel() == 4 and rec.record["search"]["afs_index"] is None
    path = rec.save(tmp_path / "g.json")
    with pytest.raises(ValueError, match="searched for AMED"):
        amed.sample(model, amed.randn_seeds(range(2), shape), schedule=path)
    pred = amed.train_predictor(model, shape, solver=solver, nfe=5, schedule=str(path), num_trajectories=64, batch=32,
                                M=2)
    cfg = pred.config
    assert cfg.schedule == "explicit" and cfg.grid == rec.grid.tolist() and cfg.rho is None
    assert (cfg.sigma_max, cfg.sigma_min) == (rec.grid[0].item(), rec.grid[-1].item())
    # The teacher grid holds the student points exactly, at (M + 1) n, with M points uniform in log t between.
    tg = teacher_grid(cfg)
    assert tg.numel() == 10 and tg[amed.teacher_indices(4, 2)].tolist() == cfg.grid
    lg = torch.log(tg).view(-1)[:-1].view(3, 3)
    torch.testing.assert_close(lg[:, 1] - lg[:, 0], lg[:, 2] - lg[:, 1], rtol=1e-12, atol=1e-12)
    pred.save(tmp_path / "p")
    back = amed.load_predictor(tmp_path / "p.json")
    assert back.config.grid == cfg.grid
    noise = amed.randn_seeds(range(8), shape)
    counting = Counting(model)
    amed.sample(counting, noise, predictor=back)
    assert counting.calls == 5
    x = amed.sample(model, noise, predictor=back)
    assert bool(torch.isfinite(x).all())
    assert torch.equal(x, amed.sample(model, noise, predictor=back, schedule=cfg.grid))  # its own grid is fine
    with pytest.raises(ValueError, match="trained on the grid"):
        amed.sample(model, noise, predictor=back, schedule=[80.0, 5.0, 0.5, 0.002])
    with pytest.raises(ValueError, match="cannot be combined with a predictor"):
        amed.sample(model, noise, predictor=back, schedule=path)
    # A grid file searched for another run is refused (its plain times are not).
    other = "amed" if solver == "ipndm" else "ipndm"
    with pytest.raises(ValueError, match=f"this AMED run is .*'solver': '{other}'"):
        amed.train_predictor(model, shape, solver=other, nfe=5, schedule=path, num_trajectories=8)
    with pytest.raises(ValueError, match="'afs': False"):
        amed.train_predictor(model, shape, solver=solver, nfe=6, afs=False, schedule=path, num_trajectories=8)
    cfg2 = amed.train_predictor(model, shape, solver=other, nfe=5, schedule=rec.grid, num_trajectories=8, M=1).config
    assert cfg2.grid == cfg.grid


def test_amed_config_checks_its_grid():
    with pytest.raises(ValueError, match="needs 4 student times, the grid has 3"):
        amed.AMEDConfig(solver="ipndm", nfe=5, afs=True, schedule="explicit", grid=[80.0, 1.0, 0.002])
    with pytest.raises(ValueError, match="strictly decreasing"):
        amed.AMEDConfig(solver="ipndm", nfe=5, afs=True, schedule="explicit", grid=[80.0, 1.0, 2.0, 0.002])
    with pytest.raises(ValueError, match="a grid goes with schedule='explicit', got schedule='polynomial'"):
        amed.AMEDConfig(schedule="polynomial", grid=[80.0, 1.0, 0.1, 0.002])
    with pytest.raises(ValueError, match="needs the grid"):
        amed.AMEDConfig(schedule="explicit")
    cfg = amed.AMEDConfig(nfe=5, afs=True, schedule="explicit", grid=[40.0, 1.0, 0.1, 0.01])
    assert (cfg.sigma_max, cfg.sigma_min) == (40.0, 0.01)  # the grid decides the range
    assert amed.AMEDConfig.from_json(cfg.to_json()) == cfg


# -------------------------------------------------------------------------------------------- CLI
def test_cli_gits_then_sample(tmp_path, capsys):
    g = tmp_path / "g.json"
    assert main(["gits", "--model", "digits-8", "--solver", "ipndm", "--nfe", "3", "--num-fine", "11", "--warmup", "16",
                 "--quiet", "--out", str(g)]) == 0
    assert "GITS grid for ipndm NFE=3" in capsys.readouterr().out
    rec = load_grid(g)
    out = tmp_path / "x.npz"
    assert main(["sample", "--model", "digits-8", "--schedule", str(g), "--seeds", "0-7", "--quiet", "--out", str(out)]) == 0
    with np.load(out) as f:
        meta = json.loads(str(f["meta"]))
    assert meta["grid_record"]["grid"] == rec.grid.tolist() and meta["schedule"] == str(g)
    assert main(["sample", "--model", "digits-8", "--schedule", str(g), "--nfe", "5", "--seeds", "0-7", "--quiet",
                 "--out", str(tmp_path / "y.npz")]) == 2
    err = capsys.readouterr().err
    assert "searched for nfe=3, got nfe=5" in err and err.count("\n") == 1
    assert main(["gits", "--nfe", "9", "--num-fine", "5", "--out", str(tmp_path / "bad.json")]) == 2
    assert "need num_fine >= 10, got 5" in capsys.readouterr().err
