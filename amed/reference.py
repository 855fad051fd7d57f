"""Reference statistics: how the file for one reference is made, and which features each metric uses.

A reference (``amed fid-ref --data``, a workflow dataset's ``ref``) is one of

* ``"digits"``: the embedded data set, quantised to uint8 as samples are, through the metric's features:
  ``fd-digits`` (the default; the digit classifier of ``amed.features``) or ``inception-rgb32``;
* ``"coco-val2014"``: Table 3's MS-COCO val2014 Inception statistics (``amed.coco.coco_reference_stats``);
* an EDM-format ``.npz`` (``mu``, ``sigma``): fetched from an ``https://`` URL into the download cache, or a
  local path, checked and copied.

``reference_stats`` is the one place that decides; ``amed fid-ref`` and the workflow's ``fid_ref`` rule call it.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np

from .coco import coco_reference_stats
from .errors import AmedValueError
from .frechet import feature_stats, load_stats, save_features, save_stats
from .inception import inception_features, inception_source, to_rgb32

__all__ = ["METRICS", "INCEPTION_METRICS", "metric_features", "reference_metric", "reference_stats"]

METRICS = ("fd-digits", "inception", "inception-rgb32")
INCEPTION_METRICS = ("inception", "inception-rgb32")
# The image layout (H, W, C) each metric takes from sample files (None: any size; Inception resizes inside).
METRIC_LAYOUT = {"fd-digits": (8, 8, 1), "inception": (None, None, 3), "inception-rgb32": (None, None, None)}


def metric_features(images, metric: str, source: str | None = None) -> np.ndarray:
    """float64 features [N, D] of uint8 NHWC images for ``metric`` (source: the Inception source, if it uses one)."""
    if metric == "fd-digits":
        import torch  # noqa: PLC0415

        from .features import digit_features  # noqa: PLC0415

        x = torch.from_numpy(images).permute(0, 3, 1, 2).float() / 127.5 - 1.0
        return digit_features(x).numpy().astype(np.float64)
    if metric == "inception-rgb32":  # small grayscale data: RGB, 32x32 by pixel replication, then Inception
        images = to_rgb32(images)
    # uint8 at native resolution (e.g. 512x512): Inception resizes inside
    return inception_features(images, source=source)


def _is_npz(ref: str) -> bool:
    return ref.startswith(("https://", "http://")) or ref.endswith(".npz")


def reference_metric(ref: str, metric: str | None = None, *, features_out=None) -> str | None:
    """The metric of ``ref``'s statistics: ``metric`` checked against ``ref``, or its default (digits: fd-digits;
    coco-val2014: inception). An .npz file's metric is whatever made it (``metric`` is returned as given)."""
    if ref == "coco-val2014":
        if metric not in (None, "inception"):
            raise AmedValueError(f"coco-val2014 reference statistics use --metric inception, got --metric {metric}")
    elif ref == "digits":
        metric = metric or "fd-digits"
        if metric not in ("fd-digits", "inception-rgb32"):
            raise AmedValueError(f"digits reference statistics use --metric fd-digits or inception-rgb32, got --metric "
                                 f"{metric}")
        return metric
    elif not _is_npz(ref):
        raise AmedValueError(f"reference statistics exist for 'digits' (fd-digits, inception-rgb32), 'coco-val2014' "
                             f"(inception) and an EDM-format .npz with mu and sigma (an https:// URL or a local path), "
                             f"got {ref!r}")
    if features_out:
        raise AmedValueError(f"--features-out is supported for --data digits, got --data {ref}")
    return "inception" if ref == "coco-val2014" else metric


def reference_stats(ref: str, out, *, metric: str | None = None, source: str | None = None, images=None,
                    captions=None, resolution: int = 256, progress=None, features_out=None) -> Path:
    """Write the reference statistics of ``ref`` (see the module) to ``out``, EDM format; returns its path.

    ``metric``: see ``reference_metric``. ``source``: the Inception source of an Inception metric
    (``amed.inception.inception_source``), recorded as ``detector``. coco-val2014 takes ``images`` (the val2014
    zip or folder), ``captions`` (a CSV whose ``image_id`` column picks the images), ``resolution`` and
    ``progress(n)`` (``amed.coco.coco_reference_stats``); digits takes ``features_out`` (the per-image features,
    float64 [N, D] .npy, in data order).
    """
    metric = reference_metric(ref, metric, features_out=features_out)
    if ref == "coco-val2014":
        return coco_reference_stats(out, resolution, images=images, captions=captions, progress=progress,
                                    source=source)
    if ref == "digits":
        return _digits_stats(out, metric, source, features_out)
    return _copy_npz(ref, out)


def _digits_stats(out, metric: str, source: str | None, features_out) -> Path:
    """The embedded digits' statistics in ``metric``'s features (with the Inception source as ``detector``)."""
    import torch  # noqa: PLC0415

    from .models.base import to_uint8  # noqa: PLC0415
    from .models.train_embedded import load_dataset  # noqa: PLC0415

    source = inception_source(source) if metric in INCEPTION_METRICS else None
    # Quantise the data exactly as samples are (uint8), so both sides see the same pixel grid.
    data = to_uint8(torch.from_numpy(load_dataset("digits"))).numpy()
    feats = metric_features(data, metric, source)
    mu, sigma = feature_stats(feats)
    if features_out:
        save_features(features_out, feats)
    return save_stats(out, mu, sigma, metric=metric, count=len(data),
                      **({"detector": source} if source is not None else {}))


def _copy_npz(ref: str, out) -> Path:
    """An EDM-format .npz from a URL (through the verified download cache) or a local path, checked, then copied."""
    from .download import default_cache_dir, fetch, is_offline  # noqa: PLC0415

    path = fetch(ref, default_cache_dir() / "fid-refs", offline=is_offline()) if "://" in ref else ref
    load_stats(path)  # rejects files without mu/sigma before anything is written
    shutil.copyfile(path, f"{out}.tmp")
    shutil.move(f"{out}.tmp", out)
    return Path(out)
