"""The four verdicts (holds, contradicted, not shown, no effect seen) on crafted results tables."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from analysis_fakes import MIX, ok_row

from qmoe.analysis import verdicts
from qmoe.analysis.report import build_report

BASE = 0.75
WIDE = np.array([0.05, -0.05, 0.045, -0.045, 0.04, -0.04, 0.05, -0.05, 0.045, -0.045])  # plain routing, 10 folds
TIGHT = WIDE / 25
SPREAD = np.array([0.03, -0.002, 0.015, -0.025, 0.005, -0.012, 0.02, -0.001, 0.008, -0.03])  # uneven |deviations|


def claims(write_table, rows: list[dict], **kwargs) -> pd.DataFrame:
    report = build_report(write_table(rows), plots=False, **kwargs)
    return report.section("claims").tables[0].data


def mixture_rows(plain: np.ndarray, curious: np.ndarray, *, seeds: int = 1) -> list[dict]:
    rows = []
    for seed in range(seeds):
        for alpha, values in ((0.0, plain), (0.3, curious)):
            rows += [ok_row(MIX, f, BASE + v, alpha=alpha, seed=seed, trial_key=f"{alpha}-{f}-{seed}")
                     for f, v in enumerate(values, 1)]
    return rows


@pytest.mark.parametrize("plain, curious, verdict", [
    (WIDE, TIGHT, "holds"),  # α cuts the fold variance 625-fold: Levene p < 0.001
    (TIGHT, WIDE, "contradicted"),  # α raises it as much
    (SPREAD, SPREAD[::-1] * 0.8, "not shown"),  # a 36% cut that 10 folds cannot confirm
    (SPREAD, SPREAD[::-1] * 1.1, "no effect seen"),  # a small rise, not significant
])
def test_variance_claim_verdicts(write_table, plain, curious, verdict: str) -> None:
    rows = claims(write_table, mixture_rows(plain, curious)).query("claim_id == 'variance'")
    assert list(rows["verdict"]) == [verdict]
    assert (rows["p"].iloc[0] < 0.05) == (verdict in ("holds", "contradicted"))
    assert "80% power only if the variance ratio is ≤" in rows["power"].iloc[0]


def test_a_design_that_cannot_decide_is_never_a_negative_verdict(write_table) -> None:
    # 3 folds: median-centred Levene cannot go below p = 0.116, so even a variance that rises
    # 625-fold under α is "not shown", with the floor stated.
    rows = claims(write_table, mixture_rows(TIGHT[:3], WIDE[:3])).query("claim_id == 'variance'")
    assert list(rows["verdict"]) == ["not shown"]
    assert "Levene cannot reach p < 0.12 with 3 folds" in rows["power"].iloc[0]


def q4_rows(diff: np.ndarray) -> list[dict]:
    q16 = BASE + np.array([0.03, -0.02, 0.01, 0.0, -0.025])
    return ([ok_row("q16", f, v) for f, v in enumerate(q16, 1)]
            + [ok_row("q4", f, v + d) for f, (v, d) in enumerate(zip(q16, diff), 1)])


@pytest.mark.parametrize("diff, verdict", [
    ([0.001, -0.001, 0.0005, -0.0005, 0.0], "holds"),  # within ±0.01, tightly
    ([-0.051, -0.049, -0.05, -0.052, -0.048], "contradicted"),  # 5 points below, tightly
    ([0.02, -0.02, 0.015, -0.018, 0.008], "not shown"),  # mean 0.001 but too noisy to show
    ([-0.035, 0.005, -0.03, 0.01, -0.025], "no effect seen"),  # mean -0.015, noisy
])
def test_equivalence_claim_verdicts(write_table, diff, verdict: str) -> None:
    rows = claims(write_table, q4_rows(np.array(diff))).query("claim_id == 'q4'")
    assert list(rows["verdict"]) == [verdict]
    assert rows["test"].iloc[0].startswith("TOST ±0.01 F1")
    assert "TOST has 80% power" in rows["power"].iloc[0]


def test_the_margin_option_and_the_correction_never_ease_equivalence(write_table) -> None:
    diff = np.array([0.001, -0.001, 0.0005, -0.0005, 0.0])
    assert claims(write_table, q4_rows(diff), margin=0.0005).query("claim_id == 'q4'")["verdict"].tolist() == \
        ["not shown"]
    rows = q4_rows(diff) + [ok_row("q2", f, BASE + 0.01 * f) for f in range(1, 6)]  # a second comparison
    bits = build_report(write_table(rows), plots=False).section("bits").tables[0].data.query("bits != 16")
    assert (bits["p_tost_adj"] >= bits["p_tost"]).all() and (bits["p_out_adj"] >= bits["p_out"]).all()


def test_q2_can_be_contradicted(write_table) -> None:
    q16 = BASE + np.array([0.03, -0.02, 0.01, 0.0, -0.025])
    rows = [ok_row("q16", f, v) for f, v in enumerate(q16, 1)] + \
        [ok_row("q2", f, v + 0.04 + 0.001 * f) for f, v in enumerate(q16, 1)]
    q2 = claims(write_table, rows).query("claim_id == 'q2'")
    assert list(q2["verdict"]) == ["contradicted"] and "80% power for |Δ| ≥" in q2["power"].iloc[0]


def test_seed_variance_claim_needs_seeds_and_decides_with_them(write_table) -> None:
    one = claims(write_table, mixture_rows(WIDE[:5], TIGHT[:5])).query("claim_id == 'variance_seed'")
    assert list(one["verdict"]) == ["not testable here"] and "--seeds" in one["figure"].iloc[0]
    rng = np.random.default_rng(8)
    rows = []
    for seed in range(6):  # plain routing: training noise sd 0.01; α = 0.3: sd 0.002
        for alpha, sd in ((0.0, 0.01), (0.3, 0.002)):
            rows += [ok_row(MIX, f, BASE + 0.02 * f + rng.normal(0, sd), alpha=alpha, seed=seed,
                            trial_key=f"{alpha}-{f}-{seed}") for f in range(1, 6)]
    many = claims(write_table, rows).query("claim_id == 'variance_seed'")
    assert list(many["verdict"]) == ["holds"] and many["p"].iloc[0] < 0.05
    assert "residual variance ratio" in many["figure"].iloc[0] and "df 20/20" in many["power"].iloc[0]


@pytest.mark.parametrize("estimate, p, floor, expected", [
    (0.5, 0.01, 0.0, "holds"), (-0.5, 0.01, 0.0, "contradicted"), (0.5, 0.2, 0.0, "not shown"),
    (-0.5, 0.2, 0.0, "no effect seen"), (0.0, 0.2, 0.0, "no effect seen"), (-0.5, 0.2, 0.1, "not shown"),
    (0.5, float("nan"), 0.0, "not testable here"),
])
def test_directional_rules(estimate: float, p: float, floor: float, expected: str) -> None:
    assert verdicts.directional(estimate, p, claimed_sign=+1, floor_adj=floor) == expected
    assert verdicts.directional(-estimate, p, claimed_sign=-1, floor_adj=floor) == expected


def test_equivalence_and_threshold_rules() -> None:
    assert verdicts.equivalence(0.001, 0.01, 0.01, 0.9) == "holds"
    assert verdicts.equivalence(0.05, 0.01, 0.9, 0.01) == "contradicted"
    assert verdicts.equivalence(0.005, 0.01, 0.2, 0.9) == "not shown"
    assert verdicts.equivalence(0.02, 0.01, 0.9, 0.2) == "no effect seen"
    assert verdicts.threshold(0.97, 0.95, 1.0) == "holds"
    assert verdicts.threshold(0.6, 0.95, 0.7) == "contradicted"
    assert verdicts.threshold(0.8, 0.95, 1.0) == "not shown"
