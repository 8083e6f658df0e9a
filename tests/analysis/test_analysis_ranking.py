"""Friedman, Nemenyi and the critical difference against scipy, scikit-posthocs and Demšar's table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import scikit_posthocs as sp
from analysis_fakes import F1, make_row, ok_row
from scipy import stats as ss

from qmoe.analysis.report import build_report

MODELS = ("fp32", "q16", "q4", "q2")


def rows(seeds: int = 2) -> list[dict]:
    rng = np.random.default_rng(12)
    out = []
    for model in MODELS:
        for f, value in enumerate(F1[model], 1):
            out += [ok_row(model, f, value + rng.normal(0, 0.002), seed=s, trial_key=f"{model}-{f}-{s}")
                    for s in range(seeds)]
    return out


def test_friedman_and_nemenyi_on_fold_means(write_table) -> None:
    data = rows()
    section = build_report(write_table(data), plots=True).section("ranking")
    ranks, pairs = (t.data for t in section.tables)
    table = pd.DataFrame(data)
    matrix = table.groupby(["fold", "model"])["f1_macro"].mean().unstack()[list(MODELS)]  # seeds averaged
    chi2, p = ss.friedmanchisquare(*[matrix[m] for m in MODELS])
    assert ranks["friedman_chi2"].iloc[0] == pytest.approx(chi2) and ranks["friedman_p"].iloc[0] == pytest.approx(p)
    assert ranks["blocks"].iloc[0] == 5  # fold units, not the 10 fold x seed cells
    expected = matrix.rank(axis=1, ascending=False).mean()
    got = dict(zip(ranks["model"], ranks["mean_rank"]))
    assert got == pytest.approx({f"{m.upper()}-Base": expected[m] for m in MODELS})
    nemenyi = sp.posthoc_nemenyi_friedman(matrix)
    q4_q2 = pairs[(pairs["a"] == "Q4-Base") & (pairs["b"] == "Q2-Base")].iloc[0]
    assert q4_q2["p_nemenyi"] == pytest.approx(nemenyi.loc["q4", "q2"])
    # Demšar (2006), Table 5: q_0.05 = 2.569 for 4 classifiers
    assert ranks["cd"].iloc[0] == pytest.approx(2.569 * math.sqrt(4 * 5 / (6 * 5)), abs=1e-3)
    assert [p.key for p in section.plots] == ["cd-clean"]


def test_a_missing_block_is_left_out_and_too_few_configs_are_named(write_table) -> None:
    data = [r for r in rows() if not (r["model"] == "q2" and r["fold"] == 4)]
    data.append(make_row(model="q2", fold=4, status="error", error="boom"))
    ranks = build_report(write_table(data), plots=False).section("ranking").tables[0].data
    assert ranks["blocks"].iloc[0] == 4
    two = [r for r in rows() if r["model"] in ("q16", "q4")]
    reason = build_report(write_table(two, name="two"), plots=False).section("ranking").reason
    assert "2 configuration(s)" in reason and "Friedman needs ≥ 3" in reason
