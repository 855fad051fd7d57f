"""The one Frechet distance of the project and its statistics files.

FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) (Heusel et al. 2017; EDM ``fid.py``: float64,
unbiased covariance, scipy ``sqrtm``, real part). Reference statistics are EDM-format ``.npz`` files
with keys ``mu`` and ``sigma`` (plus, when amed wrote them, ``metric`` and ``detector``).

numpy only; scipy is imported inside ``frechet_distance``, so ``import amed`` never pulls it in.
"""

from __future__ import annotations

import io
import math
import warnings
from pathlib import Path

import numpy as np

from ._io import NpzReader, atomic_write_bytes, write_npy
from .errors import AmedError, AmedValueError

__all__ = ["frechet_distance", "feature_stats", "FeatureMoments", "save_stats", "load_stats", "stats_info",
           "save_features", "PSD_TOL", "STATS_LIMIT"]

STATS_LIMIT = 2 << 30  # bytes per statistics array: sigma of up to 16384-d features in float64
PSD_TOL = 1e-5  # relative: rounding (a float32-stored sigma, a rank-deficient covariance) stays far inside it


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64.

    Both covariances must be finite, symmetric and positive semi-definite (up to ``PSD_TOL``); a
    result that is not a finite number is an error, never returned.
    """
    mu1, mu2 = (np.atleast_1d(_real(m, n)) for m, n in ((mu1, "mu1"), (mu2, "mu2")))
    s1, s2 = (np.atleast_2d(_real(s, n)) for s, n in ((sigma1, "sigma1"), (sigma2, "sigma2")))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise AmedValueError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, sigma2 {s2.shape}")
    _check(mu1, s1, "mu1/sigma1")
    _check(mu2, s2, "mu2/sigma2")
    diff = mu1 - mu2
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Near-singular product: regularise both covariances slightly (as pytorch-fid does).
        offset = np.eye(d) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    value = float(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean))
    if not math.isfinite(value):
        raise AmedValueError(f"the Frechet distance of these statistics is not a finite number (got {value}); "
                             f"check the features and the reference statistics")
    return max(value, 0.0)


def _real(a, name: str) -> np.ndarray:
    a = np.asarray(a)
    if a.dtype.kind not in "fiu":
        raise AmedValueError(f"{name} must be real numbers, got dtype {a.dtype}")
    return a.astype(np.float64)


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy.linalg.sqrtm without its singular-matrix warnings (the caller checks finiteness)."""
    import scipy.linalg

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return scipy.linalg.sqrtm(a)


def feature_stats(features) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of features [N, D] in float64; sigma is the unbiased covariance (needs N >= 2)."""
    if hasattr(features, "detach"):
        features = features.detach().cpu().numpy()
    f = np.asarray(features, dtype=np.float64)
    if f.ndim != 2 or f.shape[0] < 2:
        raise AmedValueError(f"features must be [N >= 2, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


class FeatureMoments:
    """Streaming float64 mean and unbiased covariance of feature batches (EDM's sums, shifted by a pivot).

    Sums are taken about the first batch's mean, which keeps sum(f f^T) - n mu mu^T from cancelling.
    """

    def __init__(self):
        self.n = 0
        self._pivot = self._s = self._ss = None

    def add(self, features) -> None:
        f = np.asarray(features, dtype=np.float64)
        if f.ndim != 2 or f.shape[0] == 0:
            raise AmedValueError(f"features must be [N >= 1, D], got shape {f.shape}")
        if self._pivot is None:
            self._pivot = f.mean(axis=0)
            self._s, self._ss = np.zeros(f.shape[1]), np.zeros((f.shape[1], f.shape[1]))
        elif f.shape[1] != self._pivot.shape[0]:
            raise AmedValueError(f"feature dimension changed from {self._pivot.shape[0]} to {f.shape[1]}")
        c = f - self._pivot
        self._s += c.sum(axis=0)
        self._ss += c.T @ c
        self.n += f.shape[0]

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """(mu, sigma); sigma is the unbiased covariance (needs N >= 2)."""
        if self.n < 2:
            raise AmedValueError(f"statistics need at least 2 feature vectors, got {self.n}")
        m = self._s / self.n
        return self._pivot + m, (self._ss - self.n * np.outer(m, m)) / (self.n - 1)


def save_stats(path: str | Path, mu, sigma, **extra) -> Path:
    """Write EDM-format reference stats (``mu``, ``sigma`` + optional metadata arrays) atomically."""
    mu, sigma = np.asarray(mu, np.float64), np.asarray(sigma, np.float64)
    _check(mu, sigma, str(path))
    path = Path(path)
    buf = io.BytesIO()
    np.savez(buf, mu=mu, sigma=sigma, **{k: np.asarray(v) for k, v in extra.items()})
    atomic_write_bytes(path, buf.getvalue())
    return path


def load_stats(path: str | Path) -> tuple[np.ndarray, np.ndarray]:
    """Read (mu, sigma) from an EDM-format ``.npz``; rejects missing keys and inconsistent shapes."""
    try:
        z = NpzReader(path, "reference stats")
    except AmedError as e:
        raise AmedValueError(f"cannot read reference stats {str(path)!r}: {e}") from None
    with z:
        missing = [k for k in ("mu", "sigma") if k not in z]
        if missing:
            raise AmedValueError(f"reference stats {str(path)!r} lack key(s) {missing}; found {z.keys}")
        mu, sigma = (z.read(k, limit=STATS_LIMIT) for k in ("mu", "sigma"))
    for name, a in (("mu", mu), ("sigma", sigma)):
        if a.dtype.kind not in "fiu":
            raise AmedValueError(f"reference stats {str(path)!r}: {name} is {a.dtype}, not real numbers")
    mu, sigma = mu.astype(np.float64), sigma.astype(np.float64)
    _check(mu, sigma, str(path))
    return mu, sigma


def save_features(path: str | Path, features) -> Path:
    """Write a per-image feature matrix as float64 [N, D] ``.npy``, rows in input order (atomically)."""
    write_npy(path, np.asarray(features).astype(np.float64, copy=False))
    return Path(path)


def stats_info(path: str | Path) -> dict:
    """The scalar metadata of a statistics file (e.g. ``metric``, ``detector``, ``count``); {} for plain EDM files."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k].item() for k in z.files if k not in ("mu", "sigma") and z[k].ndim == 0}
    except Exception as e:
        raise AmedValueError(f"cannot read reference stats {str(path)!r}: {type(e).__name__}: {e}") from None


def _check(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    """Gaussian statistics: mu [D] and sigma [D, D], finite, sigma symmetric positive semi-definite
    (asymmetry and negative eigenvalues at most PSD_TOL x the largest absolute entry / eigenvalue)."""
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise AmedValueError(f"stats {where!r}: need mu [D] and sigma [D, D], got mu {mu.shape} and sigma {sigma.shape}")
    for name, a in (("mu", mu), ("sigma", sigma)):
        bad = np.flatnonzero(~np.isfinite(a))
        if bad.size:
            idx = np.unravel_index(bad[0], a.shape)
            raise AmedValueError(f"stats {where!r}: {name} has {bad.size} non-finite entries, e.g. "
                                 f"{name}{list(map(int, idx))} = {a[idx]}")
    if not sigma.size:
        return
    scale = float(np.abs(sigma).max())
    asym = float(np.abs(sigma - sigma.T).max())
    if asym > PSD_TOL * scale:
        raise AmedValueError(f"stats {where!r}: sigma is not symmetric (max |sigma - sigma^T| = {asym:.3g}, "
                             f"largest entry {scale:.3g})")
    eig = np.linalg.eigvalsh((sigma + sigma.T) / 2)
    if eig[0] < -PSD_TOL * max(float(np.abs(eig).max()), 0.0):
        raise AmedValueError(f"stats {where!r}: sigma is not positive semi-definite (eigenvalue {eig[0]:.4g}; "
                             f"largest {eig[-1]:.4g}); a covariance matrix has none below zero")
