"""Uncertainty of a Frechet distance: bootstrap intervals, paired comparisons, and the noise floor.

A reported FD/FID is an estimate from N evaluated samples (and, for AMED, from one trained
predictor). This module puts numbers on both sources of noise:

* ``fd_bootstrap``: resample the N evaluated samples with replacement (the reference statistics stay
  fixed) and recompute the FD. Two intervals come from the replicates:
  - of a value, ``normal_interval``: FD +- z sd(replicates), where the FD at this N falls for other sets of
    N evaluated samples (its finite-N bias kept, like the value's and the noise floor's; checked against
    the Monte-Carlo mean of the estimator in ``tests/test_uncertainty.py``);
  - of a difference or of the population FD, ``basic_interval`` (reverse percentile,
    [2 FD - q_hi, 2 FD - q_lo]): FD is biased upwards at finite N and a replicate about as much again,
    so the plain percentile interval sits too high; the basic interval corrects that to first order
    (coverage checked on a Gaussian case whose FD is known in closed form).
* Replicate b of every cell is drawn from ``(boot_seed, b)`` alone, so two cells evaluated on the same
  seeds (same N) resample the *same* samples: ``compare`` takes differences replicate by replicate
  (a paired bootstrap, where most of the sampling noise cancels) and, with several training seeds per
  method, also resamples the training seeds (a two-level bootstrap).
* ``noise_floor``: the FD of N real images against the full reference (what a perfect sampler would
  score at this N).

The FD here is computed from eigenvalues, FD = |mu - mu_r|^2 + tr S + tr S_r - 2 sum sqrt(eig(A S A))
with A = S_r^(1/2) computed once (eig(A S A) = eig(S S_r), whose square roots sum to tr sqrtm(S S_r)), so
a replicate costs one symmetric eigendecomposition instead of a general matrix square root.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from .errors import AmedValueError

__all__ = ["Reference", "fd_bootstrap", "basic_interval", "normal_interval", "compare", "Comparison", "mean_interval",
           "noise_floor", "verdict", "BOOT_SEED"]

BOOT_SEED = 20240617  # default seed of the replicate draws; cells compared pairwise must share it


class Reference:
    """Reference statistics (mu_r, S_r) prepared for many FD evaluations."""

    def __init__(self, mu, sigma):
        mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
        d = mu.shape[0]
        if mu.ndim != 1 or sigma.shape != (d, d) or not (np.isfinite(mu).all() and np.isfinite(sigma).all()):
            raise AmedValueError(f"reference statistics must be finite, mu [D] and sigma [D, D]; got {mu.shape}, {sigma.shape}")
        self.mu, self.sigma = mu, (sigma + sigma.T) / 2
        w, v = np.linalg.eigh(self.sigma)
        if w.min() < -1e-8 * max(1.0, float(np.abs(w).max())):
            raise AmedValueError(f"reference covariance is not positive semi-definite (smallest eigenvalue {w.min():.3g})")
        self._half = (v * np.sqrt(np.clip(w, 0, None))) @ v.T
        self._trace = float(np.trace(self.sigma))

    @property
    def dim(self) -> int:
        return self.mu.shape[0]

    def fd(self, mu, sigma) -> float:
        """Frechet distance of N(mu, sigma) to the reference."""
        diff = np.asarray(mu, np.float64) - self.mu
        sigma = np.asarray(sigma, np.float64)
        m = self._half @ sigma @ self._half
        ev = np.linalg.eigvalsh((m + m.T) / 2)
        return float(max(diff @ diff + np.trace(sigma) + self._trace - 2 * np.sqrt(np.clip(ev, 0, None)).sum(), 0.0))

    def fd_features(self, features) -> float:
        f = np.asarray(features, np.float64)
        return self.fd(f.mean(0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1]))


def _replicate_counts(n: int, b: int, boot_seed: int) -> np.ndarray:
    """How often each of the n samples appears in replicate b (a function of n, b and the seed only)."""
    idx = np.random.default_rng([int(boot_seed), int(b), int(n)]).integers(0, n, n)
    return np.bincount(idx, minlength=n).astype(np.float64)


def fd_bootstrap(features, ref: Reference, n_boot: int = 1000, boot_seed: int = BOOT_SEED,
                 device=None) -> np.ndarray:
    """FD of ``n_boot`` bootstrap replicates of the evaluated samples' features [N, D] (N >= 2).

    The replicates' covariances and eigenvalues are computed with torch in float64 on ``device`` (default:
    CUDA when available; 2048-d Inception features at N = 50k cost seconds per replicate on a CPU, tens of
    milliseconds on a GPU). The draws themselves depend only on (boot_seed, b, N), whatever the device.
    """
    import torch  # noqa: PLC0415

    f = np.asarray(features, np.float64)
    n, d = f.shape
    if n < 2 or d != ref.dim:
        raise AmedValueError(f"features must be [N >= 2, {ref.dim}], got {f.shape}")
    if n_boot < 1:
        raise AmedValueError(f"n_boot must be >= 1, got {n_boot!r}")
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    pivot = f.mean(0)
    if str(device) == "cpu":  # numpy: far less overhead per small matrix than torch
        c = f - pivot
        out = np.empty(n_boot)
        for b in range(n_boot):
            w = _replicate_counts(n, b, boot_seed)
            m = (w @ c) / n
            out[b] = ref.fd(pivot + m, ((c * w[:, None]).T @ c - n * np.outer(m, m)) / (n - 1))
        return out
    c = torch.from_numpy(f - pivot).to(device)  # centred about the full-sample mean (numerically kinder sums)
    half = torch.from_numpy(ref._half).to(device)
    mu_diff = torch.from_numpy(pivot - ref.mu).to(device)
    out = np.empty(n_boot)
    for b in range(n_boot):
        w = torch.from_numpy(_replicate_counts(n, b, boot_seed)).to(device)
        m = (w @ c) / n
        cov = ((c * w[:, None]).T @ c - n * torch.outer(m, m)) / (n - 1)
        a = half @ cov @ half
        ev = torch.linalg.eigvalsh((a + a.T) / 2).clamp_min(0)
        diff = mu_diff + m
        fd = diff @ diff + torch.trace(cov) + ref._trace - 2 * ev.sqrt().sum()
        out[b] = max(float(fd), 0.0)
    return out


def basic_interval(estimate: float, replicates, level: float = 0.95) -> tuple[float, float]:
    """The basic bootstrap interval [2 est - q_hi, 2 est - q_lo] at ``level``."""
    reps = np.asarray(replicates, np.float64)
    if not np.isfinite(reps).all() or not np.isfinite(estimate):
        raise AmedValueError("bootstrap replicates and the estimate must be finite")
    q_lo, q_hi = np.quantile(reps, [(1 - level) / 2, (1 + level) / 2])
    return float(2 * estimate - q_hi), float(2 * estimate - q_lo)


def normal_interval(estimate: float, replicates, level: float = 0.95) -> tuple[float, float]:
    """estimate +- z * (bootstrap standard deviation): where the metric at this N would fall for other sets of
    evaluated samples (the finite-N bias is kept, as in the estimate itself and in the noise floor)."""
    from statistics import NormalDist  # noqa: PLC0415

    reps = np.asarray(replicates, np.float64)
    if not np.isfinite(reps).all() or not np.isfinite(estimate):
        raise AmedValueError("bootstrap replicates and the estimate must be finite")
    half = NormalDist().inv_cdf((1 + level) / 2) * float(reps.std(ddof=1))
    return float(estimate - half), float(estimate + half)


@dataclass(frozen=True)
class Comparison:
    """A - B over paired bootstrap replicates (and over training seeds when there are several)."""

    difference: float  # mean over A's runs of FD minus mean over B's
    lo: float
    hi: float
    level: float
    wins: int  # pairs (run of A, run of B) where A's FD is lower
    pairs: int


def _run_means(values, reps, n_boot: int, rng) -> np.ndarray:
    """Per replicate b: the mean over a resample (with replacement) of the runs, each at its replicate b."""
    k = values.shape[0]
    pick = rng.integers(0, k, (n_boot, k)) if k > 1 else np.zeros((n_boot, 1), int)
    return reps.T[np.arange(n_boot)[:, None], pick].mean(1)


def _runs(values, reps):
    v = np.atleast_1d(np.asarray(values, np.float64))
    r = np.atleast_2d(np.asarray(reps, np.float64))
    if r.shape[0] != v.shape[0]:
        raise AmedValueError(f"replicates must be [runs, n_boot]: got {r.shape} for {v.shape[0]} runs")
    return v, r


def mean_interval(values, reps, level: float = 0.95, boot_seed: int = BOOT_SEED) -> tuple[float, float]:
    """Normal interval for the mean FD over a method's runs (training seeds) at this N: the spread of the
    two-level bootstrap of ``compare`` (runs resampled, then samples)."""
    v, r = _runs(values, reps)
    means = _run_means(v, r, r.shape[1], np.random.default_rng([int(boot_seed), 2]))
    return normal_interval(float(v.mean()), means, level)


def compare(values_a, reps_a, values_b, reps_b, level: float = 0.95, boot_seed: int = BOOT_SEED) -> Comparison:
    """Difference of mean FD between methods A and B with a two-level bootstrap interval.

    ``values_x``: FD of each run (training seed) of a method, [K]; ``reps_x``: its bootstrap replicates
    [K, n_boot], drawn with the same ``(boot_seed, b)`` for every run (same evaluated samples), so
    replicate b of A and of B saw the same samples. Each replicate also resamples the runs of each method
    (with replacement; a method with one run keeps it): the interval then covers the training noise as
    well as the sampling noise. The interval is the basic bootstrap interval of the difference.
    """
    va, ra = _runs(values_a, reps_a)
    vb, rb = _runs(values_b, reps_b)
    if ra.shape[1] != rb.shape[1]:
        raise AmedValueError(f"A and B need the same number of replicates, got {ra.shape[1]} and {rb.shape[1]}")
    diff = float(va.mean() - vb.mean())
    rng = np.random.default_rng([int(boot_seed), 1])
    d = _run_means(va, ra, ra.shape[1], rng) - _run_means(vb, rb, rb.shape[1], rng)
    lo, hi = basic_interval(diff, d, level)
    wins = int((va[:, None] < vb[None, :]).sum())
    return Comparison(difference=diff, lo=lo, hi=hi, level=level, wins=wins, pairs=va.shape[0] * vb.shape[0])


def verdict(c: Comparison) -> str:
    """The decision rule for a claim "A is better (lower) than B": held if the whole interval of A - B lies
    below 0, not held if it lies above 0, inconclusive if it contains 0."""
    if c.hi < 0:
        return "held"
    if c.lo > 0:
        return "not held"
    return "inconclusive"


def noise_floor(real_features, ref: Reference, n: int, repeats: int = 20, seed: int = 0) -> tuple[float, float]:
    """FD of ``n`` real images drawn without replacement against the reference: (mean, sd) over ``repeats``
    draws. Needs n <= the number of real images."""
    f = np.asarray(real_features, np.float64)
    if not 2 <= n <= f.shape[0]:
        raise AmedValueError(f"the noise floor needs 2 <= n <= {f.shape[0]} real images, got n={n}")
    rng = np.random.default_rng([int(seed), int(n)])
    vals = [ref.fd_features(f[rng.choice(f.shape[0], n, replace=False)]) for _ in range(int(repeats))]
    return float(np.mean(vals)), float(np.std(vals, ddof=1) if len(vals) > 1 else 0.0)
