"""MS-COCO val2014 reference statistics (Table 3).

``coco_reference_stats`` builds Table 3's reference: MS-COCO val2014 images, RGB, centre-cropped to a
square and resized to 256x256 (authors-code.md section 7), through the Inception of ``amed.inception``,
accumulated in float64 and saved as an EDM-format statistics file (``amed.frechet``). The images come
from a local val2014 zip or folder, else the official zip in the download cache.
"""

from __future__ import annotations

import io
import os
from pathlib import Path

import numpy as np

from ._io import MiB, open_regular, open_regular_text, read_regular_bytes
from .errors import AmedValueError
from .frechet import FeatureMoments, save_stats
from .inception import inception_features, inception_source

__all__ = ["coco_image", "coco_reference_stats", "COCO_VAL2014_URL", "COCO_IMAGES_LICENSE"]

COCO_VAL2014_URL = "http://images.cocodataset.org/zips/val2014.zip"
COCO_IMAGES_LICENSE = "MS-COCO images: Flickr terms of use (https://cocodataset.org/#termsofuse)"

_IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")


def coco_image(data, resolution: int = 256) -> np.ndarray:
    """One reference image, as the authors prepared COCO: RGB, centre crop to a square, resize; uint8 [H, W, 3].

    ``data`` is a path, a file object or a PIL image. Any mode is converted to RGB (grayscale is replicated to
    3 channels). The crop is the central min(h, w) square (offsets floor((w - side) / 2), floor((h - side) / 2)).
    The resize uses PIL's BICUBIC filter (antialiased when shrinking, as clean-fid's "clean" resize is); the
    authors' filter is not in their code.
    """
    from PIL import Image

    if isinstance(data, (str, os.PathLike)):  # a user's path: a regular file only, read once
        data = io.BytesIO(read_regular_bytes(data, "image", limit=256 * MiB))
    try:
        img = (data if isinstance(data, Image.Image) else Image.open(data)).convert("RGB")
    except (OSError, ValueError, Image.DecompressionBombError) as e:  # UnidentifiedImageError is an OSError
        raise AmedValueError(f"not a readable image ({' '.join(str(e).split())})") from None
    w, h = img.size
    side = min(w, h)
    left, top = (w - side) // 2, (h - side) // 2
    img = img.crop((left, top, left + side, top + side))
    if img.size != (resolution, resolution):
        img = img.resize((resolution, resolution), Image.BICUBIC)
    return np.asarray(img, dtype=np.uint8)


def _coco_member(read, name: str, resolution: int, src) -> np.ndarray:
    try:
        return coco_image(io.BytesIO(read(name)), resolution)
    except AmedValueError as e:
        raise AmedValueError(f"{str(src)!r}: {name}: {e}") from None


def _coco_source(images) -> Path:
    """The val2014 images: the argument, else $AMED_COCO_VAL2014, else the official zip in the download cache."""
    if images is None:
        images = os.environ.get("AMED_COCO_VAL2014") or None
    if images is not None:
        path = Path(images).expanduser()
        if not path.exists():
            raise AmedValueError(f"MS-COCO val2014 images not found: {str(path)!r} (a val2014 .zip or a folder of JPEGs)")
        return path
    from .download import DownloadError, default_cache_dir, fetch, is_offline

    try:
        return fetch(COCO_VAL2014_URL, default_cache_dir() / "coco", offline=is_offline(), license=COCO_IMAGES_LICENSE,
                     progress=True)
    except DownloadError as e:
        raise AmedValueError(f"{e} (or set AMED_COCO_VAL2014 to a local val2014.zip or folder of JPEGs)") from None


def _wanted_ids(captions) -> list[int] | None:
    """The unique image ids of a captions CSV's ``image_id`` column, in CSV order; None if it has none."""
    import csv

    try:
        with open_regular_text(captions, "captions CSV") as f:
            reader = csv.DictReader(f)
            if reader.fieldnames is None or "image_id" not in reader.fieldnames:
                return None
            ids = {}
            for row in reader:
                try:
                    ids.setdefault(int(float(row["image_id"])), None)
                except (ValueError, OverflowError):
                    raise AmedValueError(f"{captions}: image_id {row['image_id']!r} is not an integer") from None
    except (UnicodeDecodeError, csv.Error) as e:
        raise AmedValueError(f"captions CSV {str(captions)!r} is not a UTF-8 CSV file ({e})") from None
    return list(ids)


def coco_reference_stats(out, resolution: int = 256, *, images=None, captions=None, batch: int = 64,
                         progress=None, source: str | None = None) -> Path:
    """Inception statistics of MS-COCO val2014 images (Table 3's FID reference), saved EDM-style to ``out``.

    Each image goes through ``coco_image`` (RGB, centre crop, PIL bicubic resize to ``resolution``) and the
    clean-fid Inception; features are accumulated in float64, ``batch`` images at a time. ``images`` is the
    val2014 .zip (members read in place) or a folder of its JPEGs; default ``$AMED_COCO_VAL2014``, else the
    official zip downloaded into the cache (refused under AMED_OFFLINE). If ``captions`` (a CSV) has an
    ``image_id`` column, exactly those images are used (``COCO_val2014_{id:012d}.jpg``, CSV order, each id
    once); otherwise every image. ``progress(n)`` is called after each batch with its size. ``source``: the
    Inception source (``inception_source``), recorded in the file as ``detector``.
    """
    import zipfile

    source = inception_source(source)

    if int(resolution) < 1 or int(batch) < 1:
        raise AmedValueError(f"resolution and batch must be >= 1, got {resolution!r} and {batch!r}")
    src = _coco_source(images)
    ids = _wanted_ids(captions) if captions is not None else None
    handle = open_regular(src, "MS-COCO val2014 archive") if src.is_file() else None
    try:
        archive = zipfile.ZipFile(handle) if handle is not None else None
    except zipfile.BadZipFile as e:
        handle.close()
        raise AmedValueError(f"MS-COCO val2014 archive {str(src)!r} is not a zip file ({e})") from None
    try:
        if archive is not None:
            members = {Path(n).name: n for n in archive.namelist() if not n.endswith("/")}
        else:
            members = {p.name: p for p in sorted(src.rglob("*")) if p.is_file()}

        def read(name: str) -> bytes:
            if archive is not None:
                return archive.read(members[name])
            return read_regular_bytes(members[name], "COCO image", limit=256 * MiB)
        if ids is None:
            names = sorted(n for n in members if n.lower().endswith(_IMAGE_SUFFIXES))
        else:
            names = [f"COCO_val2014_{i:012d}.jpg" for i in ids]
            missing = [n for n in names if n not in members]
            if missing:
                raise AmedValueError(f"{len(missing)} of the {len(names)} images named by {str(captions)!r} are not in "
                                 f"{str(src)!r}, e.g. {missing[0]!r}")
        if len(names) < 2:
            raise AmedValueError(f"{str(src)!r} holds {len(names)} usable images; reference statistics need at least 2")
        moments = FeatureMoments()
        for i in range(0, len(names), int(batch)):
            chunk = [_coco_member(read, n, int(resolution), src) for n in names[i:i + int(batch)]]
            moments.add(inception_features(np.stack(chunk), batch=int(batch), source=source))
            if progress is not None:
                progress(len(chunk))
    finally:
        if archive is not None:
            archive.close()
            handle.close()
    mu, sigma = moments.stats()
    return save_stats(out, mu, sigma, resolution=int(resolution), count=moments.n, source=str(src),
                      subset=str(captions) if ids is not None else "all", metric="inception", detector=source)
