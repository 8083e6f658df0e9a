"""Pairing by (split_seed, fold, seed): ratios on the paired cells, seeds averaged per fold, repeats."""

from __future__ import annotations

import math

import numpy as np
import pytest
from analysis_fakes import MIX, make_row, ok_row
from scipy import stats as ss

from qmoe.analysis.aggregate import pair
from qmoe.analysis.load import load_results
from qmoe.analysis.meantest import BOUCKAERT_FRANK, PAIRED_T
from qmoe.analysis.report import build_report

Q16 = [0.82, 0.84, 0.50, 0.83, 0.81]  # fold 3 is a disaster for q16 only
Q4 = [0.81, 0.83, None, 0.82, 0.80]  # q4 errored on fold 3


def test_percent_of_16_bit_uses_the_paired_folds_only(write_table) -> None:
    rows = [ok_row("q16", f, v) for f, v in enumerate(Q16, 1)]
    rows += [ok_row("q4", f, v) for f, v in enumerate(Q4, 1) if v is not None]
    rows.append(make_row(model="q4", fold=3, status="error", error="boom"))
    report = build_report(write_table(rows), plots=False)
    q4 = report.section("bits").tables[0].data.query("bits == 4").iloc[0]
    keep = [0, 1, 3, 4]
    paired = np.mean([Q4[i] for i in keep]) / np.mean([Q16[i] for i in keep])
    unpaired = np.mean([v for v in Q4 if v is not None]) / np.mean(Q16)
    assert q4["pct_of_16"] == pytest.approx(paired)
    assert abs(paired - unpaired) > 0.05  # the crafted table tells the two apart: 98.8% vs 106%
    claim = report.section("claims").tables[0].data.query("claim_id == 'q4'").iloc[0]
    assert f"{100 * paired:.1f}% of 16-bit on the 4 paired fold(s)" in claim["figure"]


def seeded_rows(n_seeds: int, *, drop: tuple[int, int] | None = None) -> list[dict]:
    rng = np.random.default_rng(9)
    rows = []
    for model, shift in (("q16", 0.0), ("q4", -0.004)):
        for f in range(1, 6):
            for s in range(n_seeds):
                if model == "q4" and (f, s) == drop:
                    continue
                rows.append(ok_row(model, f, 0.8 + 0.01 * f + shift + rng.normal(0, 0.003), seed=s,
                                   trial_key=f"{model}-{f}-{s}"))
    return rows


def test_seeds_are_averaged_per_fold_and_pairs_are_cells(write_table) -> None:
    results = load_results(write_table(seeded_rows(4, drop=(2, 1))))
    p = pair(results.ok, "q4|a=0|top_k=1|curiosity=kl|hparams_source=default",
             "q16|a=0|top_k=1|curiosity=kl|hparams_source=default", "f1_macro")
    assert p.n == 5 and p.n_cells == 19 and p.n_seeds == 4
    assert "lacks 1 cell(s): fold 2 seed 1" in p.missing
    ok = results.ok
    cell = (ok["fold"] == 2) & (ok["seed"] != 1)  # fold 2: only the seeds both have
    assert p.a[1] == pytest.approx(ok.loc[cell & (ok["model"] == "q4"), "f1_macro"].mean())
    assert p.b[1] == pytest.approx(ok.loc[cell & (ok["model"] == "q16"), "f1_macro"].mean())


def test_tests_on_fold_means_and_bouckaert_frank_on_cells(write_table) -> None:
    report = build_report(write_table(seeded_rows(4)), plots=False, references=["q16"])
    sig = report.section("significance").tables[0].data.iloc[0]
    bits = report.section("bits").tables[0].data.query("bits == 4").iloc[0]
    results = load_results(write_table(seeded_rows(4), name="again"))
    ok = results.ok
    a = ok[ok["model"] == "q4"].groupby("fold")["f1_macro"].mean().to_numpy()
    b = ok[ok["model"] == "q16"].groupby("fold")["f1_macro"].mean().to_numpy()
    assert sig["n"] == 5 and sig["n_cells"] == 20
    assert sig["p_t"] == pytest.approx(ss.ttest_rel(a, b).pvalue)  # folds, seeds averaged
    assert bits["test"] == PAIRED_T and bits["p_t"] == pytest.approx(ss.ttest_rel(a, b).pvalue)
    ca = ok[ok["model"] == "q4"].sort_values(["fold", "seed"])["f1_macro"].to_numpy()
    cb = ok[ok["model"] == "q16"].sort_values(["fold", "seed"])["f1_macro"].to_numpy()
    d, ratio = ca - cb, 400 / 1600
    t = d.mean() / math.sqrt((1 / 20 + ratio) * d.var(ddof=1))  # Bouckaert & Frank: 1/(k r) + n2/n1
    assert sig["p_bf"] == pytest.approx(2 * ss.t.sf(abs(t), 19))
    display = report.section("significance").tables[0].display
    assert "p (B-F, cells)" in display.columns and "95% CI (t)" in display.columns
    assert any("5 × 4" == v for v in report.section("decomposition").tables[0].display["folds × seeds"])
    assert any("4 seed(s) per fold" in h for h in report.header)


def test_repeated_splits_use_bouckaert_frank(write_table) -> None:
    rng = np.random.default_rng(10)
    rows = []
    for split in range(3):
        for model, shift in (("q16", 0.0), ("q4", -0.003)):
            rows += [ok_row(model, f, 0.8 + shift + rng.normal(0, 0.01), split_seed=split,
                            trial_key=f"{model}-{f}-{split}") for f in range(1, 6)]
    bits = build_report(write_table(rows), plots=False).section("bits").tables[0].data.query("bits == 4").iloc[0]
    q4 = np.array([r["f1_macro"] for r in rows if r["model"] == "q4"])
    q16 = np.array([r["f1_macro"] for r in rows if r["model"] == "q16"])
    d = q4 - q16
    t = d.mean() / math.sqrt((1 / 15 + 0.25) * d.var(ddof=1))
    assert bits["test"] == BOUCKAERT_FRANK and bits["n_pairs"] == 15
    assert bits["p_t"] == pytest.approx(2 * ss.t.sf(abs(t), 14))
    half = ss.t.ppf(0.975, 14) * math.sqrt((1 / 15 + 0.25) * d.var(ddof=1))
    assert (bits["ci_low"], bits["ci_high"]) == pytest.approx((d.mean() - half, d.mean() + half))


def test_entropy_curiosity_is_compared_with_its_own_plain_routing(write_table) -> None:
    rows = []
    for variant, shift in (("kl", 0.0), ("entropy", 0.02)):
        for alpha in (0.0, 0.3):
            rows += [ok_row(MIX, f, 0.7 + shift + alpha / 10 + 0.01 * f, alpha=alpha, curiosity=variant,
                            trial_key=f"{variant}-{alpha}-{f}") for f in range(1, 4)]
    cur = build_report(write_table(rows), plots=False).section("curiosity").tables[0].data
    for variant in ("kl", "entropy"):
        row = cur[(cur["alpha"] == 0.3) & (cur["curiosity"] == variant)].iloc[0]
        base = cur[(cur["alpha"] == 0) & (cur["curiosity"] == variant)].iloc[0]
        assert row["reference_config"] == base["config"]
