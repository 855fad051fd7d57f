"""Schedules against the reference values of the authors' formulas (shared/reference/authors-code.md §5)."""

import pytest
import torch

from amed.schedules import DiscreteVP, get_schedule, refine_schedule, teacher_indices

REFERENCE = [
    ("polynomial", 4, {"rho": 7}, [80, 9.7232, 0.4700, 0.002]),
    ("polynomial", 7, {"rho": 7}, [80, 30.1833, 9.7232, 2.5152, 0.4700, 0.0515, 0.002]),
    ("polynomial", 10, {"rho": 7}, [80, 42.4152, 21.1087, 9.7232, 4.0661, 1.5017, 0.4700, 0.1166, 0.0204, 0.002]),
    ("polynomial", 6, {"rho": 7}, [80, 24.4083, 5.8389, 0.9654, 0.0851, 0.002]),
    ("time_uniform", 4, {"rho": 1}, [80, 6.9502, 1.2867, 0.002]),
    ("time_uniform", 7, {"rho": 1}, [80, 20.9655, 6.9502, 2.8237, 1.2867, 0.5272, 0.002]),
    ("time_uniform", 10, {"rho": 1}, [80, 31.898, 14.1472, 6.9502, 3.7419, 2.1599, 1.2867, 0.7382, 0.3401, 0.002]),
    ("logsnr", 4, {}, [80, 2.3392, 0.0684, 0.002]),
]


@pytest.mark.parametrize("name,n,kw,expected", REFERENCE)
def test_reference_values(name, n, kw, expected):
    t = get_schedule(name, n, 0.002, 80.0, **kw)
    assert t.dtype == torch.float64
    exp = torch.tensor(expected, dtype=torch.float64)
    # The reference values are rounded to 4 decimals: compare to 1e-4 relative or half a unit of the last digit.
    assert torch.all((t - exp).abs() <= torch.maximum(1e-4 * exp, torch.full_like(exp, 5.1e-5))), (t, exp)


def test_discrete_sd_table():
    table = DiscreteVP.scaled_linear()
    assert table.sigma_min == pytest.approx(0.029167, rel=1e-4)
    assert table.sigma_max == pytest.approx(14.614641, rel=1e-6)
    t = get_schedule("discrete", 4, table.sigma_min, table.sigma_max, rho=1.0)
    assert torch.allclose(t, torch.tensor([14.6146, 2.9183, 0.9324, 0.0292], dtype=torch.float64), rtol=1e-4, atol=5.1e-5)
    # tau = [1, .667, .334, .001] <-> DDPM index [999, 666, 333, 0]
    idx = table.sigma_inv(t) * 1000 - 1
    assert torch.allclose(idx, torch.tensor([999.0, 666.0, 333.0, 0.0], dtype=torch.float64), atol=1e-6)


def test_discrete_ldm_bedroom_range():
    table = DiscreteVP.scaled_linear(0.0015, 0.0195)
    assert table.sigma_min == pytest.approx(0.03876, rel=1e-3)
    assert table.sigma_max == pytest.approx(83.82, rel=1e-3)


def test_time_quadratic_is_vp_time_rho_2():
    assert torch.equal(get_schedule("time_quadratic", 6), get_schedule("time_uniform", 6, rho=2.0))


@pytest.mark.parametrize("name", ["polynomial", "logsnr", "time_uniform", "time_quadratic"])
@pytest.mark.parametrize("M", [1, 2, 3, 7])
def test_refined_grid_contains_student_grid(name, M):
    n = 6
    student = get_schedule(name, n)
    teacher = refine_schedule(name, n, M)
    assert teacher.numel() == (M + 1) * (n - 1) + 1
    assert torch.allclose(teacher[teacher_indices(n, M)], student, rtol=1e-12, atol=0)
    assert bool((teacher[1:] < teacher[:-1]).all())


def test_refined_discrete_and_explicit_grids():
    table = DiscreteVP.scaled_linear()
    kw = dict(sigma_min=table.sigma_min, sigma_max=table.sigma_max, rho=1.0)
    s = get_schedule("discrete", 5, **kw)
    t = refine_schedule("discrete", 5, 2, **kw)
    assert torch.allclose(t[teacher_indices(5, 2)], s, rtol=1e-10)
    grid = torch.tensor([80.0, 10.0, 1.0, 0.002], dtype=torch.float64)
    r = refine_schedule(grid, 4, 1)
    assert torch.allclose(r[::2], grid) and torch.allclose(r[1], torch.tensor(80.0 * 10.0).sqrt().double())


def test_bad_input_names_the_value():
    with pytest.raises(ValueError, match="'karras'"):
        get_schedule("karras", 5)
    with pytest.raises(ValueError, match="at least 2"):
        get_schedule("polynomial", 1)
    with pytest.raises(ValueError, match="sigma_min"):
        get_schedule("polynomial", 5, sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ValueError, match="rho"):
        get_schedule("polynomial", 5, rho=-1.0)
    with pytest.raises(ValueError, match="covers sigma"):
        get_schedule("discrete", 5, 0.002, 80.0)
    with pytest.raises(ValueError, match="M"):
        refine_schedule("polynomial", 5, -1)
