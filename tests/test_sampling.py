"""The public sampling API: NFE accounting, AFS, per-seed determinism, errors, trajectories."""

import subprocess
import sys

import pytest
import torch

import amed
from amed.sampling import afs_denoise
from amed.testbed import EmpiricalData, GaussianData, GaussianMixture

GMM = GaussianMixture.random((3, 4, 4), components=5, seed=3, dtype=torch.float32)


class Counting:
    """A denoiser that records every sigma it is called with."""

    def __init__(self, inner):
        self.inner, self.sigmas = inner, []

    def __call__(self, x, sigma):
        assert sigma.ndim == 1 and sigma.shape[0] == x.shape[0] and sigma.dtype == x.dtype
        self.sigmas.append(float(sigma[0]))
        return self.inner(x, sigma)


ONE_EVAL = ["ddim", "dpmpp2m", "dpmpp3m", "unipc", "ipndm"]
TWO_EVAL = ["heun", "dpm2"]


@pytest.mark.parametrize("solver", ONE_EVAL)
@pytest.mark.parametrize("nfe", [1, 3, 5, 9])
@pytest.mark.parametrize("afs", [False, True])
def test_nfe_is_network_calls_one_eval(solver, nfe, afs):
    d = Counting(GMM)
    x = amed.sample(d, amed.randn_seeds(range(2), (3, 4, 4)), solver=solver, nfe=nfe, afs=afs)
    assert len(d.sigmas) == nfe and x.shape == (2, 3, 4, 4)
    if afs:  # the first network call is no longer at sigma_max
        assert d.sigmas[0] < 80.0
    else:
        assert d.sigmas[0] == pytest.approx(80.0)


@pytest.mark.parametrize("solver", TWO_EVAL)
@pytest.mark.parametrize("nfe,afs", [(2, False), (4, False), (6, False), (3, True), (5, True), (9, True)])
def test_nfe_is_network_calls_two_eval(solver, nfe, afs):
    d = Counting(GMM)
    amed.sample(d, amed.randn_seeds(range(2), (3, 4, 4)), solver=solver, nfe=nfe, afs=afs)
    assert len(d.sigmas) == nfe


@pytest.mark.parametrize("solver", TWO_EVAL)
def test_odd_nfe_without_afs_says_what_works(solver):
    with pytest.raises(ValueError, match=r"NFE=5 is unreachable with afs=False; use afs=True or NFE in \[4, 6\]"):
        amed.sample(GMM, torch.randn(1, 3, 4, 4), solver=solver, nfe=5, afs=False)
    with pytest.raises(ValueError, match="afs=False or NFE"):
        amed.sample(GMM, torch.randn(1, 3, 4, 4), solver=solver, nfe=4, afs=True)


@pytest.mark.parametrize("kw,match", [
    ({"solver": "euler"}, "unknown solver 'euler'"),
    ({"schedule": "karras"}, "unknown schedule 'karras'"),
    ({"nfe": 0}, "NFE must be a positive integer, got 0"),
    ({"nfe": 2.5}, "NFE must be a positive integer, got 2.5"),
    ({"solver": "ipndm", "solver_options": {"max_order": 7}}, "max_order must be 1..4, got 7"),
    ({"solver": "ipndm", "solver_options": {"order": 2}}, "does not take options"),
    ({"solver": "amed"}, "needs a trained predictor"),
    ({"schedule": [80.0, 90.0, 0.002], "nfe": None}, "strictly decreasing"),
])
def test_bad_requests_are_value_errors(kw, match):
    args = {"solver": "ipndm", "nfe": 5, **kw}
    with pytest.raises(ValueError, match=match):
        amed.sample(GMM, torch.randn(1, 3, 4, 4), **args)


def test_non_finite_state_names_solver_step_and_sigma():
    def bad(x, sigma):
        return torch.where(sigma[:, None, None, None] < 5.0, torch.full_like(x, float("nan")), torch.zeros_like(x))

    with pytest.raises(FloatingPointError, match=r"ddim: non-finite state after step \d+ \(sigma [\d.]+ -> [\d.]+\)"):
        amed.sample(bad, torch.randn(2, 3, 4, 4), solver="ddim", nfe=5)


def test_afs_first_step_is_analytical():
    x = torch.randn(3, 5, dtype=torch.float64) * 80
    D = afs_denoise(x, torch.full((3,), 80.0, dtype=torch.float64))
    d = (x - D) / 80.0
    assert torch.allclose(d, x / (1 + 80.0**2) ** 0.5)
    # With AFS the first ddim step equals an explicit Euler step along x / sqrt(1 + t^2).
    noise = torch.randn(2, 3, 4, 4)
    traj = amed.sample_trajectory(GMM, noise, solver="ddim", nfe=4, afs=True)
    grid = amed.get_schedule("polynomial", 6)
    expected = traj[0] + (grid[1] - grid[0]).float() * traj[0] / (1 + 80.0**2) ** 0.5
    assert torch.allclose(traj[1], expected, rtol=1e-6, atol=1e-6)


def test_trajectory_shape_and_endpoints():
    noise = amed.randn_seeds([0, 1, 2], (3, 4, 4))
    traj = amed.sample_trajectory(GMM, noise, solver="ipndm", nfe=5)
    assert traj.shape == (6, 3, 3, 4, 4)
    assert torch.equal(traj[0], noise * 80.0)
    assert torch.equal(traj[-1], amed.sample(GMM, noise, solver="ipndm", nfe=5))


class SmallConvNet(torch.nn.Module):
    """A float32 conv denoiser of realistic structure (random weights), EDM-preconditioned."""

    def __init__(self, per_sample=False):
        super().__init__()
        self.per_sample = per_sample
        g = torch.Generator().manual_seed(0)
        self.net = torch.nn.Sequential(torch.nn.Conv2d(4, 32, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(32, 32, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(32, 3, 3, padding=1))
        for p in self.parameters():
            p.data = 0.15 * torch.randn(p.shape, generator=g)

    @torch.no_grad()
    def forward(self, x, sigma):
        if self.per_sample:  # batch-invariant by construction: one network call per row
            return torch.cat([self._forward(x[i:i + 1], sigma[i:i + 1]) for i in range(x.shape[0])])
        return self._forward(x, sigma)

    def _forward(self, x, sigma):
        s = sigma.view(-1, 1, 1, 1)
        c_in, c_skip, c_out = 1 / (s**2 + 0.25).sqrt(), 0.25 / (s**2 + 0.25), 0.5 * s / (s**2 + 0.25).sqrt()
        h = torch.cat([c_in * x, (s.log() / 4).expand(-1, 1, *x.shape[2:])], 1)
        return c_skip * x + c_out * self.net(h)


GMM64 = GaussianMixture(GMM.means.double(), GMM.stds.double())


@pytest.mark.parametrize("solver", ["ddim", "heun", "dpm2", "dpmpp2m", "dpmpp3m", "unipc", "ipndm"])
@pytest.mark.parametrize("model,dtype,tol", [(GMM64, torch.float64, 1e-6), (SmallConvNet(per_sample=True), torch.float32, 0.0)],
                         ids=["gmm64", "convnet32-batch-invariant"])
def test_seeds_not_batch_size_decide_the_samples(solver, model, dtype, tol):
    # A float32 conv net run batched is not batch-invariant itself: oneDNN picks convolution
    # algorithms by batch size (one call differs by ~4e-7 relative between batch 1 and 64). Run per
    # row, the same net is batch-invariant, and then the samples must be bit-identical.
    seeds = list(range(100, 164))
    kw = dict(solver=solver, nfe=6 if solver in TWO_EVAL else 5, schedule="logsnr" if "pp" in solver else "polynomial")
    full = amed.sample(model, amed.randn_seeds(seeds, (3, 4, 4), dtype=dtype), **kw)
    for bs in (1, 7):
        parts = [amed.sample(model, amed.randn_seeds(seeds[i:i + bs], (3, 4, 4), dtype=dtype), **kw)
                 for i in range(0, 64, bs)]
        got = torch.cat(parts)
        rel = ((got - full).norm() / full.norm()).item()
        assert rel <= tol, f"batch {bs}: relative difference {rel:.2e}"


def test_batch_invariant_denoiser_gives_bit_identical_samples():
    data = GaussianData.random((3, 4, 4), seed=0, dtype=torch.float32)  # elementwise: batch-invariant
    seeds = list(range(20))
    full = amed.sample(data, amed.randn_seeds(seeds, (3, 4, 4)), solver="unipc", nfe=5, schedule="logsnr")
    ones = torch.cat([amed.sample(data, amed.randn_seeds([s], (3, 4, 4)), solver="unipc", nfe=5, schedule="logsnr")
                      for s in seeds])
    assert torch.equal(full, ones)


def test_randn_seeds_rows_depend_only_on_their_seed():
    a = amed.randn_seeds([5, 6, 7], (2, 3))
    b = amed.randn_seeds([7], (2, 3))
    assert torch.equal(a[2], b[0]) and torch.equal(a[0], torch.randn(2, 3, generator=torch.Generator().manual_seed(5)))


def test_parse_seeds():
    assert amed.parse_seeds("0-3,7,9-10") == [0, 1, 2, 3, 7, 9, 10]
    assert amed.parse_seeds(4) == [4]
    for bad in ("3-1", "a-b", "", "-2"):
        with pytest.raises(ValueError):
            amed.parse_seeds(bad)


def test_explicit_grid_and_custom_denoiser_shapes():
    data = EmpiricalData(torch.randn(50, 2, dtype=torch.float64).clamp(-1, 1))
    grid = amed.get_schedule("logsnr", 40).tolist()
    x = amed.sample(data, torch.randn(8, 2, dtype=torch.float64), solver="dpm2", nfe=None, schedule=grid)
    assert x.shape == (8, 2) and x.dtype == torch.float64
    # The final samples land near the training points (the empirical optimum memorises them).
    dist = torch.cdist(x, data.means).min(dim=1).values
    assert float(dist.max()) < 0.05


def test_plan_counts():
    p = amed.plan("heun", nfe=5, afs=True)
    assert (p.steps, p.nfe, p.grid.numel()) == (3, 5, 4)
    p = amed.plan("ipndm", nfe=5, afs=True)
    assert (p.steps, p.grid.numel()) == (6, 7)


def test_import_without_optional_packages():
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] in ('triton', 'diffusers', 'transformers', 'cleanfid', 'snakemake', 'scipy', 'sklearn'):\n"
        "            raise ImportError('blocked ' + name)\n"
        "sys.meta_path.insert(0, Block())\n"
        "import amed, torch\n"
        "x = amed.sample(lambda x, s: 0 * x, torch.randn(2, 3), solver='ipndm', nfe=3)\n"
        "assert x.shape == (2, 3)\n"
        "assert not any(m.split('.')[0] in ('triton', 'diffusers', 'scipy') for m in sys.modules)\n"
        "print('ok')\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "ok" in out.stdout, out.stderr


def test_finite_watch_names_the_first_bad_step_when_deferred():
    """On CUDA the per-step sums are checked once at the end (no host sync per step); the error is the same."""
    from amed.calls import FiniteWatch

    watch = FiniteWatch("ipndm", torch.tensor([80.0, 10.0, 1.0, 0.002]))
    watch.sums = [torch.tensor(3.0), torch.tensor(float("inf")), torch.tensor(float("nan"))]  # as CUDA steps leave them
    with pytest.raises(FloatingPointError, match=r"ipndm: non-finite state after step 1 \(sigma 10 -> 1\)"):
        watch.done()
    FiniteWatch("ddim", torch.tensor([1.0, 0.5])).done()  # nothing recorded: nothing to raise


@pytest.mark.skipif(not torch.cuda.is_available(), reason="the deferred check runs on CUDA tensors")
def test_non_finite_state_on_cuda_is_reported_after_the_loop():
    def bad(x, sigma):
        return torch.where(sigma.view(-1, 1, 1, 1) < 1.0, torch.full_like(x, float("nan")), 0.5 * x)

    noise = torch.randn(2, 1, 4, 4, device="cuda")
    with pytest.raises(FloatingPointError, match="non-finite state after step"):
        amed.sample(bad, noise, solver="ddim", nfe=5)


def test_a_schedules_own_options_still_pass_through():
    """Extra keywords of sample() that the schedule takes (discrete's alpha-bar table) keep working."""
    from amed.schedules import DiscreteVP

    table = DiscreteVP.scaled_linear(0.0015, 0.0195)
    lo, hi = table.sigma_min, table.sigma_max
    noise = amed.randn_seeds(range(2), (3, 4, 4))
    a = amed.sample(GMM, noise, solver="ddim", nfe=4, schedule="discrete", sigma_min=lo, sigma_max=hi, table=table)
    b = amed.sample(GMM, noise, solver="ddim", nfe=None, schedule=amed.get_schedule("discrete", 5, lo, hi, table=table))
    assert torch.equal(a, b)
