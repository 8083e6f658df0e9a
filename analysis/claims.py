"""The paper's claims, tested on this sweep's numbers: figure, p-value and a verdict.

Each claim reads the data of the section that computes it, so a claim and its table never
disagree; where that section could not be computed, the claim says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table

TITLE = "Claims of the paper"
HOLDS, FAILS, UNTESTABLE = "holds", "does not hold", "not testable here"
PARITY = 0.99  # "≈ 16-bit": at least 99% of the 16-bit F1 and no significant difference
COLLAPSE = 0.95  # "collapses": one expert takes at least 95% of the samples
SMALL_ALPHA = 0.05  # "small α": the paper's 0.02 and anything up to 0.05
LEVEL = 0.05

CLAIMS = {
    "q4": ("4-bit ≈ 16-bit F1", "99.9% of 16-bit, p = 0.873 (ESC-50)"),
    "q2": ("2-bit drops below 16-bit", "95.5% of 16-bit, p = 0.004 (ESC-50)"),
    "variance": ("curiosity cuts fold variance", "50–94% lower F1 variance, p < 0.001 (Levene)"),
    "collapse": ("small α collapses routing", "α = 0.02: 100% of samples to Q4"),
    "confidence": ("highest-precision expert gets the least confident samples",
                   "Q8: −20.0% confidence, p < 0.001 (Welch)"),
}


def _row(claim: str, where: str, figure: str, p: float, verdict: str) -> dict:
    name, paper = CLAIMS[claim]
    return {"claim": name, "where": where, "figure": figure, "p": p, "verdict": verdict, "paper": paper,
            "claim_id": claim}


def _untestable(claim: str, reason: str) -> dict:
    return _row(claim, "-", reason, math.nan, UNTESTABLE)


def _data(sections: Mapping[str, Section], key: str, table: str | None = None) -> pd.DataFrame | None:
    section = sections.get(key)
    if section is None or section.reason is not None:
        return None
    for t in section.tables:
        if table is None or t.key == table:
            return t.data
    return None


def _reason(sections: Mapping[str, Section], key: str) -> str:
    section = sections.get(key)
    return section.reason if section is not None and section.reason else "its section was not computed"


def _where(r: Mapping, ctx: Context, extra: str = "") -> str:
    parts = [str(r["dataset"])] + ([extra] if extra else []) + ([str(r["protocol"])] if ctx.multi_protocol else [])
    return ", ".join(parts)


def bit_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    df = _data(sections, "bits")
    out = []
    for claim, bits in (("q4", 4), ("q2", 2)):
        if df is None:
            out.append(_untestable(claim, _reason(sections, "bits")))
            continue
        rows = df[df["bits"] == bits]
        if rows.empty:
            out.append(_untestable(claim, f"no q{bits} model in the sweep"))
        for r in rows.to_dict("records"):
            figure = (f"{fmt.num(100 * r['pct_of_16'], '.1f')}% of 16-bit "
                      f"({fmt.value('f1_macro', r['f1_mean'])} vs {fmt.value('f1_macro', r['f1_mean'] / r['pct_of_16'])})"
                      if fmt.finite(r["pct_of_16"]) else "-")
            p = r["p_adj"]
            if r["n_pairs"] < 2 or not fmt.finite(p):
                verdict, figure = UNTESTABLE, f"{figure}; only {r['n_pairs']} paired fold(s)"
            elif claim == "q4":
                verdict = HOLDS if r["pct_of_16"] >= PARITY and p >= LEVEL else FAILS
            else:
                verdict = HOLDS if r["mean_diff"] < 0 and p < LEVEL else FAILS
            out.append(_row(claim, _where(r, ctx), figure, p, verdict))
    return out


def variance_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    df = _data(sections, "curiosity")
    if df is None:
        return [_untestable("variance", _reason(sections, "curiosity"))]
    out = []
    for r in df[df["alpha"] > 0].to_dict("records"):
        base = df[(df["protocol"] == r["protocol"]) & (df["dataset"] == r["dataset"])
                  & (df["model"] == r["model"]) & (df["alpha"] == 0)]
        where = _where(r, ctx, f"{r['mixture']} α={r['alpha']:g}")
        if base.empty:
            out.append(_row("variance", where, "no plain-routing (α = 0) baseline", math.nan, UNTESTABLE))
            continue
        figure = (f"variance {fmt.percent(-r['var_reduction'], 0, signed=True)} "
                  f"(F1 std {fmt.num(base['f1_std'].iloc[0], '.3f')} → {fmt.num(r['f1_std'], '.3f')})")
        p = r["p_adj"]
        if not fmt.finite(r["n_pairs"]) or r["n_pairs"] < 2 or not fmt.finite(r["var_reduction"]):
            verdict, figure = UNTESTABLE, f"only {0 if not fmt.finite(r['n_pairs']) else int(r['n_pairs'])} paired fold(s)"
        else:
            verdict = HOLDS if r["var_reduction"] > 0 and fmt.finite(p) and p < LEVEL else FAILS
        out.append(_row("variance", where, figure, p, verdict))
    return out or [_untestable("variance", "no curiosity (α > 0) rows")]


def collapse_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    df = _data(sections, "curiosity")
    if df is None:
        return [_untestable("collapse", _reason(sections, "curiosity"))]
    small = df[(df["alpha"] > 0) & (df["alpha"] <= SMALL_ALPHA)]
    if small.empty:
        return [_untestable("collapse", f"no small α (0 < α ≤ {SMALL_ALPHA:g}; the paper's is 0.02) in the sweep")]
    out = []
    for r in small.to_dict("records"):
        where = _where(r, ctx, f"{r['mixture']} α={r['alpha']:g}")
        if not fmt.finite(r["top_share"]):
            out.append(_row("collapse", where, "no routing shares recorded", math.nan, UNTESTABLE))
            continue
        figure = f"{fmt.percent(r['top_share'], 0)} of samples to {r['top_expert']}"
        out.append(_row("collapse", where, figure, math.nan, HOLDS if r["top_share"] >= COLLAPSE else FAILS))
    return out


def confidence_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    df = _data(sections, "specialisation", "specialisation_tests")
    if df is None:
        return [_untestable("confidence", _reason(sections, "specialisation"))]
    cur = df[df["alpha"] > 0]
    if cur.empty:
        return [_untestable("confidence", "no curiosity (α > 0) mixture with routing files")]
    out = []
    for r in cur.to_dict("records"):
        where = _where(r, ctx, str(r["model"]))
        if not r["high_expert"] or not fmt.finite(r["p"]):
            out.append(_row("confidence", where, "no test: no single highest-precision expert with ≥ 2 samples "
                                                 "and ≥ 2 others", math.nan, UNTESTABLE))
            continue
        figure = (f"{r['high_expert']}: {fmt.percent(r['rel_diff'], 1, signed=True)} confidence "
                  f"({fmt.num(r['conf_high'], '.3f')} vs {fmt.num(r['conf_rest'], '.3f')})")
        p = r["p_adj"]
        verdict = HOLDS if r["rel_diff"] < 0 and fmt.finite(p) and p < LEVEL else FAILS
        out.append(_row("confidence", where, figure, p, verdict))
    return out


def claims_section(ctx: Context, sections: Mapping[str, Section]) -> Section:
    """One row per claim and place it can be tested (or one 'not testable here' row with why)."""
    data = (bit_claims(ctx, sections) + variance_claims(ctx, sections) + collapse_claims(ctx, sections)
            + confidence_claims(ctx, sections))
    df = pd.DataFrame(data)
    rows = [{"claim": r["claim"], "where": r["where"], "figure": r["figure"], "p": fmt.pvalue(r["p"]),
             "verdict": r["verdict"], "paper": r["paper"]} for r in data]
    return Section(
        key="claims", title=TITLE, tables=(Table(key="claims", title="Claims", data=df, display=ctx.display(rows)),),
        intro=(f"p is the adjusted p ({ctx.correction.value}) of the section that tests the claim. "
               f"'≈ 16-bit' holds at ≥ {100 * PARITY:.0f}% of the 16-bit F1 with p ≥ {LEVEL}; 'drops' and "
               f"'cuts variance' need p < {LEVEL} in that direction; 'collapses' means one expert takes ≥ "
               f"{100 * COLLAPSE:.0f}% of the samples (descriptive, no test). A non-significant difference on a "
               "few folds is weak evidence of equivalence."))
