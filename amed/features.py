"""Offline feature network for the embedded data set, and the metric built on it.

The metric is **FD-digits**: the Frechet distance between Gaussians fitted to the 64-d penultimate
features of a small digit classifier (``DigitClassifier``, trained by ``amed.models.train_embedded`` on
a held-out split of sklearn's digits, shipped in ``amed/assets``). It plays the role FID plays for image
models, but it is NOT Inception FID and its values are not comparable to FID numbers.
"""

from __future__ import annotations

import hashlib
from functools import lru_cache
from pathlib import Path

import torch

from .errors import AmedFileNotFoundError, AmedValueError

__all__ = ["METRIC_NAME", "FEATURE_NET", "DigitClassifier", "load_feature_net", "digit_features", "fd_digits"]

METRIC_NAME = "FD-digits"
FEATURE_NET = "digits-8-features"


class DigitClassifier(torch.nn.Module):
    """Small CNN for 8x8 digits; ``features`` is the 64-d penultimate layer used for FD-digits."""

    def __init__(self, width: int = 32, feat_dim: int = 64):
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
            nn.Conv2d(width, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 4x4
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),  # 2x2
            nn.Flatten(), nn.Linear(8 * width, feat_dim), nn.ReLU(),
        )
        self.head = nn.Linear(feat_dim, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


@lru_cache(maxsize=4)
def _load(directory: str | None) -> torch.nn.Module:
    from ._io import ASSETS, load_safetensors, read_json_object, read_safetensors

    d = Path(directory) if directory is not None else ASSETS
    wpath, rpath = d / f"{FEATURE_NET}.safetensors", d / f"{FEATURE_NET}.json"
    if not wpath.is_file() or not rpath.is_file():
        raise AmedFileNotFoundError(f"feature network {FEATURE_NET!r} is not installed: expected {wpath} and {rpath}")
    record = read_json_object(rpath, "feature network record")
    blob, _ = read_safetensors(wpath, "feature network weights")
    actual = hashlib.sha256(blob).hexdigest()
    if actual != record.get("sha256"):
        raise AmedValueError(f"sha256 mismatch for {wpath}: record says {record.get('sha256')}, file has {actual}")
    net = DigitClassifier(feat_dim=record.get("feature_dim", 64))
    net.load_state_dict(load_safetensors(blob, str(wpath)))
    return net.eval().requires_grad_(False)


def load_feature_net(directory: str | Path | None = None) -> torch.nn.Module:
    """The FD-digits classifier (sha256-verified, cached)."""
    return _load(None if directory is None else str(directory))


def digit_features(images: torch.Tensor, batch: int = 1024, directory: str | Path | None = None) -> torch.Tensor:
    """64-d penultimate features of images [N, 1, 8, 8] in [-1, 1] (clamped), float32 on CPU."""
    if images.ndim != 4 or tuple(images.shape[1:]) != (1, 8, 8):
        raise AmedValueError(f"digit_features expects images of shape [N, 1, 8, 8], got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise AmedValueError(f"digit_features expects float images in [-1, 1], got dtype {images.dtype} "
                             f"(uint8 pixels p map to p / 127.5 - 1)")
    if images.numel() and not bool(torch.isfinite(images).all()):
        raise AmedValueError("digit_features: the images hold NaN or infinite values")
    net = load_feature_net(directory)
    x = images.detach().float().cpu().clamp(-1, 1)
    with torch.no_grad():
        return torch.cat([net.features(x[i:i + batch]) for i in range(0, len(x), batch)])


def fd_digits(images_a: torch.Tensor, images_b: torch.Tensor) -> float:
    """FD-digits between two image sets [N, 1, 8, 8] in [-1, 1]."""
    from .frechet import feature_stats, frechet_distance

    return frechet_distance(*feature_stats(digit_features(images_a)), *feature_stats(digit_features(images_b)))
