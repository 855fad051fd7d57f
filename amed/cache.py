"""Teacher-trajectory cache: teacher states at the student grid points, computed once and reused.

Layout of a cache directory (memory-mappable, sharded by seed):

    meta.json              what the trajectories are (model + sha256, teacher, grid, M, seeds, dtype, shape)
    shard-00000.npy        float16/float32 array [n_seeds, N, *shape] for seeds[0 : shard_size]
    ...

Each shard is written to a temporary file and renamed when complete, and its sha256 is recorded in
meta.json, so an interrupted build resumes without trusting half a shard. Opening a cache for other
settings (another grid, model, teacher, ...) or with a corrupt shard is an error that names the
difference; a cache is never silently used for something it was not built for.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from ._io import atomic_write_bytes, read_json_object, sha256_file
from .errors import AmedValueError

__all__ = ["TeacherCache", "cache_meta"]

FORMAT = "amed-teacher-cache"
VERSION = 1
_DTYPES = {"float16": np.float16, "float32": np.float32}


def cache_meta(*, model: str, model_sha256: str | None, teacher: str, teacher_options: dict, schedule: str,
               rho: float | None, sigma_min: float, sigma_max: float, num_points: int, M: int, grid: Sequence[float],
               shape: Sequence[int], first_seed: int, num_seeds: int, dtype: str, shard_size: int,
               guidance: float | None = None, conditioning: str | None = None) -> dict:
    """The identity of a cache: every field must match for the cache to be used."""
    if dtype not in _DTYPES:
        raise AmedValueError(f"cache dtype must be one of {sorted(_DTYPES)}, got {dtype!r}")
    if shard_size < 1 or num_seeds < 1:
        raise AmedValueError(f"need shard_size >= 1 and num_seeds >= 1, got {shard_size!r}, {num_seeds!r}")
    return {"format": FORMAT, "version": VERSION, "model": model, "model_sha256": model_sha256, "teacher": teacher,
            "teacher_options": dict(teacher_options), "schedule": schedule, "rho": rho, "sigma_min": float(sigma_min),
            "sigma_max": float(sigma_max), "num_points": int(num_points), "M": int(M),
            "grid": [float(t) for t in grid], "shape": [int(s) for s in shape], "first_seed": int(first_seed),
            "num_seeds": int(num_seeds), "dtype": dtype, "shard_size": int(shard_size),
            "guidance": None if guidance is None else float(guidance), "conditioning": conditioning}


class TeacherCache:
    """A (possibly partial) cache directory with a fixed identity ``meta``."""

    def __init__(self, root: str | os.PathLike, meta: dict, replace_mismatched: bool = False):
        """``replace_mismatched``: a directory holding a cache for other settings (or unreadable metadata) is
        emptied of its cache files and rebuilt instead of refused (for directories a workflow owns)."""
        self.root = Path(root)
        self.meta = dict(meta)
        self._checked: set[int] = set()
        self._shards: dict[int, np.ndarray] = {}
        self.hashes = {}
        on_disk = self.root / "meta.json"
        if on_disk.exists():
            try:
                stored = read_json_object(on_disk, "teacher cache metadata")
            except ValueError as e:
                if not replace_mismatched:
                    raise AmedValueError(f"{on_disk}: corrupt cache metadata ({e}); delete the directory to rebuild") from None
                self._clear()
                return
            diffs = [k for k in meta if stored.get(k) != meta[k]]
            if diffs and replace_mismatched:
                self._clear()
                return
            if diffs:
                k = diffs[0]
                raise AmedValueError(f"teacher cache {self.root} was built for {k}={stored.get(k)!r}, "
                                 f"this run needs {k}={meta[k]!r}; use another cache directory or delete this one")
            self.hashes = dict(stored.get("shard_sha256", {}))

    @classmethod
    def reopen(cls, root: str | os.PathLike) -> "TeacherCache":
        """The cache an earlier build left in ``root``, with the identity its metadata states (a run checks that
        identity against its own settings before using it)."""
        meta_path = Path(root) / "meta.json"
        if not meta_path.exists():
            raise AmedValueError(f"no teacher cache at {root} (run `amed teacher` first)")
        meta = read_json_object(meta_path, "teacher cache metadata")
        meta.pop("shard_sha256", None)
        return cls(root, meta)

    def _clear(self) -> None:
        """Remove this directory's cache files (metadata first, so a kill midway leaves no valid-looking cache)."""
        (self.root / "meta.json").unlink(missing_ok=True)
        for p in self.root.glob("shard-*.npy"):
            p.unlink()

    # ------------------------------------------------------------------------------------ layout
    @property
    def num_shards(self) -> int:
        return -(-self.meta["num_seeds"] // self.meta["shard_size"])

    def shard_range(self, k: int) -> tuple[int, int]:
        """Seed offsets [lo, hi) of shard k, relative to first_seed."""
        lo = k * self.meta["shard_size"]
        return lo, min(lo + self.meta["shard_size"], self.meta["num_seeds"])

    def shard_path(self, k: int) -> Path:
        return self.root / f"shard-{k:05d}.npy"

    def complete(self) -> bool:
        return all(str(k) in self.hashes and self.shard_path(k).exists() for k in range(self.num_shards))

    def _write_meta(self) -> None:
        meta = dict(self.meta, shard_sha256=self.hashes)
        atomic_write_bytes(self.root / "meta.json", (json.dumps(meta, indent=1) + "\n").encode())

    # ------------------------------------------------------------------------------------- build
    @contextlib.contextmanager
    def _locked(self):
        """An exclusive lock on the directory (several jobs may build or prune one cache at once: training jobs
        of several seeds that find it pruned). The shards others wrote meanwhile are read back."""
        import fcntl  # noqa: PLC0415

        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                on_disk = self.root / "meta.json"
                if on_disk.exists():
                    stored = read_json_object(on_disk, "teacher cache metadata")
                    if all(stored.get(k) == self.meta[k] for k in self.meta):
                        self.hashes = dict(stored.get("shard_sha256", {}))
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def build(self, compute: Callable[[list[int]], torch.Tensor], chunk: int, progress: Callable | None = None) -> None:
        """Compute the missing shards; ``compute(seeds) -> [N, B, *shape]`` is called on ``chunk`` seeds at a time."""
        with self._locked():
            self._build(compute, chunk, progress)

    def prune(self) -> int:
        """Delete the shards (keep the metadata, so a later build recomputes exactly them); returns bytes freed."""
        freed = 0
        with self._locked():
            for k in range(self.num_shards):
                path = self.shard_path(k)
                if path.exists():
                    freed += path.stat().st_size
                    path.unlink()
            self.hashes = {}
            self._shards, self._checked = {}, set()
            self._write_meta()
        return freed

    def _build(self, compute, chunk: int, progress) -> None:
        if not (self.root / "meta.json").exists():
            self._write_meta()
        first = self.meta["first_seed"]
        for k in range(self.num_shards):
            if str(k) in self.hashes and self.shard_path(k).exists():
                continue
            lo, hi = self.shard_range(k)
            parts = []
            for a in range(lo, hi, chunk):
                seeds = list(range(first + a, first + min(a + chunk, hi)))
                parts.append(compute(seeds).transpose(0, 1).cpu().numpy())  # -> [B, N, ...]
                if progress:
                    progress(len(seeds))
            arr = np.ascontiguousarray(np.concatenate(parts).astype(_DTYPES[self.meta["dtype"]]))
            path = self.shard_path(k)
            import io  # noqa: PLC0415

            buf = io.BytesIO()
            np.save(buf, arr)
            blob = buf.getvalue()
            atomic_write_bytes(path, blob)
            self.hashes[str(k)] = hashlib.sha256(blob).hexdigest()
            self._write_meta()

    # -------------------------------------------------------------------------------------- read
    def _shard(self, k: int) -> np.ndarray:
        if k in self._shards:
            return self._shards[k]
        path = self.shard_path(k)
        if str(k) not in self.hashes or not path.exists():
            raise AmedValueError(f"teacher cache {self.root} has no shard {k}; build it first")
        if k not in self._checked:
            if sha256_file(path) != self.hashes[str(k)]:
                raise AmedValueError(f"{path}: sha256 differs from the cache metadata; the shard is corrupt, delete it to rebuild")
            self._checked.add(k)
        arr = np.load(path, mmap_mode="r")
        lo, hi = self.shard_range(k)
        expect = (hi - lo, self.meta["num_points"], *self.meta["shape"])
        if arr.shape != expect or arr.dtype != _DTYPES[self.meta["dtype"]]:
            raise AmedValueError(f"{path}: holds {arr.dtype}{list(arr.shape)}, the metadata says "
                             f"{self.meta['dtype']}{list(expect)}")
        self._shards[k] = arr
        return arr

    def read(self, seeds: Sequence[int]) -> torch.Tensor:
        """Teacher states [N, B, *shape] (float32) for the given seeds."""
        first, n, size = self.meta["first_seed"], self.meta["num_seeds"], self.meta["shard_size"]
        rows = []
        for s in seeds:
            off = int(s) - first
            if not 0 <= off < n:
                raise AmedValueError(f"seed {s} is not in teacher cache {self.root} (seeds {first}..{first + n - 1})")
            rows.append(self._shard(off // size)[off % size])
        return torch.from_numpy(np.stack(rows).astype(np.float32)).transpose(0, 1).contiguous()
