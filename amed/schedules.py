"""Time schedules t_0 = sigma_max > ... > t_{N-1} = sigma_min in the EDM parameterisation (sigma = t).

Every family is uniform in a coordinate of its own (t^(1/rho), log t, VP time tau^(1/rho), DDPM tau),
so a teacher grid with M points inserted per interval, uniformly in that coordinate, is the same
family with (M+1)(N-1)+1 points and contains the student grid at indices (M+1)*n (paper Eq. 13).
All schedules return float64 tensors.
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch

from .errors import AmedTypeError, AmedValueError

__all__ = ["SCHEDULES", "get_schedule", "default_rho", "schedule_options", "refine_schedule", "teacher_indices", "explicit_grid",
           "DiscreteVP"]

_F64 = torch.float64


def _u(num_points: int) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, num_points, dtype=_F64)


def polynomial(num_points: int, sigma_min: float, sigma_max: float, rho: float = 7.0, **_) -> torch.Tensor:
    """EDM polynomial schedule, uniform in t^(1/rho) (paper Eq. 10; Karras et al. Eq. 5)."""
    u = _u(num_points)
    a, b = sigma_max ** (1.0 / rho), sigma_min ** (1.0 / rho)
    return (a + u * (b - a)) ** rho


def logsnr(num_points: int, sigma_min: float, sigma_max: float, **_) -> torch.Tensor:
    """Uniform in lambda = -log t, the rho -> infinity limit of the polynomial schedule (Sec. 3.3)."""
    u = _u(num_points)
    return torch.exp(math.log(sigma_max) + u * (math.log(sigma_min) - math.log(sigma_max)))


_EPS_S = 1e-3  # VP-SDE time of sigma_min (DPM-Solver / DDPM convention).


def _vp_betas(sigma_min: float, sigma_max: float, eps_s: float = _EPS_S) -> tuple[float, float]:
    """beta_d, beta_min of the VP-SDE whose sigma(1) = sigma_max and sigma(eps_s) = sigma_min."""
    beta_d = 2.0 * (math.log(sigma_min**2 + 1.0) / eps_s - math.log(sigma_max**2 + 1.0)) / (eps_s - 1.0)
    beta_min = math.log(sigma_max**2 + 1.0) - 0.5 * beta_d
    return beta_d, beta_min


def time_uniform(num_points: int, sigma_min: float, sigma_max: float, rho: float = 1.0, **_) -> torch.Tensor:
    """Uniform in VP time tau^(1/rho), sigma(tau) = sqrt(exp(beta_d tau^2 / 2 + beta_min tau) - 1) (DDPM-style)."""
    beta_d, beta_min = _vp_betas(sigma_min, sigma_max)
    u = _u(num_points)
    tau = (1.0 + u * (_EPS_S ** (1.0 / rho) - 1.0)) ** rho
    return torch.sqrt(torch.expm1(0.5 * beta_d * tau**2 + beta_min * tau))


def time_quadratic(num_points: int, sigma_min: float, sigma_max: float, **_) -> torch.Tensor:
    """Uniform in sqrt(VP time) (DPM-Solver's 'time_quadratic'): time_uniform with rho = 2."""
    return time_uniform(num_points, sigma_min, sigma_max, rho=2.0)


class DiscreteVP:
    """sigma <-> continuous time of a discrete DDPM alpha-bar table (DPM-Solver's NoiseScheduleVP 'discrete').

    t_i = (i+1)/T for table index i; log alpha(t) = 0.5 log alphabar is interpolated linearly in t.
    """

    def __init__(self, alphas_cumprod: torch.Tensor):
        ab = torch.as_tensor(alphas_cumprod, dtype=_F64)
        if ab.ndim != 1 or ab.numel() < 2 or not bool(((ab > 0) & (ab < 1)).all()):
            raise AmedValueError("alphas_cumprod must be a 1-D table of values in (0, 1)")
        self.t_array = torch.linspace(0.0, 1.0, ab.numel() + 1, dtype=_F64)[1:]
        self.log_alpha = 0.5 * torch.log(ab)

    @classmethod
    def scaled_linear(cls, beta_start: float = 0.00085, beta_end: float = 0.012, steps: int = 1000) -> "DiscreteVP":
        """beta linear in sqrt (LDM's "linear"): SD 0.00085 -> 0.012; LSUN Bedroom LDM 0.0015 -> 0.0195."""
        betas = torch.linspace(beta_start**0.5, beta_end**0.5, steps, dtype=_F64) ** 2
        return cls(torch.cumprod(1.0 - betas, 0))

    def sigma(self, t: torch.Tensor) -> torch.Tensor:
        la = _interp(torch.as_tensor(t, dtype=_F64), self.t_array, self.log_alpha)
        return torch.sqrt(torch.expm1(-2.0 * la))

    def sigma_inv(self, sigma: torch.Tensor) -> torch.Tensor:
        la = -0.5 * torch.log1p(torch.as_tensor(sigma, dtype=_F64) ** 2)
        # log_alpha decreases with t: interpolate on the reversed (increasing) table.
        return _interp(la, self.log_alpha.flip(0), self.t_array.flip(0))

    @property
    def sigma_min(self) -> float:
        return float(self.sigma(self.t_array[0]))

    @property
    def sigma_max(self) -> float:
        return float(self.sigma(self.t_array[-1]))


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation with linear extrapolation (xp increasing)."""
    idx = torch.searchsorted(xp, x.clamp(xp[0], xp[-1])).clamp(1, xp.numel() - 1)
    x0, x1, f0, f1 = xp[idx - 1], xp[idx], fp[idx - 1], fp[idx]
    return f0 + (x - x0) * (f1 - f0) / (x1 - x0)


def discrete(num_points: int, sigma_min: float, sigma_max: float, rho: float = 1.0,
             table: DiscreteVP | None = None, **_) -> torch.Tensor:
    """Uniform in DDPM time tau^(1/rho) of a discrete alpha-bar table (latent models; default SD's table).

    The authors' code omits the 1/rho power on tau_max, which only matters for rho != 1 (never used);
    this is the exact formula, identical at rho = 1.
    """
    table = table or DiscreteVP.scaled_linear()
    lo, hi = table.sigma_min, table.sigma_max
    if sigma_min < lo * (1 - 1e-4) or sigma_max > hi * (1 + 1e-4):
        raise AmedValueError(f"the discrete schedule's table covers sigma in [{lo:.6g}, {hi:.6g}]; "
                         f"got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    tau_max = float(table.sigma_inv(torch.tensor(sigma_max, dtype=_F64)))
    tau_min = float(table.sigma_inv(torch.tensor(sigma_min, dtype=_F64)))
    u = _u(num_points)
    tau = (tau_max ** (1.0 / rho) + u * (tau_min ** (1.0 / rho) - tau_max ** (1.0 / rho))) ** rho
    return table.sigma(tau)


SCHEDULES: dict[str, Callable[..., torch.Tensor]] = {
    "polynomial": polynomial,
    "logsnr": logsnr,
    "time_uniform": time_uniform,
    "time_quadratic": time_quadratic,
    "discrete": discrete,
}


_COMMON = ("num_points", "sigma_min", "sigma_max", "rho")


def schedule_options(name: str) -> list[str]:
    """The keywords schedule ``name`` takes beyond (num_points, sigma_min, sigma_max, rho), e.g. discrete's table."""
    if name not in SCHEDULES:
        raise AmedValueError(f"unknown schedule {name!r}; choose one of {sorted(SCHEDULES)}")
    params = inspect.signature(SCHEDULES[name]).parameters.values()
    return sorted(p.name for p in params if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
                  and p.name not in _COMMON)


def default_rho(name: str) -> float | None:
    """The rho a schedule uses when none is given: its own default (polynomial 7, time_uniform and discrete 1),
    None for the families without one (logsnr, time_quadratic) and for names that are no registered schedule
    ("explicit"; get_schedule names an unknown one). Records store it resolved."""
    if name not in SCHEDULES:
        return None
    p = inspect.signature(SCHEDULES[name]).parameters.get("rho")
    return None if p is None else float(p.default)


def get_schedule(name: str, num_points: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                 rho: float | None = None, **kwargs) -> torch.Tensor:
    """The N-point time grid of schedule ``name``, descending from sigma_max to sigma_min (float64)."""
    unknown = sorted(set(kwargs) - set(schedule_options(name)))
    if unknown:
        takes = schedule_options(name)
        raise AmedTypeError(f"schedule {name!r} got unexpected keyword argument(s) {unknown}; it takes "
                            f"{takes if takes else 'none beyond num_points, sigma_min, sigma_max and rho'}")
    if int(num_points) != num_points or num_points < 2:
        raise AmedValueError(f"a schedule needs at least 2 time points, got {num_points!r}")
    if not (0.0 < sigma_min < sigma_max) or not math.isfinite(sigma_max):
        raise AmedValueError(f"need 0 < sigma_min < sigma_max < inf, got sigma_min={sigma_min!r}, sigma_max={sigma_max!r}")
    if rho is not None:
        if not rho > 0:
            raise AmedValueError(f"rho must be positive, got {rho!r}")
        kwargs["rho"] = rho
    t = SCHEDULES[name](int(num_points), float(sigma_min), float(sigma_max), **kwargs)
    # Pin the end points exactly (the families reach them only up to rounding).
    t[0], t[-1] = float(sigma_max), float(sigma_min)
    return t


def explicit_grid(values, what: str = "an explicit time grid") -> torch.Tensor:
    """A given list of times as a float64 tensor, checked: at least 2 points, finite, positive, strictly decreasing."""
    try:
        grid = torch.as_tensor(values, dtype=_F64).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise AmedValueError(f"{what} must be a list of numbers, got {values!r}") from None
    vals = grid.tolist()
    if grid.numel() < 2:
        raise AmedValueError(f"{what} needs at least 2 time points, got {vals}")
    if not bool(torch.isfinite(grid).all()) or not bool((grid > 0).all()):
        raise AmedValueError(f"{what} must be finite and positive, got {vals}")
    if not bool((grid[1:] < grid[:-1]).all()):
        raise AmedValueError(f"{what} must be positive and strictly decreasing, got {vals}")
    return grid


def refine_schedule(name_or_grid, num_points: int, M: int, sigma_min: float = 0.002, sigma_max: float = 80.0,
                    rho: float | None = None, **kwargs) -> torch.Tensor:
    """Teacher grid: M points inserted per student interval uniformly in the family's coordinate (Eq. 13).

    For an explicit grid (a tensor) the points are inserted uniformly in log t, the coordinate of AMED's
    geometric mid-points; the student points themselves are copied, not recomputed, so they sit exactly
    at teacher index (M+1)*n (see ``teacher_indices``).
    """
    if int(M) != M or M < 0:
        raise AmedValueError(f"M (points inserted per interval) must be a non-negative integer, got {M!r}")
    if isinstance(name_or_grid, str):
        n_tea = (M + 1) * (num_points - 1) + 1
        return get_schedule(name_or_grid, n_tea, sigma_min, sigma_max, rho, **kwargs)
    grid = explicit_grid(name_or_grid)
    logt = torch.log(grid)
    w = torch.arange(M + 1, dtype=_F64) / (M + 1)
    inner = torch.exp(logt[:-1, None] + w[None, :] * (logt[1:, None] - logt[:-1, None]))
    inner[:, 0] = grid[:-1]  # exp(log t) can be one ulp off t
    return torch.cat([inner.reshape(-1), grid[-1:]])


def teacher_indices(num_points: int, M: int) -> torch.Tensor:
    """Indices of the student points 0..N-1 inside the refined teacher grid."""
    return torch.arange(num_points) * (M + 1)
