"""File helpers shared by every writer and reader: atomic writes (bytes, CSV tables, .npy/.npz arrays), sha256
checksums, and guarded reads.

Every file a user names (models, predictors, statistics, sample shards, captions, records) is opened
through ``open_regular``: only a regular file, after resolving symlinks, is read, so a FIFO never
blocks and a device (``/dev/zero``) is never read until memory runs out. Declared sizes are checked
before anything is read: a safetensors header length against the file, an ``.npy`` member's
shape x itemsize against the archive's size for it; arrays are read whole only under a stated
limit, or streamed row by row.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Iterator, Sequence

from .errors import AmedFileNotFoundError, AmedOSError, AmedValueError

__all__ = ["atomic_write_bytes", "csv_bytes", "write_csv", "write_npy", "write_npz", "sha256_file", "open_regular",
           "read_regular_bytes", "read_regular_text", "open_regular_text", "read_json_object", "read_safetensors",
           "load_safetensors", "NpzReader", "NpyHeader"]

MiB = 1 << 20
ASSETS = Path(__file__).resolve().parent / "assets"  # the weights and records shipped with the package
MAX_ARRAY_BYTES = 1 << 40  # no .npy member of any file this project reads declares more (1 TiB)
MAX_SAFETENSORS_HEADER = 100 * MiB  # the safetensors library's own limit


def _kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a regular file"


def open_regular(path: str | os.PathLike, what: str = "file") -> BinaryIO:
    """Open ``path`` for binary reading if it is a regular file (after symlinks); else a one-line error.

    The type is checked before opening (a device is never opened) and again on the open descriptor
    (a file swapped in between is caught); the open itself never blocks, even on a FIFO.
    """
    path = Path(path)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise AmedFileNotFoundError(f"{what} {str(path)!r} does not exist") from None
    except OSError as e:
        raise AmedOSError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    if not stat.S_ISREG(st.st_mode):
        raise AmedValueError(f"{what} {str(path)!r} is {_kind(st.st_mode)}; give a regular file")
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as e:
        raise AmedOSError(f"cannot read {what} {str(path)!r}: {e.strerror or e}") from None
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        raise AmedValueError(f"{what} {str(path)!r} is {_kind(mode)}; give a regular file")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def open_regular_text(path: str | os.PathLike, what: str = "file") -> io.TextIOWrapper:
    """``open_regular`` as UTF-8 text with universal newlines off (what the csv module wants)."""
    return io.TextIOWrapper(open_regular(path, what), encoding="utf-8", newline="")


def read_regular_bytes(path: str | os.PathLike, what: str = "file", limit: int | None = None) -> bytes:
    """The bytes of a regular file, refusing one larger than ``limit`` before reading it."""
    with open_regular(path, what) as f:
        size = os.fstat(f.fileno()).st_size
        if limit is not None and size > limit:
            raise AmedValueError(f"{what} {str(path)!r} is {size} bytes, more than the {limit} such a file can be")
        data = f.read(size + 1 if limit is None else limit + 1)
    if limit is not None and len(data) > limit:
        raise AmedValueError(f"{what} {str(path)!r} grew past {limit} bytes while it was read")
    return data


def read_regular_text(path: str | os.PathLike, what: str = "file", limit: int | None = 16 * MiB) -> str:
    """A UTF-8 text file (regular, at most ``limit`` bytes)."""
    data = read_regular_bytes(path, what, limit)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise AmedValueError(f"{what} {str(path)!r} is not UTF-8 text ({e.reason} at byte {e.start})") from None


def read_json_object(path: str | os.PathLike, what: str = "record", limit: int = 16 * MiB) -> dict:
    """A JSON file whose top level must be an object."""
    text = read_regular_text(path, what, limit)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise AmedValueError(f"{what} {str(path)!r} is not valid JSON ({e})") from None
    if not isinstance(obj, dict):
        raise AmedValueError(f"{what} {str(path)!r} must hold a JSON object, got {type(obj).__name__}")
    return obj


def read_safetensors(path: str | os.PathLike, what: str = "weights", limit: int = 1 << 30) -> tuple[bytes, dict]:
    """(raw bytes, header) of a safetensors file, its declared header length and tensor extents checked
    against the file's size before the library parses it."""
    blob = read_regular_bytes(path, what, limit)
    where = f"{what} {str(path)!r}"
    if len(blob) < 8:
        raise AmedValueError(f"{where} is not a safetensors file ({len(blob)} bytes)")
    n = int.from_bytes(blob[:8], "little")
    if n > len(blob) - 8 or n > MAX_SAFETENSORS_HEADER:
        raise AmedValueError(f"{where}: corrupt safetensors header (it declares {n} header bytes, the file has "
                             f"{len(blob)} in all)")
    try:
        header = json.loads(blob[8:8 + n])
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AmedValueError(f"{where}: corrupt safetensors header ({e})") from None
    if not isinstance(header, dict):
        raise AmedValueError(f"{where}: corrupt safetensors header (not a JSON object)")
    body = len(blob) - 8 - n
    for name, entry in header.items():
        if name == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(v, str) for v in entry.values()):
                raise AmedValueError(f"{where}: corrupt safetensors metadata (not a string-to-string object)")
            continue
        offs = entry.get("data_offsets") if isinstance(entry, dict) else None
        if (not isinstance(offs, list) or len(offs) != 2 or not all(isinstance(o, int) for o in offs)
                or not 0 <= offs[0] <= offs[1] <= body):
            raise AmedValueError(f"{where}: corrupt safetensors header (tensor {name!r} has data offsets {offs!r}, "
                                 f"the data section has {body} bytes)")
    return blob, header


def load_safetensors(blob: bytes, where: str) -> dict:
    """Tensors of safetensors bytes already checked by ``read_safetensors``."""
    from safetensors import SafetensorError  # noqa: PLC0415
    from safetensors.torch import load  # noqa: PLC0415

    try:
        return load(blob)
    except SafetensorError as e:
        raise AmedValueError(f"{where}: not a readable safetensors file ({e})") from None


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a regular file, read in 1 MiB chunks."""
    h = hashlib.sha256()
    with open_regular(path) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temporary file in the same directory, then rename: readers never see half a file."""
    path = Path(path)
    if path.is_dir():
        raise AmedValueError(f"output {str(path)!r} is a directory; name a file")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        raise AmedOSError(f"cannot write {str(path)!r}: {e.strerror or e}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def csv_bytes(rows: Sequence[dict], fields: Sequence[str] | None = None, lineterminator: str = "\n") -> bytes:
    """``rows`` (dicts) as UTF-8 CSV: a header of ``fields`` (default: the first row's keys), then one line per row."""
    import csv  # noqa: PLC0415

    if not fields and not rows:
        raise AmedValueError("csv_bytes: no rows and no fields, so no header")
    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(fields) if fields else list(rows[0]), lineterminator=lineterminator)
    w.writeheader()
    w.writerows(rows)
    return buf.getvalue().encode()


def write_csv(path: str | os.PathLike, rows: Sequence[dict], fields: Sequence[str] | None = None,
              lineterminator: str = "\n") -> Path:
    """``csv_bytes(rows, fields, lineterminator)`` written atomically to ``path``; no rows is an error."""
    if not rows:
        raise AmedValueError(f"write_csv: no rows to write to {str(path)!r}")
    atomic_write_bytes(path, csv_bytes(rows, fields, lineterminator))
    return Path(path)


def write_npy(path: str | os.PathLike, array) -> None:
    """One array as ``.npy`` (``numpy.save``), written atomically."""
    import numpy as np  # noqa: PLC0415

    buf = io.BytesIO()
    np.save(buf, array)
    atomic_write_bytes(path, buf.getvalue())


def write_npz(path: str | os.PathLike, **arrays) -> None:
    """Named arrays as an uncompressed ``.npz`` (``numpy.savez``), written atomically."""
    import numpy as np  # noqa: PLC0415

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    atomic_write_bytes(path, buf.getvalue())


# ------------------------------------------------------------------------------------------ .npz
@dataclass(frozen=True)
class NpyHeader:
    """What an ``.npy`` member of an archive declares: dtype, shape, and where its data starts."""

    key: str
    dtype: object  # numpy dtype
    shape: tuple
    offset: int  # bytes of magic + header before the data
    info: zipfile.ZipInfo

    @property
    def nbytes(self) -> int:
        return math.prod(self.shape) * self.dtype.itemsize

    @property
    def row_bytes(self) -> int:
        return math.prod(self.shape[1:]) * self.dtype.itemsize


class NpzReader:
    """An ``.npz`` archive read without trusting it: plain arrays only (no pickles), each member's
    declared shape x itemsize checked against the archive's size for it, whole reads under a limit,
    and leading rows streamed without decompressing the rest."""

    def __init__(self, path: str | os.PathLike, what: str = "archive"):
        self.path, self.what = Path(path), what
        self.where = f"{what} {str(self.path)!r}"
        self._file = open_regular(path, what)
        try:
            self.zip = zipfile.ZipFile(self._file)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
            self._file.close()
            raise AmedValueError(f"{self.where} is not an .npz archive ({e})") from None
        self._members = {n[:-4]: n for n in self.zip.namelist() if n.endswith(".npy")}

    def __enter__(self) -> "NpzReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        self.zip.close()
        self._file.close()

    @property
    def keys(self) -> list[str]:
        return sorted(self._members)

    def __contains__(self, key: str) -> bool:
        return key in self._members

    def _open(self, key: str):
        if key not in self._members:
            raise AmedValueError(f"{self.where} has no {key!r} array (it holds {self.keys})")
        try:
            return self.zip.open(self._members[key])
        except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, ValueError) as e:
            raise AmedValueError(f"{self.where}: cannot read member {key!r} ({e})") from None

    def header(self, key: str) -> NpyHeader:
        """The declared dtype and shape of array ``key``, checked against the archive (nothing else is read)."""
        import numpy as np  # noqa: PLC0415

        info = self.zip.getinfo(self._members[key]) if key in self._members else None
        with self._open(key) as f:
            try:
                version = np.lib.format.read_magic(f)
                if version == (1, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
                elif version == (2, 0):
                    shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
                else:
                    raise ValueError(f"unsupported .npy format version {version}")
            except (ValueError, EOFError, zipfile.BadZipFile, OSError) as e:
                raise AmedValueError(f"{self.where}: array {key!r} has no valid .npy header ({e})") from None
            offset = f.tell()
        if dtype.hasobject:
            raise AmedValueError(f"{self.where}: array {key!r} holds Python objects (dtype {dtype}); refusing to unpickle")
        if fortran and len(shape) > 1:
            raise AmedValueError(f"{self.where}: array {key!r} is stored in Fortran order; write it C-ordered")
        h = NpyHeader(key, dtype, tuple(int(s) for s in shape), offset, info)
        if h.nbytes > MAX_ARRAY_BYTES or info.file_size != offset + h.nbytes:
            raise AmedValueError(f"{self.where}: array {key!r} declares shape {h.shape} of {dtype} ({h.nbytes} bytes) "
                                 f"but the archive holds {max(info.file_size - offset, 0)} bytes for it")
        if info.compress_type == zipfile.ZIP_STORED:
            ok = info.compress_size == info.file_size
        elif info.compress_type == zipfile.ZIP_DEFLATED:
            ok = info.file_size <= 1032 * info.compress_size + 4096  # deflate's largest possible ratio
        else:
            ok = False
        if not ok:
            raise AmedValueError(f"{self.where}: array {key!r} claims {info.file_size} bytes from {info.compress_size} "
                                 f"stored (compression {info.compress_type}); not an archive numpy wrote")
        return h

    def read(self, key: str, limit: int = 1 << 30):
        """The whole array ``key``, refused before reading if it declares more than ``limit`` bytes."""
        h = self.header(key)
        if h.nbytes > limit:
            raise AmedValueError(f"{self.where}: array {key!r} declares {h.nbytes} bytes ({h.shape} of {h.dtype}), "
                                 f"more than the {limit} it may have")
        parts = list(self.rows(key, None, chunk=max(1, (64 * MiB) // max(h.row_bytes, 1)), _header=h))
        return parts[0] if not h.shape else self._concat(h, parts)

    @staticmethod
    def _concat(h: NpyHeader, parts: list):
        import numpy as np  # noqa: PLC0415

        return np.concatenate(parts) if parts else np.empty(h.shape, h.dtype)

    def rows(self, key: str, stop: int | None, chunk: int = 256, _header: NpyHeader | None = None) -> Iterator:
        """Rows [0, stop) of array ``key`` in chunks of ``chunk`` rows, decompressing only as far as needed."""
        import numpy as np  # noqa: PLC0415

        h = _header or self.header(key)
        with self._open(key) as f:
            self._exact(f, h.offset, key)
            if not h.shape:  # a 0-d array: one "row"
                yield np.frombuffer(self._exact(f, h.dtype.itemsize, key), h.dtype).reshape(())
                return
            stop = h.shape[0] if stop is None else min(int(stop), h.shape[0])
            done = 0
            while done < stop:
                k = min(chunk, stop - done)
                data = self._exact(f, k * h.row_bytes, key)
                yield np.frombuffer(data, h.dtype).reshape((k, *h.shape[1:]))
                done += k

    def _exact(self, f, n: int, key: str) -> bytearray:
        buf = bytearray()  # writable, so arrays made from it are too
        left = n
        try:
            while left:
                part = f.read(min(left, 16 * MiB))
                if not part:
                    break
                buf += part
                left -= len(part)
        except (zipfile.BadZipFile, EOFError, OSError, ValueError, zlib.error) as e:
            raise AmedValueError(f"{self.where}: array {key!r} is corrupt ({e})") from None
        if left:
            raise AmedValueError(f"{self.where}: array {key!r} is truncated ({n - left} of {n} bytes)")
        return buf
