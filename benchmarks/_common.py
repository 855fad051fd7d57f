"""What every benchmark script shares: writing its CSV atomically (a killed run leaves no half table), and the
seeded comparison of two settings (runs = [(FD, bootstrap replicates)] per training seed)."""

from __future__ import annotations

from pathlib import Path

from amed import _io


def write_csv(path, rows: list[dict], fields: list[str] | None = None) -> Path:
    """Rows as CSV at ``path`` (parent folders created), written atomically; fields default to row 0's keys. Lines
    end in CRLF (the csv module's default), as in every table committed under measured/."""
    if not rows:
        raise ValueError(f"no rows to write to {path}")
    return _io.write_csv(path, rows, fields, lineterminator="\r\n")


def write_with_summary(out, rows: list[dict], summary: list[dict]) -> None:
    """The per-run CSV at ``out`` and the per-cell summary beside it (``<stem>_summary.csv``)."""
    write_csv(out, rows)
    write_csv(Path(out).with_name(Path(out).stem + "_summary.csv"), summary)


def compare_runs(runs_a: list[tuple], runs_b: list[tuple]):
    """A vs B over training seeds, paired over evaluation seeds (amed.uncertainty.compare); each side a list of
    (value, replicates) per run. Returns (comparison, mean of A, mean of B)."""
    import numpy as np  # noqa: PLC0415

    from amed.uncertainty import compare  # noqa: PLC0415

    va, ra = [v for v, _ in runs_a], [r for _, r in runs_a]
    vb, rb = [v for v, _ in runs_b], [r for _, r in runs_b]
    return compare(va, ra, vb, rb), float(np.mean(va)), float(np.mean(vb))


def workflow_config(path) -> dict:
    """A workflow config file validated against the schema (its defaults filled in, as the workflow does)."""
    import yaml  # noqa: PLC0415
    from snakemake.utils import validate  # noqa: PLC0415

    with open(path) as f:
        cfg = yaml.safe_load(f)
    validate(cfg, str(Path(__file__).resolve().parents[1] / "workflow" / "schemas" / "config.schema.yaml"))
    return cfg
