"""The paper's claims, tested on this sweep's numbers: figure, test, p, verdict and power.

Each claim reads the data of the section that computes it, so a claim and its table never
disagree; where that section could not be computed, the claim says why. Verdicts are the four of
:mod:`analysis.verdicts`, each with the power of its design.
"""

from __future__ import annotations

from collections.abc import Mapping

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.claim_rows import alpha_text, reason, row, section_data, untestable, where
from qmoe.analysis.claims_variance import seed_variance_claims, variance_claims
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.power import detectable_difference_ind
from qmoe.analysis.verdicts import LEVEL, directional, equivalence, threshold

TITLE = "Claims of the paper"
COLLAPSE = 0.95  # "collapses": one expert takes at least 95% of the samples
SMALL_ALPHA = 0.05  # "small α": the paper's 0.02 and anything up to 0.05


def bit_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    """q4 ≈ q16 (TOST within ±margin) and q2 < q16 (the bits section's test), per dataset."""
    df = section_data(sections, "bits")
    out = []
    for claim, bits in (("q4", 4), ("q2", 2)):
        if df is None:
            out.append(untestable(claim, reason(sections, "bits")))
            continue
        rows = df[df["bits"] == bits]
        if rows.empty:
            out.append(untestable(claim, f"no q{bits} model in the sweep"))
        for r in rows.to_dict("records"):
            place = where(r, ctx)
            pct = (f"{fmt.num(100 * r['pct_of_16'], '.1f')}% of 16-bit on the {r['n_pairs']} paired fold(s) "
                   f"(Δ {fmt.num(r['mean_diff'], '+.3f')} [{fmt.num(r['ci_low'], '+.3f')}, "
                   f"{fmt.num(r['ci_high'], '+.3f')}])" if fmt.finite(r["pct_of_16"]) else "-")
            if r["n_pairs"] < 2 or not fmt.finite(r["p_t"]):
                out.append(untestable(claim, f"{pct}; only {r['n_pairs']} paired fold(s), a test needs two", place))
                continue
            m = int(r["n_tests"])
            if claim == "q4":
                verdict = equivalence(r["mean_diff"], ctx.margin, r["p_tost_adj"], r["p_out_adj"])
                power = (f"TOST has 80% power (true Δ = 0, {alpha_text(m)}) only for margins ≥ "
                         f"{fmt.num(r['tost_margin80'], '.3f')} F1; the margin here is {ctx.margin:g}")
                out.append(row(claim, place, pct, r["p_tost_adj"], verdict, power=power,
                               test=f"TOST ±{ctx.margin:g} F1, {r['test']}"))
            else:
                verdict = directional(r["mean_diff"], r["p_adj"], claimed_sign=-1)
                power = (f"80% power for |Δ| ≥ {fmt.num(r['detectable'], '.3f')} F1 "
                         f"(n = {r['n_pairs']}, {alpha_text(m)})")
                out.append(row(claim, place, pct, r["p_adj"], verdict, power=power, test=r["test"]))
    return out


def collapse_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    """Small α: does one expert take ≥ 95% of the samples (descriptive, no test)?"""
    df = section_data(sections, "curiosity")
    if df is None:
        return [untestable("collapse", reason(sections, "curiosity"))]
    small = df[(df["alpha"] > 0) & (df["alpha"] <= SMALL_ALPHA)]
    if small.empty:
        return [untestable("collapse", f"no small α (0 < α ≤ {SMALL_ALPHA:g}; the paper's is 0.02) in the sweep")]
    out = []
    for r in small.to_dict("records"):
        place = where(r, ctx, r["label"])
        if not fmt.finite(r["top_share"]):
            out.append(untestable("collapse", "no routing shares recorded", place))
            continue
        figure = (f"{fmt.percent(r['top_share'], 0)} of samples to {r['top_expert']} on average "
                  f"(most in one trial: {fmt.percent(r['max_fold_share'], 0)})")
        out.append(row("collapse", place, figure, float("nan"), threshold(r["top_share"], COLLAPSE, r["max_fold_share"]),
                       test=f"descriptive: ≥ {100 * COLLAPSE:.0f}% to one expert", power="descriptive (no test)"))
    return out


def confidence_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    """The highest-precision expert's samples are less confident (Welch, pooled test samples)."""
    df = section_data(sections, "specialisation", "specialisation_tests")
    if df is None:
        return [untestable("confidence", reason(sections, "specialisation"))]
    cur = df[df["alpha"] > 0]
    if cur.empty:
        return [untestable("confidence", "no curiosity (α > 0) mixture with routing files")]
    out = []
    m = max(int(df["p"].notna().sum()), 1)
    for r in cur.to_dict("records"):
        place = where(r, ctx, str(r["model"]))
        if not r["high_expert"] or not fmt.finite(r["p"]):
            out.append(untestable("confidence", "no test: no single highest-precision expert with ≥ 2 samples "
                                                "and ≥ 2 others", place))
            continue
        figure = (f"{r['high_expert']}: {fmt.percent(r['rel_diff'], 1, signed=True)} confidence "
                  f"({fmt.num(r['conf_high'], '.3f')} vs {fmt.num(r['conf_rest'], '.3f')})")
        least = detectable_difference_ind(int(r["n_high"]), int(r["n_rest"]), r["sd_pooled"], LEVEL / m)
        power = (f"80% power for |difference| ≥ {fmt.percent(least / r['conf_rest'], 1)} of the others' confidence "
                 f"(n = {r['n_high']} / {r['n_rest']} samples, {alpha_text(m)}; samples of one fold are not "
                 "independent, so this is optimistic)" if fmt.finite(least) and r["conf_rest"] else "-")
        out.append(row("confidence", place, figure, r["p_adj"],
                       directional(r["rel_diff"], r["p_adj"], claimed_sign=-1), test="Welch t", power=power))
    return out


def claims_section(ctx: Context, sections: Mapping[str, Section]) -> Section:
    """One row per claim and place it can be tested (or one 'not testable here' row with why)."""
    data = (bit_claims(ctx, sections) + variance_claims(ctx, sections) + seed_variance_claims(ctx, sections)
            + collapse_claims(ctx, sections) + confidence_claims(ctx, sections))
    df = pd.DataFrame(data)
    rows = [{"claim": r["claim"], "where": r["where"], "figure": r["figure"], "test": r["test"],
             "p (adj.)": fmt.pvalue(r["p"]), "verdict": r["verdict"], "power of this design": r["power"],
             "paper": r["paper"]} for r in data]
    return Section(
        key="claims", title=TITLE, tables=(Table(key="claims", title="Claims", data=df, display=ctx.display(rows)),),
        intro=(f"p is the adjusted p ({ctx.correction.value}) of the test named, from the section that computes it. "
               f"Verdicts: holds = significant (p < {LEVEL}) in the claimed direction; contradicted = significant the "
               "other way (for '≈': the difference lies significantly beyond the margin); not shown = the estimate "
               "points the claimed way but the test is not significant, or the design cannot reach p < "
               f"{LEVEL} at all; no effect seen = the estimate points against the claim (or is 0), not significant; "
               "not testable here = no test could run. '≈ 16-bit' is an equivalence test (TOST, margin "
               f"±{ctx.margin:g} F1, --margin), never a non-significant difference; the correction only raises the "
               "TOST p, so it never makes equivalence easier to claim. Ratios ('% of 16-bit', variance ratios) use "
               "exactly the paired folds and seeds of the test. Power: the smallest effect this design finds 80% of "
               "the time at the corrected level, or the smallest p the test can reach here. 'collapses' means one "
               f"expert takes ≥ {100 * COLLAPSE:.0f}% of the samples on average (descriptive; contradicted when no "
               "single trial reaches it)."))
