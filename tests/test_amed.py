"""AMED predictor, AMED-Solver / AMED-Plugin sampling, Algorithm 1 training, the teacher cache, files."""

import json

import pytest
import torch

import amed
from amed.cache import TeacherCache
from amed.plugin import PLUGIN_BASES, amed_interval, init_state, run_amed, student_solver
from amed.predictor import AMEDConfig, AMEDPredictor, ConstantPredictor
from amed.sampling import ModelCall
from amed.testbed import GaussianMixture
from amed.training import build_teacher_cache, default_config, teacher_states, training_seeds

GMM = GaussianMixture.random((3, 8, 8), components=8, seed=0, dtype=torch.float32, std=0.1)
GMM64 = GaussianMixture(GMM.means.double(), GMM.stds.double())
SHAPE = (3, 8, 8)


@pytest.mark.parametrize("scale_dir,scale_time,count", [(0, 0, 8929), (0.01, 0, 8950), (0, 0.2, 8950), (0.01, 0.2, 8971)])
def test_parameter_count_and_initial_outputs(scale_dir, scale_time, count):
    p = AMEDPredictor(AMEDConfig(scale_dir=scale_dir, scale_time=scale_time), seed=0)
    assert sum(q.numel() for q in p.parameters()) == count
    h = torch.randn(64, 8, 8) * 0.1
    r, c, a = p(h, torch.full((64,), 9.72, dtype=torch.float64), torch.full((64,), 0.47, dtype=torch.float64))
    assert r.shape == c.shape == a.shape == (64,)
    assert abs(r.mean().item() - 0.5) < 0.15 and bool(((r > 0) & (r < 1)).all())
    assert bool(((c - 1).abs() <= scale_dir + 1e-12).all()) and bool(((a - 1).abs() <= scale_time + 1e-12).all())


def test_time_embedding_matches_edm_positional_embedding():
    p = AMEDPredictor(seed=0)
    assert torch.allclose(p.freqs, torch.tensor([1.0, 0.0464159, 0.00215443, 1e-4], dtype=torch.float64), rtol=1e-5)


def _constant(solver, nfe, afs, schedule="polynomial", **kw):
    cfg = AMEDConfig(solver=solver, nfe=nfe, afs=afs, schedule=schedule, rho=7.0 if schedule == "polynomial" else None,
                     scale_dir=0.0, **kw)
    return ConstantPredictor(cfg, r=0.5, c=1.0)


@pytest.mark.parametrize("afs,nfe", [(True, 5), (False, 6)])
def test_fixed_amed_solver_is_dpm_solver_2(afs, nfe):
    noise = amed.randn_seeds(range(8), SHAPE, dtype=torch.float64)
    x_amed = run_amed(GMM64, noise, _constant("amed", nfe, afs))
    x_dpm2 = amed.sample(GMM64, noise, solver="dpm2", nfe=nfe, afs=afs)
    assert torch.allclose(x_amed, x_dpm2, rtol=0, atol=1e-12)


@pytest.mark.parametrize("base", ["ddim", "ipndm", "dpmpp2m", "dpmpp3m", "unipc"])
@pytest.mark.parametrize("afs", [True, False])
def test_fixed_plugin_is_base_solver_on_doubled_geometric_grid(base, afs):
    nfe = 5 if afs else 6
    sched = "logsnr" if base in ("dpmpp2m", "dpmpp3m", "unipc") else "polynomial"
    pred = _constant(base, nfe, afs, schedule=sched)
    noise = amed.randn_seeds(range(8), SHAPE, dtype=torch.float64)
    x_plugin = run_amed(GMM64, noise, pred)
    t = amed.get_schedule(sched, pred.config.num_points, rho=pred.config.rho)
    doubled = torch.stack([t[:-1], (t[:-1] * t[1:]).sqrt()], 1).flatten()
    doubled = torch.cat([doubled, t[-1:]])
    x_base = amed.sample(GMM64, noise, solver=base, nfe=None, schedule=doubled, afs=afs)
    assert torch.allclose(x_plugin, x_base, rtol=0, atol=1e-10)


def test_fixed_dpm2_plugin_is_dpm_solver_2():
    noise = amed.randn_seeds(range(8), SHAPE, dtype=torch.float64)
    assert torch.allclose(run_amed(GMM64, noise, _constant("dpm2", 5, True)),
                          amed.sample(GMM64, noise, solver="dpm2", nfe=5, afs=True), rtol=0, atol=1e-12)


class GradProbe:
    """A small differentiable denoiser that records which calls carry a graph back to phi."""

    def __init__(self):
        self.w = torch.nn.Parameter(torch.tensor(0.3), requires_grad=False)
        self.calls = []

    def __call__(self, x, sigma):
        self.calls.append((float(sigma.detach()[0]), x.requires_grad or sigma.requires_grad))
        s = sigma.view(-1, 1, 1, 1)
        return torch.tanh(self.w * x) * (1 / (1 + s)) + 0.1 * x / (1 + s * s)


@pytest.mark.parametrize("solver", ["amed", "ipndm", "dpmpp3m"])
def test_gradient_reaches_phi_only_through_the_mid_point_call(solver):
    cfg = default_config(solver, 5, scale_time=0.1)
    pred = AMEDPredictor(cfg, seed=0)
    solver_obj = student_solver(cfg)
    probe = GradProbe()
    grid = amed.get_schedule(cfg.schedule, cfg.num_points, rho=cfg.rho)
    x = amed.randn_seeds(range(4), SHAPE) * float(grid[1])
    model = ModelCall(probe, afs=False, features=True)
    state = init_state(cfg, solver_obj)
    probe.calls.clear()
    x_next, state, _ = amed_interval(cfg, solver_obj, pred, x, grid[1].expand(4), grid[2].expand(4), model, state)
    loss = x_next.square().sum()
    grads = torch.autograd.grad(loss, list(pred.parameters()), allow_unused=True)
    # Exactly two network calls in the interval: at (x_n, t_n) without a graph, at the mid-point with one.
    assert [g for _, g in probe.calls] == [False, True]
    assert probe.calls[1][0] < float(grid[1]) and probe.calls[1][0] > float(grid[2])
    # The mid-point call carries real gradient: the bottleneck layers get none (h is detached and, for this
    # plain denoiser, zeros), the heads and the time embedding do.
    named = dict(zip([n for n, _ in pred.named_parameters()], grads))
    assert named["fc_r.weight"] is not None and named["fc_r.weight"].abs().sum() > 0
    assert named["fc_scale_time.weight"].abs().sum() > 0
    # Finite-difference check on the r head's bias.
    eps = 1e-3
    with torch.no_grad():
        def loss_at(delta):
            pred.fc_r.bias += delta
            m = ModelCall(probe, features=True)
            xn, _, _ = amed_interval(cfg, solver_obj, pred, x, grid[1].expand(4), grid[2].expand(4), m,
                                     init_state(cfg, solver_obj))
            pred.fc_r.bias -= delta
            return xn.double().square().sum().item()

        fd = (loss_at(eps) - loss_at(-eps)) / (2 * eps)
    assert named["fc_r.bias"].item() == pytest.approx(fd, rel=2e-2)


def test_training_is_seeded_and_improves_on_baselines():
    kw = dict(batch=128, schedule="polynomial", M=3)
    p1 = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, seed=3, num_trajectories=2048, **kw)
    p2 = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, seed=3, num_trajectories=256, **kw)
    p3 = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, seed=3, num_trajectories=256, **kw)
    assert all(torch.equal(a, b) for a, b in zip(p2.state_dict().values(), p3.state_dict().values()))
    noise = amed.randn_seeds(range(256), SHAPE)
    truth = amed.sample(GMM, noise, solver="heun", nfe=None, schedule=amed.get_schedule("logsnr", 201))

    def err(x):
        return (x - truth).flatten(1).norm(dim=1).mean().item()

    e_amed = err(amed.sample(GMM, noise, predictor=p1))
    e_dpm2 = err(amed.sample(GMM, noise, solver="dpm2", nfe=5, afs=True))
    e_ddim = err(amed.sample(GMM, noise, solver="ddim", nfe=5))
    assert e_amed < e_ddim and e_amed < e_dpm2, (e_amed, e_ddim, e_dpm2)
    assert p1.config.train_seconds > 0 and len(p1.config.loss_per_step) == 3


def test_coefficients_can_be_read_back():
    p = amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, num_trajectories=128, batch=64, seed=0)
    coef = amed.amed_coefficients(GMM, amed.randn_seeds(range(16), SHAPE), p)
    assert coef["r"].shape == coef["c"].shape == coef["s"].shape == (3, 16)
    assert bool(((coef["s"] < coef["t"][:-1, None]) & (coef["s"] > coef["t"][1:, None])).all())


def test_save_load_round_trip_and_mismatch_errors(tmp_path):
    p = amed.train_predictor(GMM, SHAPE, solver="ipndm", nfe=5, num_trajectories=64, batch=32, seed=1,
                             afs=True, scale_time=0.2)
    path = p.save(tmp_path / "pred")
    rec = json.loads((tmp_path / "pred.json").read_text())
    assert rec["num_parameters"] == 8971 and rec["config"]["solver"] == "ipndm" and rec["config"]["M"] == 2
    q = amed.load_predictor(path)
    noise = amed.randn_seeds(range(4), SHAPE)
    assert torch.equal(amed.sample(GMM, noise, predictor=p), amed.sample(GMM, noise, predictor=q))
    with pytest.raises(ValueError, match="trained for nfe=5, got nfe=7"):
        amed.sample(GMM, noise, predictor=q, nfe=7)
    with pytest.raises(ValueError, match="trained for schedule='polynomial'"):
        amed.sample(GMM, noise, predictor=q, schedule="logsnr")
    with pytest.raises(ValueError, match="shape"):
        amed.sample(GMM, torch.randn(2, 3, 4, 4), predictor=q)
    # A corrupted weights file is refused.
    blob = bytearray(path.read_bytes())
    blob[-1] ^= 0xFF
    path.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="sha256"):
        amed.load_predictor(tmp_path / "pred.json")


def test_cache_matches_on_the_fly_and_trains_the_same_predictor(tmp_path):
    kw = dict(solver="amed", nfe=5, num_trajectories=96, batch=32, seed=2, schedule="polynomial", M=1)
    cfg = default_config("amed", 5, schedule="polynomial", M=1)
    cache = build_teacher_cache(GMM, tmp_path / "c", cfg, SHAPE, 96, seed=2, batch=32, shard_size=64)
    seeds = training_seeds(2, 96)[:32]
    direct = teacher_states(GMM, amed.randn_seeds(seeds, SHAPE), cfg)
    assert torch.equal(cache.read(seeds), direct)
    p_cache = amed.train_predictor(GMM, SHAPE, cache=cache, **kw)
    p_fly = amed.train_predictor(GMM, SHAPE, **kw)
    assert all(torch.equal(a, b) for a, b in zip(p_cache.state_dict().values(), p_fly.state_dict().values()))


def test_cache_rejects_mismatch_and_corruption_and_resumes(tmp_path):
    cfg = default_config("amed", 5, schedule="polynomial", M=1)
    calls = []

    def flaky(seeds):
        calls.append(seeds[0])
        if len(calls) == 3:
            raise KeyboardInterrupt  # killed while computing the second shard
        return teacher_states(GMM, amed.randn_seeds(seeds, SHAPE), cfg)

    cache = build_teacher_cache(GMM, tmp_path / "c", cfg, SHAPE, 64, batch=16, shard_size=32)  # builds all
    meta = dict(cache.meta)
    root2 = tmp_path / "d"
    c2 = TeacherCache(root2, meta)
    with pytest.raises(KeyboardInterrupt):
        c2.build(flaky, chunk=16)
    assert not c2.complete() and (root2 / "shard-00000.npy").exists() and not (root2 / "shard-00001.npy").exists()
    calls.clear()
    c3 = TeacherCache(root2, meta)
    c3.build(lambda s: teacher_states(GMM, amed.randn_seeds(s, SHAPE), cfg), chunk=16)
    assert c3.complete()
    assert torch.equal(c3.read(training_seeds(0, 64)), cache.read(training_seeds(0, 64)))
    # Another grid (M) is rejected, naming the field.
    with pytest.raises(ValueError, match="built for M=1, this run needs M=3"):
        TeacherCache(tmp_path / "c", dict(meta, M=3))
    # A corrupt shard is rejected.
    shard = tmp_path / "c" / "shard-00001.npy"
    blob = bytearray(shard.read_bytes())
    blob[-3] ^= 0x55
    shard.write_bytes(bytes(blob))
    with pytest.raises(ValueError, match="corrupt"):
        TeacherCache(tmp_path / "c", meta).read(training_seeds(0, 64)[40:41])
    with pytest.raises(ValueError, match="not in teacher cache"):
        cache.read([5])


def test_unreachable_nfe_and_unknown_settings():
    with pytest.raises(ValueError, match="NFE=4 is unreachable with afs=True"):
        amed.train_predictor(GMM, SHAPE, solver="amed", nfe=4, num_trajectories=8, batch=8)
    with pytest.raises(ValueError, match="unknown AMED settings"):
        amed.train_predictor(GMM, SHAPE, solver="amed", nfe=5, num_trajectories=8, batch=8, warp=3)
    with pytest.raises(ValueError, match="base solvers"):
        amed.train_predictor(GMM, SHAPE, solver="heun", nfe=5, num_trajectories=8, batch=8)
    assert set(PLUGIN_BASES) <= set(amed.SOLVERS)


def test_saturated_predictor_stays_finite():
    """A saturated r head must not put s on a grid point (h = 0 would make DPM++'s coefficients inf)."""
    cfg = default_config("dpmpp3m", 5, afs=True)
    cfg.shape, cfg.model = SHAPE, ""
    p = AMEDPredictor(cfg, seed=0)
    for bias in (60.0, -60.0):
        with torch.no_grad():
            p.fc_r.bias.fill_(bias)
        r, _, _ = p(torch.zeros(2, 8, 8), torch.full((2,), 9.7, dtype=torch.float64),
                    torch.full((2,), 0.47, dtype=torch.float64))
        assert bool(((r > 0) & (r < 1)).all())
        x = amed.sample(GMM, amed.randn_seeds(range(2), SHAPE), predictor=p)
        assert bool(torch.isfinite(x).all())


def test_bad_predictor_settings_are_value_errors(tmp_path):
    with pytest.raises(ValueError, match="scale_time must lie in"):
        AMEDConfig(scale_time=-0.1)
    (tmp_path / "p.json").write_text("[1, 2]")
    (tmp_path / "p.safetensors").write_bytes(b"x")
    with pytest.raises(ValueError, match="not an amed predictor record"):
        amed.load_predictor(tmp_path / "p.json")


class SigmaFeature:
    """A denoiser whose 'bottleneck feature' is the sigma it was called at, to see which call feeds g_phi."""

    def __init__(self):
        self.hooked = []

    def __call__(self, x, sigma):
        return GMM64(x, sigma)

    def with_feature(self, x, sigma):
        self.hooked.append(float(sigma[0]))
        return GMM64(x, sigma), sigma.to(torch.float32)[:, None, None].expand(-1, 8, 8)


class RecordingPredictor(ConstantPredictor):
    def __init__(self, config):
        super().__init__(config, r=0.4)
        self.seen = []

    def forward(self, h, t_cur, t_next):
        self.seen.append((float(h[0, 0, 0]), float(t_cur[0])))
        return super().forward(h, t_cur, t_next)


@pytest.mark.parametrize("solver,schedule", [("amed", "time_uniform"), ("ipndm", "polynomial"), ("unipc", "logsnr")])
def test_predictor_reads_the_feature_of_the_t_n_call(solver, schedule):
    cfg = AMEDConfig(solver=solver, nfe=5, afs=True, schedule=schedule,
                     rho={"time_uniform": 1.0, "polynomial": 7.0}.get(schedule), scale_dir=0.0)
    pred, model = RecordingPredictor(cfg), SigmaFeature()
    run_amed(model, amed.randn_seeds(range(2), SHAPE, dtype=torch.float64), pred)
    # Interval 0 follows AFS: zeros. Later intervals see the network call made at their own t_n.
    assert pred.seen[0][0] == 0.0
    for h, t in pred.seen[1:]:
        assert h == pytest.approx(t, rel=1e-6)
    if solver != "unipc":  # only the t_n calls are hooked; UniPC's t_n call is the previous corrector's
        assert len(model.hooked) == len(pred.seen) - 1


class Conditional:
    """A class-conditional test denoiser: refuses calls unless per-seed labels are bound (like EDM ImageNet)."""

    def __init__(self):
        self.labels, self.bound_batches = None, []

    import contextlib as _cl

    @_cl.contextmanager
    def condition(self, seeds):
        self.labels = torch.tensor([s % 3 for s in seeds], dtype=torch.float32)
        self.bound_batches.append(len(seeds))
        try:
            yield self
        finally:
            self.labels = None

    def __call__(self, x, sigma):
        if self.labels is None or self.labels.shape[0] != x.shape[0]:
            raise ValueError("labels not bound for this batch")
        return GMM(x, sigma) + 0.01 * self.labels.view(-1, 1, 1, 1)


def test_training_binds_per_seed_conditioning(tmp_path):
    model = Conditional()
    p = amed.train_predictor(model, SHAPE, solver="ipndm", nfe=5, num_trajectories=32, batch=16, M=1, epochs=1)
    assert model.bound_batches == [16, 16]
    cfg = default_config("amed", 5, M=1)
    cache = build_teacher_cache(model, tmp_path / "c", cfg, SHAPE, 32, batch=16, shard_size=32)
    assert cache.complete() and p.config.num_trajectories == 32


class Guided:
    """A stand-in for a CFG adapter: its output depends on guidance_scale, which the predictor records."""

    def __init__(self, w):
        self.guidance_scale = w

    def __call__(self, x, sigma):
        return GMM(x, sigma) * (1 + 0.01 * self.guidance_scale)


def test_guidance_scale_is_recorded_and_checked(tmp_path):
    p = amed.train_predictor(Guided(7.5), SHAPE, solver="ipndm", nfe=5, num_trajectories=16, batch=16, M=1)
    assert p.config.guidance == 7.5
    q = amed.load_predictor(p.save(tmp_path / "pred"))
    noise = amed.randn_seeds(range(4), SHAPE)
    amed.sample(Guided(7.5), noise, predictor=q)
    with pytest.raises(ValueError, match="guidance scale 7.5, the model applies 3"):
        amed.sample(Guided(3.0), noise, predictor=q)
    with pytest.raises(ValueError, match="the model applies none"):
        amed.sample(GMM, noise, predictor=q)
    # A teacher cache built at one guidance scale is refused by training at another.
    cfg = default_config("ipndm", 5, M=1)
    cache = build_teacher_cache(Guided(7.5), tmp_path / "c", cfg, SHAPE, 16, batch=16, shard_size=16)
    assert cache.meta["guidance"] == 7.5
    with pytest.raises(ValueError, match="guidance=7.5"):
        amed.train_predictor(Guided(2.0), SHAPE, solver="ipndm", nfe=5, num_trajectories=16, batch=16, M=1,
                             cache=cache)
    # Models without CFG record None and are not checked.
    assert amed.train_predictor(GMM, SHAPE, solver="ipndm", nfe=5, num_trajectories=16, batch=16,
                                M=1).config.guidance is None


class Captioned(Guided):
    """A CFG stand-in bound to a captions list, identified as the SD adapter identifies its list."""

    def __init__(self, captions_id):
        super().__init__(7.5)
        self.conditioning_id = captions_id


def test_teacher_cache_is_bound_to_its_captions(tmp_path):
    cfg = default_config("ipndm", 5, M=1)
    cache = build_teacher_cache(Captioned("list-a"), tmp_path / "c", cfg, SHAPE, 16, batch=16, shard_size=16)
    assert cache.meta["conditioning"] == "list-a"
    amed.train_predictor(Captioned("list-a"), SHAPE, solver="ipndm", nfe=5, num_trajectories=16, batch=16, M=1,
                         cache=cache)
    with pytest.raises(ValueError, match="conditioning='list-a'"):
        amed.train_predictor(Captioned("list-b"), SHAPE, solver="ipndm", nfe=5, num_trajectories=16, batch=16,
                             M=1, cache=cache)


def test_unset_sigma_range_comes_from_the_model():
    from amed.models.base import ModelInfo

    class Narrow:
        info = ModelInfo(name="narrow", shape=SHAPE, sigma_min=0.03, sigma_max=14.6)

        def __init__(self):
            self.sigmas = []

        def __call__(self, x, sigma):
            self.sigmas.append(float(sigma[0]))
            return GMM(x, sigma)

    m = Narrow()
    amed.sample(m, amed.randn_seeds(range(2), SHAPE), solver="ddim", nfe=4)
    assert m.sigmas[0] == pytest.approx(14.6) and min(m.sigmas) > 0.03
    p = amed.train_predictor(Narrow(), SHAPE, solver="ipndm", nfe=5, num_trajectories=16, batch=16, M=1)
    assert (p.config.sigma_min, p.config.sigma_max) == (0.03, 14.6)
    assert amed.sample(GMM, amed.randn_seeds(range(2), SHAPE), solver="ddim", nfe=4).shape[0] == 2  # no info: 0.002..80


def test_format_1_predictors_still_load_and_resave_bound(tmp_path):
    """Files saved before the record was bound to the weights load (with a warning) and re-save as format 2."""
    from safetensors.torch import save as st_save

    p = amed.train_predictor(GMM, SHAPE, solver="ipndm", nfe=5, num_trajectories=16, batch=16, M=1)
    assert p.config.features is False  # GMM has no bottleneck: recorded, so sampling with GMM stays allowed
    blob = st_save({k: v.contiguous() for k, v in p.state_dict().items()},
                   metadata={"format": "amed-predictor", "version": "1"})
    config = {k: v for k, v in p.config.to_json().items() if k != "features"}
    (tmp_path / "old.safetensors").write_bytes(blob)
    (tmp_path / "old.json").write_text(json.dumps({"format": "amed-predictor", "version": 1,
                                                   "weights": "old.safetensors", "config": config,
                                                   "weights_sha256": __import__("hashlib").sha256(blob).hexdigest()}))
    with pytest.warns(UserWarning, match="format 1 does not bind"):
        q = amed.load_predictor(tmp_path / "old.json")
    noise = amed.randn_seeds(range(4), SHAPE)
    assert torch.equal(amed.sample(GMM, noise, predictor=p), amed.sample(GMM, noise, predictor=q))
    q.save(tmp_path / "old")
    assert json.loads((tmp_path / "old.json").read_text())["version"] == 2
    r = amed.load_predictor(tmp_path / "old.json")  # no warning now
    assert torch.equal(amed.sample(GMM, noise, predictor=q), amed.sample(GMM, noise, predictor=r))
