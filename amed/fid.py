"""The one Frechet distance of the project, its statistics files, and the (lazy) Inception path.

FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) (Heusel et al. 2017; EDM ``fid.py``: float64,
unbiased covariance, scipy ``sqrtm``, real part). Reference statistics are EDM-format ``.npz`` files
with keys ``mu`` and ``sigma``. Inception features come from clean-fid in ``legacy_tensorflow`` mode
(the TF-ported Inception-v3 with its internal resize; uint8 images at native resolution), imported
only when asked for; offline without the weights it fails with a one-line error instead of hanging.
scipy and cleanfid are imported inside functions, so ``import amed`` never pulls them in.
"""

from __future__ import annotations

import io
import os
import socket
from pathlib import Path

import numpy as np

from ._io import atomic_write_bytes

__all__ = [
    "frechet_distance",
    "feature_stats",
    "save_stats",
    "load_stats",
    "inception_features",
    "inception_stats",
    "InceptionUnavailable",
]

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE


def frechet_distance(mu1, sigma1, mu2, sigma2, eps: float = 1e-6) -> float:
    """Frechet distance between N(mu1, sigma1) and N(mu2, sigma2), in float64."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    d = mu1.shape[0]
    if mu1.shape != (d,) or mu2.shape != (d,) or s1.shape != (d, d) or s2.shape != (d, d):
        raise ValueError(f"shape mismatch: mu1 {mu1.shape}, sigma1 {s1.shape}, mu2 {mu2.shape}, sigma2 {s2.shape}")
    diff = mu1 - mu2
    covmean = _sqrtm(s1 @ s2)
    if not np.isfinite(covmean).all():
        # Near-singular product: regularise both covariances slightly (as pytorch-fid does).
        offset = np.eye(d) * eps
        covmean = _sqrtm((s1 + offset) @ (s2 + offset))
    covmean = np.real(covmean)
    return float(max(diff @ diff + np.trace(s1) + np.trace(s2) - 2 * np.trace(covmean), 0.0))


def _sqrtm(a: np.ndarray) -> np.ndarray:
    """scipy.linalg.sqrtm without its singular-matrix warnings (the caller checks finiteness)."""
    import warnings

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
        raise ValueError(f"features must be [N >= 2, D], got shape {f.shape}")
    return f.mean(axis=0), np.cov(f, rowvar=False, ddof=1).reshape(f.shape[1], f.shape[1])


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
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in ("mu", "sigma") if k not in z.files]
            if missing:
                raise ValueError(f"reference stats {str(path)!r} lack key(s) {missing}; found {z.files}")
            mu, sigma = z["mu"].astype(np.float64), z["sigma"].astype(np.float64)
    except Exception as e:
        if isinstance(e, ValueError) and "reference stats" in str(e):
            raise
        raise ValueError(f"cannot read reference stats {str(path)!r}: {type(e).__name__}: {e}") from None
    _check(mu, sigma, str(path))
    return mu, sigma


def _check(mu: np.ndarray, sigma: np.ndarray, where: str) -> None:
    if mu.ndim != 1 or sigma.shape != (mu.shape[0], mu.shape[0]):
        raise ValueError(f"stats {where!r}: need mu [D] and sigma [D, D], got mu {mu.shape} and sigma {sigma.shape}")


# ----------------------------------------------------------------------------------------------
# Inception (clean-fid, legacy_tensorflow), for real image data sets


class InceptionUnavailable(RuntimeError):
    """The Inception weights are missing and cannot be downloaded (offline)."""


def _inception_dir() -> Path:
    """Where clean-fid's TorchScript Inception lives: $AMED_INCEPTION_DIR, else clean-fid's own /tmp."""
    return Path(os.environ.get("AMED_INCEPTION_DIR", "/tmp"))


_MODEL = None


def _inception(timeout: float = 15.0):
    global _MODEL
    if _MODEL is not None:
        return _MODEL
    from . import _tvshim

    _tvshim.apply()
    try:
        from cleanfid.inception_torchscript import InceptionV3W
    except ImportError as e:
        raise InceptionUnavailable(f"clean-fid is not installed (pip install 'amed[fid]'): {e}") from None
    d = _inception_dir()
    target = d / INCEPTION_FILE
    if not target.is_file():
        import urllib.request

        old = socket.getdefaulttimeout()
        socket.setdefaulttimeout(timeout)  # never hang on a silent network
        tmp = target.with_suffix(".part")
        try:
            d.mkdir(parents=True, exist_ok=True)
            with urllib.request.urlopen(INCEPTION_URL, timeout=timeout) as r, open(tmp, "wb") as f:
                f.write(r.read())
            os.replace(tmp, target)
        except Exception as e:
            tmp.unlink(missing_ok=True)
            raise InceptionUnavailable(
                f"Inception weights {INCEPTION_FILE} not found in {d} and download failed "
                f"({type(e).__name__}: {e}); place the file there or set AMED_INCEPTION_DIR") from None
        finally:
            socket.setdefaulttimeout(old)
    _MODEL = InceptionV3W(str(d), download=False, resize_inside=True).eval()
    return _MODEL


def inception_features(images, batch: int = 64) -> np.ndarray:
    """2048-d Inception pool features of uint8 images [N, H, W, 3] or [N, 3, H, W] (EDM convention)."""
    import torch

    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise ValueError(f"inception_features expects uint8 [N, H, W, 3] or [N, 3, H, W], got {x.dtype} {x.shape}")
    if x.shape[1] != 3:
        x = x.transpose(0, 3, 1, 2)
    model = _inception()
    out = []
    with torch.no_grad():
        for i in range(0, len(x), batch):
            out.append(model(torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).float()).numpy())
    return np.concatenate(out).astype(np.float64)


def inception_stats(images, batch: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the Inception features of uint8 images."""
    return feature_stats(inception_features(images, batch=batch))
