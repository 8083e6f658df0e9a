"""The report's sections on fixed tables, each number checked against a direct computation."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fakes import F1, MIX, MIX_F1, MIX_SHARES, frame, make_row, ok_row, paper_rows, write_routing
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests

from qmoe.analysis.report import build_report
from qmoe.errors import ConfigError


@pytest.fixture(scope="module")
def paper_path(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("paper")
    rows = paper_rows()
    frame(rows).to_parquet(folder / "results.parquet")
    write_routing(folder / "routing", rows)
    return folder / "results.parquet"


@pytest.fixture(scope="module")
def report(paper_path: Path):
    return build_report(paper_path, plots=False)


def data(report, key: str, table: str | None = None) -> pd.DataFrame:
    section = report.section(key)
    assert section.reason is None, section.reason
    return next(t.data for t in section.tables if table is None or t.key == table)


def test_summary_is_mean_and_std_ddof1_over_folds(report) -> None:
    df = data(report, "summary", "summary")
    for model, values in F1.items():
        row = df[df["config"].str.startswith(f"{model}|")].iloc[0]
        assert row["f1_macro_mean"] == pytest.approx(np.mean(values))
        assert row["f1_macro_std"] == pytest.approx(np.std(values, ddof=1))
        assert row["n_folds"] == 5
    shown = report.section("summary").tables[0].display
    q4 = shown[shown["model"] == "Q4-Base"].iloc[0]
    assert q4["F1 macro"] == f"{np.mean(F1['q4']):.3f} ± {np.std(F1['q4'], ddof=1):.3f}"


@pytest.mark.parametrize("correction", ["bonferroni", "holm"])
def test_bits_percent_of_16_and_paired_t(paper_path: Path, correction: str) -> None:
    df = data(build_report(paper_path, plots=False, correction=correction), "bits")
    ref = np.array(F1["q16"])
    tested = df[df["bits"] != 16].sort_values("bits")
    expected_p = [ss.ttest_rel(F1[f"q{b}"], ref).pvalue for b in tested["bits"]]
    assert list(tested["p_t"]) == pytest.approx(expected_p)
    assert list(tested["p_adj"]) == pytest.approx(multipletests(expected_p, method=correction)[1])
    for r in tested.itertuples():
        assert r.pct_of_16 == pytest.approx(np.mean(F1[f"q{r.bits}"]) / ref.mean())


def test_curiosity_variance_reduction_levene_and_shares(report) -> None:
    df = data(report, "curiosity").sort_values("alpha")
    base = np.array(MIX_F1[0.0])
    cur = df[df["alpha"] > 0]
    for r in cur.itertuples():
        x = np.array(MIX_F1[r.alpha])
        assert r.var_reduction == pytest.approx(1 - x.var(ddof=1) / base.var(ddof=1))
        assert r.levene_p == pytest.approx(ss.levene(x, base, center="median").pvalue)
    expected = [ss.levene(MIX_F1[a], base, center="median").pvalue for a in cur["alpha"]]
    assert list(cur["p_adj"]) == pytest.approx(multipletests(expected, method="bonferroni")[1])
    row = df[df["alpha"] == 0.2].iloc[0]
    assert {e: row[f"share:{e}"] for e in ("bitnet", "q4", "q8")} == pytest.approx(MIX_SHARES[0.2])


def test_significance_every_statistic_against_direct_computation(report) -> None:
    df = data(report, "significance", "significance_f1_macro")
    row = df[(df["candidate"] == "Q4-Base") & (df["reference"] == "FP32-Base")].iloc[0]
    a, b = np.array(F1["q4"]), np.array(F1["fp32"])
    d = a - b
    assert row["n"] == 5 and row["mean_diff"] == pytest.approx(d.mean())
    assert row["p_t"] == pytest.approx(ss.ttest_rel(a, b).pvalue)
    assert row["p_wilcoxon"] == pytest.approx(ss.wilcoxon(a, b).pvalue)
    ratio = 400 / 1600  # from the rows' n_test and n_train
    t_nb = d.mean() / math.sqrt((1 / 5 + ratio) * d.var(ddof=1))
    assert row["test_train_ratio"] == pytest.approx(ratio)
    assert row["p_nb"] == pytest.approx(2 * ss.t.sf(abs(t_nb), 4))
    assert row["dz"] == pytest.approx(d.mean() / d.std(ddof=1))
    pooled = math.sqrt((a.var(ddof=1) + b.var(ddof=1)) / 2)
    assert row["hedges_g"] == pytest.approx((a.mean() - b.mean()) / pooled * (1 - 3 / 31))
    # at 5 folds the interval shown is the paired t-interval (BCa is too narrow there): it excludes
    # 0 exactly when the paired t is significant, and no bootstrap interval is reported
    ci = ss.ttest_rel(a, b).confidence_interval()
    assert (row["ci_low"], row["ci_high"]) == pytest.approx((ci.low, ci.high))
    assert row["ci_low"] <= row["mean_diff"] <= row["ci_high"]
    assert math.isnan(row["boot_low"]) and math.isnan(row["boot_high"])
    for r in df.itertuples():
        assert (r.ci_low > 0 or r.ci_high < 0) == (r.p_t < 0.05)
    # one family: every F1 comparison of the protocol (6 single models vs fp32 + 3 alphas vs plain)
    assert len(df) == 9
    assert list(df["p_adj"]) == pytest.approx(multipletests(df["p_t"], method="bonferroni")[1])
    mix = df[df["reference"] == "BitNet-Q4/8-QMoE"]
    assert sorted(mix["candidate"]) == [f"BitNet-Q4/8-QMoE-C α={a}" for a in ("0.02", "0.2", "0.3")]


def test_specialisation_welch_on_pooled_routing_files(report, paper_path: Path) -> None:
    tests = data(report, "specialisation", "specialisation_tests")
    row = tests[tests["model"] == "BitNet-Q4/8-QMoE-C α=0.2"].iloc[0]
    results = pd.read_parquet(paper_path)
    keys = results[(results["model"] == MIX) & (results["alpha"] == 0.2)]["trial_key"]
    samples = pd.concat([pd.read_parquet(paper_path.parent / "routing" / f"{k}.parquet") for k in keys])
    high = samples[samples["expert"] == "q8"]["confidence"]
    rest = samples[samples["expert"] != "q8"]["confidence"]
    ref = ss.ttest_ind(high, rest, equal_var=False)
    assert row["high_expert"] == "q8" and row["n_high"] == len(high) and row["n_rest"] == len(rest)
    assert (row["t"], row["p"]) == pytest.approx((ref.statistic, ref.pvalue))
    assert row["rel_diff"] == pytest.approx((high.mean() - rest.mean()) / rest.mean())
    experts = data(report, "specialisation", "specialisation_experts")
    q8 = experts[(experts["model"] == row["model"]) & (experts["expert"] == "q8")].iloc[0]
    assert q8["confidence_mean"] == pytest.approx(high.mean()) and bool(q8["highest"])


def test_claims_on_the_paper_like_table(report) -> None:
    claims = data(report, "claims")
    verdict = claims.groupby("claim_id")["verdict"].apply(list).to_dict()
    assert verdict["q4"] == ["holds"] and verdict["q2"] == ["holds"] and verdict["collapse"] == ["holds"]
    conf = claims[claims["claim_id"] == "confidence"]
    assert list(conf["verdict"]) == ["not testable here", "holds", "holds"]  # q8 gets nothing at α = 0.02
    variance = data(report, "curiosity").query("alpha > 0")
    for r in claims[claims["claim_id"] == "variance"].itertuples():
        # every α cuts the fold variance here (the estimate points the claimed way), but Levene on
        # 5 folds is not significant after correcting over 3 α: "not shown", never a negative verdict
        assert (variance["var_reduction"] > 0).all()
        assert r.p >= 0.05 and r.verdict == "not shown"
        assert "Levene cannot reach p < 0.0039 with 5 folds (0.012 after bonferroni over 3)" in r.power
    assert "does not hold" not in set(claims["verdict"])


def test_a_missing_pair_is_named_and_not_computed_on(write_table) -> None:
    rows = [r for r in paper_rows() if not (r["model"] == "q4" and r["fold"] == 3)]
    rows.append(make_row(model="q4", fold=3, status="error", error="boom"))
    report = build_report(write_table(rows), plots=False)
    bits = report.section("bits")
    assert any("Q4-Base lacks fold 3 (errored); tested on the 4 paired fold(s)" in n for n in bits.notes)
    q4 = bits.tables[0].data.query("bits == 4").iloc[0]
    keep = [0, 1, 3, 4]
    assert q4["n_pairs"] == 4
    assert q4["p_t"] == pytest.approx(ss.ttest_rel(np.array(F1["q4"])[keep], np.array(F1["q16"])[keep]).pvalue)
    sig = report.section("significance")
    assert any("Q4-Base lacks fold 3" in n for n in sig.notes)


def test_a_single_fold_says_what_cannot_be_tested(write_table) -> None:
    report = build_report(write_table(paper_rows(folds=(1,))), plots=False)
    assert any("only one fold" in n for n in report.section("bits").notes)
    assert any("only one fold" in n for n in report.section("curiosity").notes)
    assert any("only one fold" in n for n in report.section("significance").notes)
    summary = report.section("summary")
    assert "(n=1)" in summary.tables[0].display["F1 macro"].iloc[0]
    claims = data(report, "claims")
    tested = claims[claims["claim_id"].isin(["q4", "q2", "variance"])]
    assert set(tested["verdict"]) == {"not testable here"}


def test_one_model_only(write_table) -> None:
    report = build_report(write_table([ok_row("q4", f, v) for f, v in enumerate(F1["q4"], 1)]), plots=False)
    assert report.section("summary").reason is None
    assert report.section("sizes").reason is None
    reasons = {s.key: s.reason for s in report.sections}
    assert "no 16-bit (q16) reference" in reasons["bits"]
    assert "no mixtures" in reasons["mixtures"] and "no mixtures" in reasons["curiosity"]
    assert "no mixtures" in reasons["specialisation"]
    assert "no fp32" in reasons["significance"] and "--reference" in reasons["significance"]
    claims = data(report, "claims")
    assert set(claims["verdict"]) == {"not testable here"}
    assert all(len(c) > 10 for c in claims["figure"])  # each says why


def test_without_routing_files_specialisation_says_why(write_table) -> None:
    report = build_report(write_table(paper_rows()), plots=False)
    assert "no per-sample routing folder" in report.section("specialisation").reason
    assert data(report, "claims").query("claim_id == 'confidence'")["verdict"].tolist() == ["not testable here"]


def test_two_protocols_are_never_mixed(write_table) -> None:
    rows = paper_rows() + [r | {"protocol": "paper", "trial_key": r["trial_key"] + "-p",
                                "f1_macro": r["f1_macro"] + 0.01} for r in paper_rows()]
    report = build_report(write_table(rows), plots=False)
    assert any("both protocols are present" in h for h in report.header)
    sig = data(report, "significance", "significance_f1_macro")
    assert set(sig["protocol"]) == {"clean", "paper"} and set(sig["n"]) == {5}
    for protocol, g in sig.groupby("protocol"):
        assert list(g["p_adj"]) == pytest.approx(multipletests(g["p_t"], method="bonferroni")[1])
    assert "protocol" in report.section("summary").tables[0].display.columns


def test_reference_choice_and_unknown_reference(paper_path: Path) -> None:
    report = build_report(paper_path, plots=False, references=["Q16-Base"])
    sig = data(report, "significance", "significance_f1_macro")
    assert set(sig.loc[~sig["candidate"].str.contains("QMoE"), "reference"]) == {"Q16-Base"}
    with pytest.raises(ConfigError, match="--reference 'q3' is not a model of this sweep; known: .*fp32"):
        build_report(paper_path, plots=False, references=["q3"])
    with pytest.raises(ConfigError, match="--correction"):
        build_report(paper_path, plots=False, correction="sidak")


def test_a_mixture_reference_compares_every_mixture_with_its_plain_routing(paper_path: Path) -> None:
    report = build_report(paper_path, plots=False, references=[MIX])
    sig = data(report, "significance", "significance_f1_macro")
    assert set(sig.loc[sig["candidate"].str.contains("QMoE"), "reference"]) == {"BitNet-Q4/8-QMoE"}


def test_latency_sections_name_the_latency_mode_and_say_a_mix(write_table) -> None:
    rows = paper_rows()
    one = build_report(write_table([r | {"latency_mode": "isolated"} for r in rows], name="iso"), plots=False)
    for key in ("summary", "mixtures", "bits", "significance"):
        notes = [n for n in one.section(key).notes if n.startswith("latency mode")]
        assert notes == ["latency mode: isolated (each saved model timed alone after the sweep, one at a time, "
                         "on one core)"], (key, one.section(key).notes)
    mixed = [r | {"latency_mode": "isolated" if i % 3 else "in-sweep"} for i, r in enumerate(rows)]
    report = build_report(write_table(mixed, name="mixed"), plots=False)
    n_in = sum(1 for r in mixed if r["latency_mode"] == "in-sweep")
    note = next(n for n in report.section("summary").notes if n.startswith("latency mode"))
    assert note.startswith(f"latency mode: MIXED ({len(rows) - n_in} isolated, {n_in} in-sweep rows)")
