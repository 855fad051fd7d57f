"""Sample shards: sampled and written by ``amed sample``, read back for a metric without trusting them.

A shard is an ``.npz`` holding ``images`` (uint8 [N, H, W, C], EDM's layout), ``seeds`` (integers
[N]: image i was sampled from seed i) and ``meta`` (a JSON string: the model and its settings). The
workflow names each shard by its first seed, six digits (``samples/000256.npz`` holds seeds
256..511). ``SampleShards`` reads every header before any pixel: the layout the metric needs, one
image shape across the inputs, a seed per image; then checks the seeds of the images used (no seed
twice; a six-digit file name is its first seed; optionally exactly a stated list, in order) and
streams only the images asked for.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Callable, Iterator, Sequence

import numpy as np

from ._io import NpyHeader, NpzReader, write_npz
from .errors import AmedValueError

__all__ = ["SampleShards", "sample_seeds", "shard_images", "write_shard"]


def shard_images(model, x) -> np.ndarray:
    """uint8 [B, H, W, C] images of a batch of samples: the adapter's own ``images`` (its decoder and quantisation)
    when it has one, else ``to_uint8``."""
    if hasattr(model, "images"):
        return model.images(x).numpy()
    from .models.base import to_uint8  # noqa: PLC0415

    return to_uint8(x).numpy()


def sample_seeds(model, seeds: Sequence[int], shape: Sequence[int], batch: int, device=None,
                 progress: Callable[[int], None] | None = None, **sample_kw) -> np.ndarray:
    """uint8 images [len(seeds), H, W, C] of ``amed.sample(model, noise, **sample_kw)``, ``batch`` seeds at a time
    (image i depends only on seeds[i]); ``progress(n)`` after each batch of n."""
    from .calls import conditioned, randn_seeds  # noqa: PLC0415
    from .sampling import sample  # noqa: PLC0415

    images = []
    for i in range(0, len(seeds), batch):
        chunk = seeds[i:i + batch]
        noise = randn_seeds(chunk, shape, device=device)
        with conditioned(model, chunk):
            x = sample(model, noise, **sample_kw)
        images.append(shard_images(model, x))
        if progress is not None:
            progress(len(chunk))
    return np.concatenate(images)


def write_shard(path: str | os.PathLike, images: np.ndarray, seeds: Sequence[int], meta: dict) -> None:
    """Write a shard atomically: ``images``, ``seeds`` as int64 and ``meta`` as a JSON string (non-JSON values as str)."""
    write_npz(path, images=images, seeds=np.asarray(seeds, dtype=np.int64),
              meta=np.asarray(json.dumps(meta, default=str)))


class SampleShards:
    """The ``images``/``seeds`` shards of one metric run, in the order given."""

    def __init__(self, paths: Sequence[str | os.PathLike], layout: tuple):
        """``layout``: the (H, W, C) the metric takes, None where any size goes (e.g. (None, None, 3))."""
        self.readers: list[NpzReader] = []
        self.images: list[NpyHeader] = []
        self.seeds: list[NpyHeader | None] = []
        try:
            for p in paths:
                self._add(Path(p), layout)
        except BaseException:
            self.close()
            raise

    def _add(self, path: Path, layout: tuple) -> None:
        z = NpzReader(path, "sample file")
        self.readers.append(z)
        if "images" not in z:
            raise AmedValueError(f"{path} holds no 'images' array (keys {z.keys}); give `amed sample` outputs")
        h = z.header("images")
        if h.dtype != np.uint8 or len(h.shape) != 4 or any(w is not None and w != g for w, g in zip(layout, h.shape[1:])):
            want = "x".join("*" if w is None else str(w) for w in layout)
            raise AmedValueError(f"{path}: images must be uint8 [N, H, W, C] with H x W x C = {want} for this metric, "
                                 f"got {h.dtype} {list(h.shape)}")
        if self.images and h.shape[1:] != self.images[0].shape[1:]:
            raise AmedValueError(f"{path}: images are {list(h.shape[1:])}, those of {self.readers[0].path} "
                                 f"{list(self.images[0].shape[1:])}; the inputs must be one sample set")
        s = z.header("seeds") if "seeds" in z else None
        if s is not None and (s.dtype.kind not in "iu" or s.shape != h.shape[:1]):
            raise AmedValueError(f"{path}: 'seeds' must be integers, one per image ({h.shape[0]}), "
                                 f"got {s.dtype} {list(s.shape)}")
        self.images.append(h)
        self.seeds.append(s)

    def __enter__(self) -> "SampleShards":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for z in self.readers:
            z.close()

    @property
    def count(self) -> int:
        """Images in all inputs (from the headers)."""
        return sum(h.shape[0] for h in self.images)

    def _spans(self, n: int) -> Iterator[tuple[int, int]]:
        """(shard index, rows) covering the first n images."""
        left = n
        for k, h in enumerate(self.images):
            if left <= 0:
                return
            take = min(left, h.shape[0])
            yield k, take
            left -= take

    def check_seeds(self, used: int, expected: Sequence[int] | None = None) -> None:
        """The seeds of the first ``used`` images: present, none twice, a six-digit file name is the first
        seed; with ``expected``, the inputs hold exactly those seeds, in that order."""
        if expected is not None and len(expected) != self.count:
            raise AmedValueError(f"--seeds states {len(expected)} seeds, the inputs hold {self.count} images")
        rows = self.count if expected is not None else used
        got = []
        for k, take in self._spans(rows):
            z, s = self.readers[k], self.seeds[k]
            if s is None:
                if expected is None:
                    continue
                raise AmedValueError(f"{z.path} has no 'seeds' array; cannot check it against --seeds")
            seeds = np.concatenate(list(z.rows("seeds", take, chunk=1 << 20))).astype(np.int64) if take else \
                np.zeros(0, np.int64)
            if re.fullmatch(r"\d{6}", z.path.stem) and take and int(seeds[0]) != int(z.path.stem):
                raise AmedValueError(f"{z.path}: a shard named {z.path.name} starts at seed {int(z.path.stem)}, "
                                     f"this one starts at seed {int(seeds[0])}")
            got.append((z.path, seeds))
        if not got:
            return
        flat = np.concatenate([s for _, s in got])
        if expected is not None:
            want = np.asarray(expected, dtype=np.int64)
            bad = np.flatnonzero(flat != want)
            if bad.size:
                i = int(bad[0])
                path, j = self._locate(got, i)
                raise AmedValueError(f"{path}: image {j} has seed {int(flat[i])}, --seeds says seed {int(want[i])} "
                                     f"(position {i} of the inputs)")
        uniq, counts = np.unique(flat, return_counts=True)
        if (counts > 1).any():
            seed = int(uniq[np.argmax(counts > 1)])
            at = [self._locate(got, int(i)) for i in np.flatnonzero(flat == seed)[:2]]
            where = " and ".join(f"{p} (image {j})" for p, j in at)
            raise AmedValueError(f"seed {seed} occurs twice in the inputs: {where}; a shard was copied or sampled twice")

    @staticmethod
    def _locate(got, i: int):
        for path, seeds in got:
            if i < len(seeds):
                return path, i
            i -= len(seeds)
        raise IndexError(i)

    def read(self, n: int, chunk: int = 256) -> Iterator[np.ndarray]:
        """The first ``n`` images, ``chunk`` rows at a time (never more rows than asked are decompressed)."""
        for k, take in self._spans(n):
            yield from self.readers[k].rows("images", take, chunk=chunk, _header=self.images[k])
