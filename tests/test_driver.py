"""amed.driver.integrate, the one loop under amed.sample, AMED sampling, training and the analysis."""
import pytest
import torch

import amed
from amed.calls import ModelCall
from amed.driver import integrate
from amed.errors import Diverged
from amed.solvers import make_solver

GRID = torch.tensor([80.0, 10.0, 1.0, 0.002], dtype=torch.float64)


def _denoise(x, sigma):
    return x / (1.0 + sigma.view(-1, 1) ** 2)


def test_a_solver_run_through_integrate_is_amed_sample():
    noise = torch.randn(3, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    solver = make_solver("ipndm")
    model = ModelCall(_denoise)
    seen = []

    def step(x, t_cur, t_next, state, n):
        assert t_cur.shape == (3,) and float(t_cur[0]) == float(GRID[n]) and float(t_next[0]) == float(GRID[n + 1])
        seen.append(n)
        return solver.step(x, t_cur, t_next, model, state)

    traj, _ = integrate(step, noise * 80.0, GRID, solver.init_state(3), name="ipndm", model=model, nfe=3,
                        keep_trajectory=True)
    assert seen == [0, 1, 2] and traj.shape == (4, 3, 4)
    ref = amed.sample_trajectory(_denoise, noise, solver="ipndm", schedule=GRID.tolist())
    assert torch.equal(traj, ref)


def test_the_call_count_is_checked_and_names_the_run():
    model = ModelCall(_denoise)

    def step(x, t_cur, t_next, state, n):
        return x - (t_cur - t_next).view(-1, 1) * (x - model(x, t_cur)) / t_cur.view(-1, 1), state

    with pytest.raises(RuntimeError, match=r"euler: made 3 network calls, planned NFE=4"):
        integrate(step, torch.ones(2, 4), GRID, name="euler", model=model, nfe=4)


def test_a_non_finite_state_names_its_interval_unless_the_watch_is_off():
    def step(x, t_cur, t_next, state, n):
        return (x * float("nan") if n == 1 else x), state

    with pytest.raises(Diverged, match=r"bad: non-finite state after step 1 \(sigma 10 -> 1\)"):
        integrate(step, torch.ones(2, 4), GRID, name="bad")
    out, _ = integrate(step, torch.ones(2, 4), GRID, name="bad", watch=False)  # training checks its loss instead
    assert torch.isnan(out).all()


def test_feature_capture_is_explicit():
    class Hooked:
        def __call__(self, x, sigma):
            return x

        def with_feature(self, x, sigma):
            return x, torch.full((x.shape[0], 8, 8), 7.0)

    model = ModelCall(Hooked(), features=True)
    x, s = torch.ones(2, 3), torch.ones(2)
    model.hooked(x, s)
    assert float(model.last_feature(2, "cpu")[0, 0, 0]) == 7.0
    model(x, s)  # a plain call records nothing
    assert float(model.last_feature(2, "cpu").abs().sum()) == 0.0 and model.nfe == 2
    plain = ModelCall(lambda x, sigma: x, features=True)  # no with_feature: the hooked view is the plain call
    assert plain.hooked == plain
