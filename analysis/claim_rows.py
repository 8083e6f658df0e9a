"""One row of the claims table and what every claim builder shares: the paper's claims, lookups."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section
from qmoe.analysis.verdicts import UNTESTABLE

CLAIMS = {
    "q4": ("4-bit ≈ 16-bit F1", "99.9% of 16-bit, p = 0.873 (ESC-50)"),
    "q2": ("2-bit drops below 16-bit", "95.5% of 16-bit, p = 0.004 (ESC-50)"),
    "variance": ("curiosity cuts fold variance", "50–94% lower F1 variance, p < 0.001 (Levene)"),
    "variance_seed": ("curiosity cuts training (seed) variance",
                      "not in the paper: the concrete form of 'curiosity makes it stable'"),
    "collapse": ("small α collapses routing", "α = 0.02: 100% of samples to Q4"),
    "confidence": ("highest-precision expert gets the least confident samples",
                   "Q8: −20.0% confidence, p < 0.001 (Welch)"),
}


def row(claim: str, where: str, figure: str, p: float, verdict: str, *, test: str = "-", power: str = "-") -> dict:
    """One claims-table row (raw: p is a float)."""
    name, paper = CLAIMS[claim]
    return {"claim": name, "where": where, "figure": figure, "test": test, "p": p, "verdict": verdict,
            "power": power, "paper": paper, "claim_id": claim}


def untestable(claim: str, reason: str, where: str = "-") -> dict:
    """A claim no test could run on, with why."""
    return row(claim, where, reason, math.nan, UNTESTABLE)


def section_data(sections: Mapping[str, Section], key: str, table: str | None = None) -> pd.DataFrame | None:
    """The raw data of a computed section's table (the first, or the one keyed ``table``)."""
    section = sections.get(key)
    if section is None or section.reason is not None:
        return None
    for t in section.tables:
        if table is None or t.key == table:
            return t.data
    return None


def reason(sections: Mapping[str, Section], key: str) -> str:
    """Why a section the claim needs was not computed."""
    section = sections.get(key)
    return section.reason if section is not None and section.reason else "its section was not computed"


def where(r: Mapping, ctx: Context, extra: str = "") -> str:
    """``esc50, BitNet-Q4/8-QMoE α=0.3[, paper]``."""
    parts = [str(r["dataset"])] + ([extra] if extra else []) + ([str(r["protocol"])] if ctx.multi_protocol else [])
    return ", ".join(parts)


def floor_text(test: str, floor: float, floor_adj: float, n: int, m: int, correction: str) -> str:
    """``Levene cannot reach p < 0.0040 with 5 folds (0.0079 after bonferroni over 2)``; "" at floor 0."""
    if not fmt.finite(floor) or floor <= 0:
        return ""
    after = f" ({floor_adj:.2g} after {correction} over {m})" if m > 1 else ""
    return f"{test} cannot reach p < {floor:.2g} with {n} folds{after}"


def alpha_text(m: int) -> str:
    """The per-comparison level the power is computed at: ``α = 0.05`` or ``α = 0.05/3``."""
    return "α = 0.05" if m <= 1 else f"α = 0.05/{m}"
