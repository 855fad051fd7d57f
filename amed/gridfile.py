"""Explicit time-grid files: a searched grid (GITS, ``amed.gits``) with the record of how it was made.

A grid file is JSON: ``{"format": "amed-grid", "version": 1, "grid": [t_0, ..., t_{N-1}], "solver": ...,
"nfe": ..., "afs": ..., "amed": ..., "model": ..., "search": {...}, "sha256": ...}``. ``sha256`` is the
checksum of the rest of the record (canonical JSON), so an edited or truncated file is refused; to sample on
hand-made times, pass the floats themselves (``schedule=[80.0, ...]``), which carry no record.

The floats are written by ``json`` (shortest repr), so they read back bit for bit.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

import torch

from ._io import atomic_write_bytes
from .schedules import SCHEDULES, explicit_grid
from .errors import AmedFileNotFoundError, AmedValueError

__all__ = ["FORMAT", "VERSION", "GridRecord", "load_grid", "is_grid_path", "grid_times", "implied_nfe"]

FORMAT = "amed-grid"
VERSION = 1
_REQUIRED = ("grid", "solver", "nfe", "afs", "amed", "solver_options")


def implied_nfe(solver: str, num_points: int, afs: bool, amed: bool) -> int:
    """Network evaluations of a run on ``num_points`` times: AMED 2 (N - 1) - [AFS]; a baseline
    (N - 1) * evals_per_step - [AFS]."""
    if amed:
        return 2 * (num_points - 1) - int(afs)
    from .solvers import SOLVERS  # noqa: PLC0415

    if solver not in SOLVERS:
        raise AmedValueError(f"unknown solver {solver!r}; choose one of {sorted(SOLVERS)}")
    return (num_points - 1) * SOLVERS[solver].evals_per_step - int(afs)


def _checksum(rec: dict) -> str:
    body = {k: v for k, v in rec.items() if k != "sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True)
class GridRecord:
    """A time grid (float64, descending) and the record of what it was made for."""

    grid: torch.Tensor
    record: dict = field(default_factory=dict)
    path: str | None = None

    @property
    def solver(self) -> str:
        return self.record["solver"]

    @property
    def nfe(self) -> int:
        return int(self.record["nfe"])

    @property
    def afs(self) -> bool:
        return bool(self.record["afs"])

    @property
    def amed(self) -> bool:
        """True for a grid searched for an AMED student (its N points are the predictor's grid)."""
        return bool(self.record["amed"])

    @property
    def solver_options(self) -> dict:
        return dict(self.record.get("solver_options") or {})

    @property
    def name(self) -> str:
        return self.path or "the grid record"

    def to_json(self) -> dict:
        rec = {"format": FORMAT, "version": VERSION, **{k: v for k, v in self.record.items()
                                                       if k not in ("format", "version", "sha256")}}
        rec["grid"] = [float(t) for t in self.grid.tolist()]
        rec["sha256"] = _checksum(rec)
        return rec

    def save(self, path: str | os.PathLike) -> Path:
        """Write the record as JSON, atomically; returns the path."""
        path = Path(path)
        atomic_write_bytes(path, (json.dumps(self.to_json(), indent=1) + "\n").encode())
        return path

    def check_model(self, denoiser) -> None:
        """A grid searched on one model refuses another (name, then sha256 where both are known)."""
        info = getattr(denoiser, "info", None)
        want, name = self.record.get("model"), getattr(info, "name", None)
        if want and name and want != name:
            raise AmedValueError(f"{self.name} was searched on model {want!r}, got model {name!r}; "
                             f"pass schedule=<the list of times> to use its times anyway")
        want_sha, sha = self.record.get("model_sha256"), getattr(info, "sha256", None)
        if want_sha and sha and want_sha != sha:
            raise AmedValueError(f"{self.name} was searched on model {want!r} with sha256 {want_sha[:12]}..., "
                             f"the model given has sha256 {sha[:12]}...")


def is_grid_path(schedule) -> bool:
    """A schedule argument that names a grid file: a path (not a registered schedule name) ending in .json."""
    if isinstance(schedule, os.PathLike):
        return True
    return isinstance(schedule, str) and schedule not in SCHEDULES and schedule.lower().endswith(".json")


def load_grid(path: str | os.PathLike) -> GridRecord:
    """Read and check a grid file written by ``GridRecord.save`` (format, version, checksum, the grid itself)."""
    from ._io import read_regular_text  # noqa: PLC0415

    path = Path(path)
    if not path.exists():
        raise AmedFileNotFoundError(f"grid file {str(path)!r} does not exist")
    try:
        rec = json.loads(read_regular_text(path, "grid file", limit=1 << 20))  # a FIFO or device is refused
    except json.JSONDecodeError as e:
        raise AmedValueError(f"{path}: not a grid file (not valid JSON: {e})") from None
    if not isinstance(rec, dict) or rec.get("format") != FORMAT:
        got = rec.get("format") if isinstance(rec, dict) else type(rec).__name__
        raise AmedValueError(f"{path}: not an {FORMAT!r} file (format {got!r})")
    if rec.get("version") != VERSION:
        raise AmedValueError(f"{path}: {FORMAT} version {rec.get('version')!r} is not supported (this amed reads {VERSION})")
    missing = [k for k in _REQUIRED if k not in rec]
    if missing:
        raise AmedValueError(f"{path}: the record lacks {missing}")
    if rec.get("sha256") != _checksum(rec):
        raise AmedValueError(f"{path}: checksum mismatch, the file was edited or is corrupt; "
                         f"to sample on hand-made times pass them as a list")
    grid = explicit_grid(rec["grid"], what=f"{path}: the grid")
    nfe, afs, amed = rec["nfe"], rec["afs"], rec["amed"]
    if not isinstance(afs, bool) or not isinstance(amed, bool):
        raise AmedValueError(f"{path}: afs and amed must be true/false, got {afs!r}, {amed!r}")
    implied = implied_nfe(rec["solver"], grid.numel(), afs, amed)
    if nfe != implied:
        raise AmedValueError(f"{path}: {grid.numel()} times give NFE={implied} for {rec['solver']} "
                         f"(afs={afs}, amed={amed}), the record says nfe={nfe!r}")
    return GridRecord(grid=grid, record=rec, path=str(path))


def grid_times(schedule, amed: tuple[str, int, bool] | None = None) -> list[float]:
    """The times of a grid file path, a ``GridRecord`` or a list/tensor of times, checked.

    With ``amed = (solver, nfe, afs)`` of an AMED run, a grid file must have been searched for exactly
    that run (a plain list of times is taken as given).
    """
    if is_grid_path(schedule):
        schedule = load_grid(schedule)
    if isinstance(schedule, GridRecord):
        if amed is not None:
            want = {"amed": True, "solver": amed[0], "nfe": amed[1], "afs": bool(amed[2])}
            got = {k: schedule.record.get(k) for k in want}
            if got != want:
                raise AmedValueError(f"{schedule.name} was searched for {got}, this AMED run is {want}; search a grid "
                                 f"for it (amed gits --amed ...) or pass the times as a list")
        return [float(t) for t in schedule.grid.tolist()]
    return [float(t) for t in explicit_grid(schedule).tolist()]
