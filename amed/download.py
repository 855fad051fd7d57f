"""Downloads with an atomic, hash-verified cache, and the offline switch (``$AMED_OFFLINE``).

``fetch`` streams to a temporary file inside the cache directory and renames it into place only when
the body is complete (Content-Length matched) and its sha256 agrees with what is expected. The sha256
of the first download is recorded in a ``<file>.sha256`` sidecar and checked on every later use; a
user-pinned ``sha256`` overrides the record. Nothing a later run would trust is left behind by a
failed or interrupted download: partial files carry a ``.part`` suffix and are removed on error.

Below every module that downloads (the model registry, the Inception weights, the COCO images), so none
of them reaches into another's package for it; ``amed.models.download`` re-exports it under its old name.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

from ._io import atomic_write_bytes, read_regular_text, sha256_file
from .errors import AmedError, AmedValueError

__all__ = ["DownloadError", "fetch", "default_cache_dir", "cached_path", "sha256_file", "read_sidecar", "is_offline",
           "show_license"]

_CHUNK = 1 << 20
_LICENSES_SHOWN: set[str] = set()


class DownloadError(AmedError, RuntimeError):
    """A download or cache-verification failure; the message names the URL and the cause."""


def default_cache_dir() -> Path:
    """``$AMED_CACHE`` or ``~/.cache/amed``."""
    return Path(os.environ.get("AMED_CACHE") or Path.home() / ".cache" / "amed").expanduser()


def is_offline(offline: bool | None = None) -> bool:
    """``offline`` if given, else whether ``$AMED_OFFLINE`` is set to anything but ``""``, 0, false or no."""
    if offline is not None:
        return bool(offline)
    return any(os.environ.get(v, "0").lower() not in ("", "0", "false", "no") for v in ("AMED_OFFLINE",))


def _filename(url: str) -> str:
    name = Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name:
        raise AmedValueError(f"cannot derive a file name from URL {url!r}; pass filename=")
    return name


def cached_path(url: str, cache_dir=None, filename: str | None = None) -> Path:
    """Where ``fetch`` stores ``url`` (whether or not it is there yet)."""
    return Path(cache_dir or default_cache_dir()) / (filename or _filename(url))


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def read_sidecar(path) -> str | None:
    """The sha256 recorded for a cached file, or None."""
    side = _sidecar(Path(path))
    if not side.exists():
        return None
    text = read_regular_text(side, "checksum sidecar", limit=1 << 16).split()
    return text[0].lower() if text else None


def _write_atomic(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


def _unlink(path) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def show_license(url: str, license: str | None) -> None:
    """Print ``url``'s licence to stderr, once per process and licence."""
    if license and license not in _LICENSES_SHOWN:
        _LICENSES_SHOWN.add(license)
        print(f"[amed] {url} is distributed under: {license}", file=sys.stderr)


def _normalise_sha(sha256: str | None) -> str | None:
    if sha256 is None:
        return None
    sha = sha256.strip().lower()
    if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
        raise AmedValueError(f"sha256 must be 64 hex digits, got {sha256!r}")
    return sha


class _Retryable(Exception):
    pass


def fetch(url: str, cache_dir=None, *, sha256: str | None = None, offline: bool = False, retries: int = 3,
          license: str | None = None, filename: str | None = None, timeout: float = 60.0,
          backoff: float = 1.0, progress: bool = False) -> Path:
    """Return the verified local copy of ``url`` in ``cache_dir``, downloading it if needed."""
    pinned = _normalise_sha(sha256)
    dest = cached_path(url, cache_dir, filename)
    dest.parent.mkdir(parents=True, exist_ok=True)
    show_license(url, license)

    # Cached copy: verify against the pin, else the recorded hash, else record it now.
    if dest.exists():
        actual = sha256_file(dest)
        expected = pinned or read_sidecar(dest)
        if expected is None:
            _write_atomic(_sidecar(dest), f"{actual}  {dest.name}\n")
            return dest
        if actual == expected:
            if pinned and read_sidecar(dest) != pinned:
                _write_atomic(_sidecar(dest), f"{actual}  {dest.name}\n")
            return dest
        what = "pinned" if pinned else f"recorded in {_sidecar(dest).name}"
        if offline:
            raise DownloadError(f"hash mismatch for cached {dest} (from {url}): sha256 {actual}, expected {expected} "
                                f"({what}); delete the file and download it again")
        # Move the untrusted copy aside and download afresh (still verified against `expected`).
        os.replace(dest, dest.with_name(dest.name + ".corrupt"))
        print(f"[amed] cached {dest.name} failed its sha256 check; downloading again", file=sys.stderr)
    elif offline:
        raise DownloadError(f"offline mode: {url} is not in the cache (expected {dest}); run once with network "
                            "access or copy the file there")

    expected = pinned or read_sidecar(dest)
    last: Exception | None = None
    for attempt in range(max(1, retries)):
        if attempt:
            time.sleep(backoff * 2 ** (attempt - 1))
        try:
            digest = _download_once(url, dest, expected, timeout, progress)
        except _Retryable as exc:
            last = exc.args[0]
            continue
        _write_atomic(_sidecar(dest), f"{digest}  {dest.name}\n")
        return dest
    raise DownloadError(f"failed to download {url} after {max(1, retries)} attempts: {last}")


def _download_once(url: str, dest: Path, expected: str | None, timeout: float, progress: bool) -> str:
    """One attempt: stream to ``.part``, check length and hash, rename. Returns the sha256."""
    fd, tmp = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    try:
        h = hashlib.sha256()
        received = 0
        request = urllib.request.Request(url, headers={"User-Agent": "amed-downloader"})
        try:
            with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=timeout) as resp:
                length = resp.headers.get("Content-Length")
                total = int(length) if length and length.isdigit() else None
                shown = 0
                while True:
                    chunk = resp.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    h.update(chunk)
                    received += len(chunk)
                    if progress and total and received - shown >= total // 20:
                        shown = received
                        print(f"\r[amed] {dest.name}: {100 * received // total}%", end="", file=sys.stderr)
                if progress and total:
                    print(file=sys.stderr)
        except urllib.error.HTTPError as exc:
            msg = f"HTTP {exc.code} {exc.reason} for {url}"
            if exc.code >= 500 or exc.code in (408, 429):
                raise _Retryable(DownloadError(msg)) from None
            raise DownloadError(msg) from None
        except http.client.IncompleteRead as exc:
            raise _Retryable(DownloadError(f"truncated download of {url}: connection closed after "
                                           f"{received + len(exc.partial)} bytes")) from None
        except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
            raise _Retryable(DownloadError(f"network error fetching {url}: {exc}")) from None
        if total is not None and received != total:
            raise _Retryable(DownloadError(f"truncated download of {url}: got {received} of {total} bytes"))
        digest = h.hexdigest()
        if expected is not None and digest != expected:
            raise DownloadError(f"hash mismatch for {url}: downloaded sha256 {digest}, expected {expected}; "
                                "the file was discarded")
        os.replace(tmp, dest)
        return digest
    finally:
        _unlink(tmp)
