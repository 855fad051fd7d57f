"""Table text of the paper's long tables: read a long CSV (dataset, method, nfe, metric, value, ...) and lay it out
as Markdown, methods x NFE (Tables 2, 4 and 5)."""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Sequence

from ._io import open_regular_text
from .errors import AmedValueError

__all__ = ["read_long_csv", "long_to_markdown"]


def read_long_csv(path: str | Path) -> list[dict]:
    """Rows of a long CSV (dataset, method, nfe, metric, value, ...); nfe as int, value as float."""
    try:
        with open_regular_text(path, "long CSV") as f:
            rows = list(csv.DictReader(f))
    except (UnicodeDecodeError, csv.Error) as e:
        raise AmedValueError(f"long CSV {str(path)!r} is not a UTF-8 CSV file ({e})") from None
    need = {"method", "nfe", "value"}
    if not rows or not need <= set(rows[0]):
        raise AmedValueError(f"{str(path)!r}: need a long CSV with columns {sorted(need)}, got {sorted(rows[0]) if rows else []}")
    for r in rows:
        r["nfe"], r["value"] = int(r["nfe"]), float(r["value"])
    return rows


def long_to_markdown(rows: list[dict], title: str = "", row: str = "method", col: str = "nfe",
                     group: Sequence[str] = ("dataset", "metric"), fmt: str = "{:.2f}",
                     lower_is_better: bool = True) -> str:
    """Lay a long table out as Markdown, ``row`` x ``col`` (methods x NFE), one table per ``group`` value;
    the best value of each column is bold. Tables 2, 4 (teacher ablation) and 5 (schedule ablation). Several
    rows for one cell (training seeds) show as mean ± standard deviation, plus how many kept the neutral
    predictor when a ``selected`` column says so."""
    group = [g for g in group if rows and g in rows[0]]
    md = [f"# {title}", ""] if title else []
    keys = list(dict.fromkeys(tuple(r[g] for g in group) for r in rows))
    for gk in keys:
        sub = [r for r in rows if tuple(r[g] for g in group) == gk]
        cols = sorted(dict.fromkeys(r[col] for r in sub))
        names = list(dict.fromkeys(r[row] for r in sub))
        runs: dict = {}
        for r in sub:
            runs.setdefault((r[row], r[col]), []).append(r)
        val = {k: sum(float(r["value"]) for r in v) / len(v) for k, v in runs.items()}
        if group:
            md += ["## " + ", ".join(f"{g}: {v}" for g, v in zip(group, gk)), ""]
        md += [f"| {row} | " + " | ".join(f"{col.upper()} {c}" for c in cols) + " |", "|---|" + "---:|" * len(cols)]
        best = {}
        for c in cols:
            vs = [val[(m, c)] for m in names if (m, c) in val and math.isfinite(val[(m, c)])]
            best[c] = (min(vs) if lower_is_better else max(vs)) if vs else None
        for m in names:
            cells = []
            for c in cols:
                if (m, c) not in val:
                    cells.append("–")
                    continue
                s = fmt.format(val[(m, c)])
                s = f"**{s}**" if val[(m, c)] == best[c] else s
                rs = runs[(m, c)]
                if len(rs) > 1:
                    sd = math.sqrt(sum((float(r["value"]) - val[(m, c)]) ** 2 for r in rs) / (len(rs) - 1))
                    s += " ± " + fmt.format(sd)
                neutral = sum(r.get("selected") == "neutral" for r in rs)
                cells.append(s + (f" (neutral {neutral}/{len(rs)})" if neutral else ""))
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        md.append("")
    return "\n".join(md)
