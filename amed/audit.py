"""An audit of the paper's claims: each claim is an ordering the paper reports, judged with its uncertainty.

A claim is a pair of rows of one of the paper's tables at one NFE, read in the paper's direction:
"A scores lower than B" when the paper's A is below its B (e.g. AMED-Solver < DPM-Solver-2 at NFE 5).
Our side of a claim compares the two cells on the same evaluation seeds: paired bootstrap replicates of
the metric and, for trained methods, the spread over training seeds (``amed.uncertainty.compare``). The
decision rule (``amed.uncertainty.verdict``): held if the whole interval of mean(A) - mean(B) lies below
0, not held if it lies above 0, inconclusive otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Iterable

import numpy as np

from .uncertainty import BOOT_SEED, compare, verdict

__all__ = ["Claim", "paper_claims", "judge", "pairs_table2", "pairs_table4", "pairs_table5", "summary"]


@dataclass(frozen=True)
class Claim:
    table: str
    nfe: int
    better: str  # the row the paper reports lower
    worse: str
    paper_better: float
    paper_worse: float
    source: str = ""

    def text(self) -> str:
        return f"{self.better} < {self.worse}"


def paper_claims(paper: Iterable[dict], table: str, dataset: str, present: set,
                 pair_filter: Callable[[str, str], bool]) -> list[Claim]:
    """Every ordered pair the paper's ``table`` reports for ``dataset`` at one NFE, among the (method, nfe) cells
    ``present`` on our side and the method pairs ``pair_filter`` accepts (in either order); ties are skipped."""
    rows = [r for r in paper if str(r["table"]) == str(table) and r["dataset"] == dataset]
    by_nfe: dict[int, dict[str, dict]] = {}
    for r in rows:
        by_nfe.setdefault(int(r["nfe"]), {})[r["method"]] = r
    out = []
    for nfe in sorted(by_nfe):
        cells = by_nfe[nfe]
        names = [m for m in cells if (m, nfe) in present]
        for i, a in enumerate(names):
            for b in names[i + 1:]:
                if not (pair_filter(a, b) or pair_filter(b, a)):
                    continue
                va, vb = float(cells[a]["value"]), float(cells[b]["value"])
                if va == vb:
                    continue
                lo, hi = (a, b) if va < vb else (b, a)
                out.append(Claim(table=str(table), nfe=nfe, better=lo, worse=hi, paper_better=min(va, vb),
                                 paper_worse=max(va, vb), source=str(cells[lo].get("source", ""))))
    return out


def pairs_table2(amed_methods: set) -> Callable[[str, str], bool]:
    """Table 2: every pair with an AMED method in it (the paper's claims are about AMED, not among baselines)."""
    return lambda a, b: a in amed_methods


def _block(name: str) -> tuple[str, str]:
    base, _, rest = name.partition("[")
    return base, rest.rstrip("]")


def pairs_table4(a: str, b: str) -> bool:
    """Table 4: teachers compared within one AMED method's block."""
    return _block(a)[0] == _block(b)[0]


def pairs_table5(plugins: dict) -> Callable[[str, str], bool]:
    """Table 5: each plugin against its base solver under the same schedule (``plugins``: plugin block -> base block)."""
    def ok(a, b):
        (ba, sa), (bb, sb) = _block(a), _block(b)
        return sa == sb and plugins.get(ba) == bb
    return ok


def judge(claim: Claim, ours: dict, level: float = 0.95, boot_seed: int = BOOT_SEED) -> dict:
    """Our verdict on a claim. ``ours[(method, nfe)] = (values [K], replicates [K, n_boot])`` for each cell."""
    va, ra = ours[(claim.better, claim.nfe)]
    vb, rb = ours[(claim.worse, claim.nfe)]
    c = compare(va, ra, vb, rb, level=level, boot_seed=boot_seed)
    return {"table": claim.table, "nfe": claim.nfe, "claim": claim.text(), "better": claim.better,
            "worse": claim.worse, "paper_better": claim.paper_better, "paper_worse": claim.paper_worse,
            "ours_better": float(np.mean(va)), "ours_worse": float(np.mean(vb)), "difference": c.difference,
            "ci_lo": c.lo, "ci_hi": c.hi, "level": level, "runs_better": len(np.atleast_1d(va)),
            "runs_worse": len(np.atleast_1d(vb)), "pairs_won": c.wins, "pairs": c.pairs, "verdict": verdict(c),
            "source": claim.source}


def summary(rows: list[dict]) -> str:
    n = {v: sum(r["verdict"] == v for r in rows) for v in ("held", "not held", "inconclusive")}
    return (f"{len(rows)} claims: {n['held']} held, {n['not held']} not held, {n['inconclusive']} inconclusive")
