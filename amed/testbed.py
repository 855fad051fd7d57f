"""Denoisers with known answers: the exact test bed for solvers, AMED training and workflow checks.

* ``GaussianData``: data ~ N(mu, diag(s^2)); D is linear and the PF-ODE has the closed-form
  solution x(t) = mu + (x_T - mu) sqrt((s^2 + t^2) / (s^2 + T^2)).
* ``GaussianMixture``: isotropic components; D is the exact posterior mean.
* ``EmpiricalData``: the optimal denoiser of a finite data set (a mixture of zero-width components).

Each is a callable ``denoise(x, sigma)`` with sigma a [B] tensor; all arithmetic in x's dtype.
"""

from __future__ import annotations

import math

import torch

from .errors import AmedValueError

__all__ = ["GaussianData", "GaussianMixture", "EmpiricalData", "reference_solution"]

Tensor = torch.Tensor


def _col(sigma: Tensor, x: Tensor) -> Tensor:
    return torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, *([1] * (x.ndim - 1)))


class GaussianData:
    """x0 ~ N(mean, diag(std^2)) over tensors of a fixed shape."""

    def __init__(self, mean: Tensor, std: Tensor):
        self.mean = torch.as_tensor(mean)
        self.std = torch.as_tensor(std).expand_as(self.mean)
        if bool((self.std <= 0).any()):
            raise AmedValueError("GaussianData: every std must be positive")

    @classmethod
    def random(cls, shape, seed: int = 0, dtype=torch.float64) -> "GaussianData":
        g = torch.Generator().manual_seed(seed)
        mean = 0.5 * torch.randn(tuple(shape), generator=g, dtype=dtype)
        std = 0.05 + 0.5 * torch.rand(tuple(shape), generator=g, dtype=dtype)
        return cls(mean, std)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        s2 = self.std.to(x) ** 2
        t2 = _col(sigma, x) ** 2
        return (s2 * x + t2 * self.mean.to(x)) / (s2 + t2)

    def solution(self, x_start: Tensor, t_start: float, t_end) -> Tensor:
        """Exact PF-ODE flow of x_start from time t_start to t_end (scalar or [B])."""
        s2 = self.std.to(x_start) ** 2
        te = _col(torch.as_tensor(t_end, dtype=x_start.dtype).expand(x_start.shape[0]), x_start)
        return self.mean.to(x_start) + (x_start - self.mean.to(x_start)) * torch.sqrt((s2 + te**2) / (s2 + t_start**2))

    def sample(self, n: int, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        z = torch.randn((n, *self.mean.shape), generator=g, dtype=self.mean.dtype)
        return self.mean + self.std * z


class GaussianMixture:
    """x0 ~ sum_k w_k N(means[k], stds[k]^2 I); the exact posterior-mean denoiser."""

    def __init__(self, means: Tensor, stds, weights=None):
        self.means = torch.as_tensor(means)  # [K, *shape]
        K = self.means.shape[0]
        self.stds = torch.as_tensor(stds, dtype=self.means.dtype).expand(K).clone()
        w = torch.full((K,), 1.0 / K, dtype=self.means.dtype) if weights is None else torch.as_tensor(weights, dtype=self.means.dtype)
        if w.shape != (K,) or bool((w <= 0).any()):
            raise AmedValueError("GaussianMixture: weights must be K positive numbers")
        self.log_w = torch.log(w / w.sum())

    @classmethod
    def random(cls, shape, components: int = 4, seed: int = 0, spread: float = 1.0, std: float = 0.15,
               dtype=torch.float64) -> "GaussianMixture":
        g = torch.Generator().manual_seed(seed)
        means = spread * torch.randn((components, *shape), generator=g, dtype=dtype) / math.sqrt(max(1, math.prod(shape)) / 4)
        means = means.clamp(-1, 1)
        stds = std * (0.5 + torch.rand(components, generator=g, dtype=dtype))
        return cls(means, stds)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        B = x.shape[0]
        flat = x.reshape(B, -1)
        mu = self.means.to(x).reshape(self.means.shape[0], -1)  # [K, D]
        s2 = self.stds.to(x) ** 2  # [K]
        t2 = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(B, 1) ** 2  # [B, 1]
        var = s2[None, :] + t2  # [B, K]
        dim = flat.shape[1]
        sq = torch.cdist(flat, mu, compute_mode="donot_use_mm_for_euclid_dist") ** 2  # [B, K]
        logits = self.log_w.to(x)[None, :] - 0.5 * sq / var - 0.5 * dim * torch.log(var)
        resp = torch.softmax(logits, dim=1)  # [B, K]
        # E[x0 | x, k] = (s_k^2 x + t^2 mu_k) / (s_k^2 + t^2)
        a = (resp * s2[None, :] / var).sum(1, keepdim=True)  # weight on x
        b = (resp * t2 / var) @ mu  # [B, D]
        return (a * flat + b).reshape_as(x)

    def sample(self, n: int, seed: int = 0) -> Tensor:
        g = torch.Generator().manual_seed(seed)
        k = torch.multinomial(self.log_w.exp(), n, replacement=True, generator=g)
        z = torch.randn((n, *self.means.shape[1:]), generator=g, dtype=self.means.dtype)
        return self.means[k] + self.stds[k].reshape(-1, *([1] * (z.ndim - 1))) * z


class EmpiricalData(GaussianMixture):
    """The optimal denoiser of a finite data set: softmax(-|x - y_i|^2 / 2t^2) weights over the data."""

    def __init__(self, data: Tensor):
        data = torch.as_tensor(data)
        self.means = data
        self.stds = torch.zeros(data.shape[0], dtype=data.dtype)
        self.log_w = torch.full((data.shape[0],), -math.log(data.shape[0]), dtype=data.dtype)

    def __call__(self, x: Tensor, sigma: Tensor) -> Tensor:
        B = x.shape[0]
        flat = x.reshape(B, -1)
        mu = self.means.to(x).reshape(self.means.shape[0], -1)
        t2 = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(B, 1) ** 2
        resp = torch.softmax(-0.5 * torch.cdist(flat, mu, compute_mode="donot_use_mm_for_euclid_dist") ** 2 / t2, dim=1)
        return (resp @ mu).reshape_as(x)


@torch.no_grad()
def reference_solution(denoise, x_start: Tensor, t_start: float, t_end: float, steps: int = 512) -> Tensor:
    """A high-accuracy PF-ODE solution: classical RK4 uniform in log t (for test beds without a closed form)."""
    x = x_start
    B = x.shape[0]
    ls = torch.linspace(math.log(t_start), math.log(t_end), steps + 1, dtype=torch.float64)

    def f(x, log_t):  # dx/dlog t = t d = x - D
        t = torch.full((B,), math.exp(log_t), dtype=x.dtype, device=x.device)
        return x - denoise(x, t)

    for i in range(steps):
        a, b = float(ls[i]), float(ls[i + 1])
        h = b - a
        k1 = f(x, a)
        k2 = f(x + 0.5 * h * k1, a + 0.5 * h)
        k3 = f(x + 0.5 * h * k2, a + 0.5 * h)
        k4 = f(x + h * k3, b)
        x = x + h / 6.0 * (k1 + 2 * k2 + 2 * k3 + k4)
    return x
