"""Cell settings files: how a workflow job receives its settings as data, never as shell text.

A settings file is the JSON of one experiment cell (one method of one dataset at one NFE), written
by the workflow and read by ``amed sample/teacher/train/fid --settings FILE``. Keys left out (or
null) take the package's defaults (``amed.training.default_config``), which live nowhere else.

    {"format": "amed-cell-settings", "version": 1,
     "model": "digits-8", "device": "cpu", "compile": "auto", "guidance": null,
     "kind": "amed_plugin", "solver": "ipndm", "nfe": 5, "schedule": "polynomial", "rho": 7, "afs": true,
     "options": {"max_order": 4}, "batch": 256,
     "metric": "fd-digits", "num_samples": 512,
     "train": {"teacher": "ipndm", "M": 7, "teacher_options": {...}, "scale_dir": 0.01, "scale_time": 0.2,
               "lr": 0.005, "trajectories": 1024, "holdout": 256, "batch": 32, "seed": 0, "steps": 80,
               "epochs": null, "objective": "per_interval", "recipe": "authors", "select": "best", "cache_dtype": "float32"}}
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from .errors import AmedValueError

__all__ = ["FORMAT", "VERSION", "read_settings", "write_settings", "sample_settings", "train_settings",
           "teacher_settings"]

FORMAT = "amed-cell-settings"
VERSION = 1
_TOP = {"format", "version", "model", "device", "compile", "guidance", "kind", "solver", "nfe", "schedule", "rho",
        "afs", "options", "batch", "metric", "num_samples", "train", "label", "dataset", "method", "uncertainty", "gits",
        "imported"}
_TRAIN = {"teacher", "M", "teacher_options", "scale_dir", "scale_time", "lr", "trajectories", "holdout", "batch",
          "seed", "seeds", "steps", "epochs", "objective", "recipe", "select", "validate_every", "cache_dtype", "teacher_cache"}
_KINDS = ("baseline", "amed_solver", "amed_plugin")


def _number(value, key: str, integer: bool = False, minimum: float | None = None):
    ok = isinstance(value, int) if integer else isinstance(value, (int, float))
    if not ok or isinstance(value, bool) or (not integer and not math.isfinite(value)) or \
            (minimum is not None and value < minimum):
        kind = "an integer" if integer else "a finite number"
        raise AmedValueError(f"settings: {key} must be {kind}{f' >= {minimum:g}' if minimum is not None else ''}, "
                         f"got {value!r}")
    return value


def _options(d, key: str) -> dict:
    if d is None:
        return {}
    if not isinstance(d, dict):
        raise AmedValueError(f"settings: {key} must be an object, got {d!r}")
    for k, v in d.items():
        if not isinstance(k, str) or not (v is None or isinstance(v, (str, bool, int, float))):
            raise AmedValueError(f"settings: {key}.{k} must be a string, number, boolean or null, got {v!r}")
        if isinstance(v, float) and not math.isfinite(v):
            raise AmedValueError(f"settings: {key}.{k} must be finite, got {v!r}")
    return dict(d)


def validate_settings(s: dict, where: str = "settings") -> dict:
    """Check a settings mapping's keys and value types; returns it. The package checks meanings later."""
    if not isinstance(s, dict):
        raise AmedValueError(f"{where}: a settings file holds a JSON object, got {type(s).__name__}")
    if s.get("format") != FORMAT or s.get("version") != VERSION:
        raise AmedValueError(f"{where}: not an {FORMAT} file of version {VERSION}")
    unknown = sorted(set(s) - _TOP)
    if unknown:
        raise AmedValueError(f"{where}: unknown keys {unknown}")
    for key in ("model", "device", "solver", "schedule", "metric", "compile", "imported"):
        if s.get(key) is not None and not isinstance(s[key], str):
            raise AmedValueError(f"{where}: {key} must be a string, got {s[key]!r}")
    if s.get("kind", "baseline") not in _KINDS:
        raise AmedValueError(f"{where}: kind must be one of {list(_KINDS)}, got {s.get('kind')!r}")
    if s.get("nfe") is not None:
        _number(s["nfe"], "nfe", integer=True, minimum=1)
    for key in ("batch", "num_samples"):
        if s.get(key) is not None:
            _number(s[key], key, integer=True, minimum=1)
    for key in ("rho", "guidance"):
        if s.get(key) is not None:
            _number(s[key], key, minimum=0)
    if s.get("afs") is not None and not isinstance(s["afs"], bool):
        raise AmedValueError(f"{where}: afs must be true or false, got {s['afs']!r}")
    s["options"] = _options(s.get("options"), "options")
    u = s.get("uncertainty") or {}
    if not isinstance(u, dict) or sorted(set(u) - {"n_boot", "level", "boot_seed"}):
        raise AmedValueError(f"{where}: uncertainty must be an object with n_boot, level, boot_seed; got {u!r}")
    if u.get("n_boot") is not None:
        _number(u["n_boot"], "uncertainty.n_boot", integer=True, minimum=1)
    if u.get("boot_seed") is not None:
        _number(u["boot_seed"], "uncertainty.boot_seed", integer=True, minimum=0)
    if u.get("level") is not None and not (_number(u["level"], "uncertainty.level") and 0 < u["level"] < 1):
        raise AmedValueError(f"{where}: uncertainty.level must lie in (0, 1), got {u['level']!r}")
    s["uncertainty"] = u
    gits = s.get("gits") or {}
    if not isinstance(gits, dict) or sorted(set(gits) - {"num_fine", "warmup", "jump_warmup", "coeff", "metric", "seed"}):
        raise AmedValueError(f"{where}: gits must be an object with num_fine, warmup, jump_warmup, coeff, metric, seed; "
                             f"got {gits!r}")
    s["gits"] = gits
    t = s.get("train") or {}
    if not isinstance(t, dict):
        raise AmedValueError(f"{where}: train must be an object, got {t!r}")
    unknown = sorted(set(t) - _TRAIN)
    if unknown:
        raise AmedValueError(f"{where}: unknown train keys {unknown}")
    t["teacher_options"] = _options(t.get("teacher_options"), "train.teacher_options")
    for key, integer, lo in (("M", True, 0), ("trajectories", True, 1), ("holdout", True, 0), ("batch", True, 1),
                             ("seed", True, 0), ("steps", True, 1), ("validate_every", True, 1), ("lr", False, 0),
                             ("scale_dir", False, 0), ("scale_time", False, 0), ("epochs", False, 0)):
        if t.get(key) is not None:
            _number(t[key], f"train.{key}", integer=integer, minimum=lo)
    s["train"] = t
    return s


def read_settings(path) -> dict:
    """Read and check a cell settings file (a regular file of at most 1 MB)."""
    from ._io import read_regular_bytes  # noqa: PLC0415

    raw = read_regular_bytes(path, what="settings file", limit=1 << 20)
    try:
        s = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise AmedValueError(f"{path}: not a JSON settings file ({e})") from None
    return validate_settings(s, str(path))


def write_settings(path, settings: dict) -> Path:
    """Write a settings mapping (format and version added) atomically."""
    from ._io import atomic_write_bytes  # noqa: PLC0415

    s = validate_settings({"format": FORMAT, "version": VERSION, **settings}, str(path))
    atomic_write_bytes(path, (json.dumps(s, indent=1, sort_keys=True) + "\n").encode())
    return Path(path)


def _drop_none(d: dict) -> dict:
    return {k: v for k, v in d.items() if v is not None}


def sample_settings(s: dict) -> dict:
    """``amed.sample`` keywords of a baseline cell (solver, nfe, schedule, afs, rho, solver_options)."""
    return _drop_none(dict(solver=s.get("solver"), nfe=s.get("nfe"), schedule=s.get("schedule"), afs=s.get("afs"),
                           rho=s.get("rho"), solver_options=s.get("options") or None))


def teacher_settings(s: dict) -> dict:
    """``default_config`` overrides of an AMED cell (its schedule, AFS and the teacher)."""
    t = s.get("train") or {}
    return _drop_none(dict(schedule=s.get("schedule"), rho=s.get("rho"), afs=s.get("afs"),
                           solver_options=s.get("options") or None, teacher=t.get("teacher"), M=t.get("M"),
                           teacher_options=t.get("teacher_options") or None, scale_dir=t.get("scale_dir"),
                           scale_time=t.get("scale_time")))


def train_settings(s: dict) -> dict:
    """``amed.train_predictor`` keywords of an AMED cell, beyond ``teacher_settings``."""
    t = s.get("train") or {}
    return _drop_none(dict(num_trajectories=t.get("trajectories"), batch=t.get("batch"), lr=t.get("lr"),
                           seed=t.get("seed"), holdout=t.get("holdout"), steps=t.get("steps"), epochs=t.get("epochs"),
                           objective=t.get("objective"), recipe=t.get("recipe"), select=t.get("select"),
                           validate_every=t.get("validate_every")))
