"""Every statistic of analysis.stats against a direct scipy / statsmodels / formula computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as ss
from statsmodels.stats.multitest import multipletests

from qmoe.analysis import stats
from qmoe.errors import ConfigError

A = np.array([0.822, 0.843, 0.799, 0.827, 0.804])  # candidate, one value per fold
B = np.array([0.815, 0.842, 0.797, 0.826, 0.805])  # reference, same folds
RATIO = 400 / 1600  # n_test / n_train


def test_mean_std_uses_ddof_1_and_skips_missing() -> None:
    mean, std, n = stats.mean_std([0.1, 0.2, np.nan, 0.4])
    assert n == 3
    assert mean == pytest.approx(np.mean([0.1, 0.2, 0.4]))
    assert std == pytest.approx(np.std([0.1, 0.2, 0.4], ddof=1))
    assert math.isnan(stats.mean_std([0.5])[1])


def test_paired_t_is_scipy_ttest_rel() -> None:
    ref = ss.ttest_rel(A, B)
    assert stats.paired_t(A, B) == pytest.approx((ref.statistic, ref.pvalue))


def test_wilcoxon_is_scipy_wilcoxon() -> None:
    ref = ss.wilcoxon(A, B)
    assert stats.wilcoxon(A, B) == pytest.approx((ref.statistic, ref.pvalue))


def test_nadeau_bengio_from_its_formula() -> None:
    d = A - B
    t = d.mean() / math.sqrt((1 / len(d) + RATIO) * d.var(ddof=1))
    p = 2 * ss.t.sf(abs(t), df=len(d) - 1)
    assert stats.nadeau_bengio(A, B, RATIO) == pytest.approx((t, p))
    # the correction only ever widens: its p is never below the plain paired t's
    assert stats.nadeau_bengio(A, B, RATIO)[1] >= stats.paired_t(A, B)[1]
    assert stats.nadeau_bengio(A, B, 0.0)[0] == pytest.approx(ss.ttest_rel(A, B).statistic)


def test_cohens_dz_and_hedges_g() -> None:
    d = A - B
    assert stats.cohens_dz(A, B) == pytest.approx(d.mean() / d.std(ddof=1))
    n1, n2 = len(A), len(B)
    pooled = math.sqrt(((n1 - 1) * A.var(ddof=1) + (n2 - 1) * B.var(ddof=1)) / (n1 + n2 - 2))
    g = (A.mean() - B.mean()) / pooled * (1 - 3 / (4 * (n1 + n2) - 9))
    assert stats.hedges_g(A, B) == pytest.approx(g)


def test_bootstrap_ci_is_seeded_scipy_and_contains_the_mean_difference() -> None:
    d = A - B
    ref = ss.bootstrap((d,), np.mean, n_resamples=9999, confidence_level=0.95, method="BCa",
                       rng=np.random.default_rng(0))
    lo, hi = stats.bootstrap_ci(A, B, seed=0)
    assert (lo, hi) == pytest.approx((ref.confidence_interval.low, ref.confidence_interval.high))
    assert lo <= d.mean() <= hi
    assert stats.bootstrap_ci(A, B, seed=0) == (lo, hi)  # deterministic
    assert stats.bootstrap_ci(A, A) == (0.0, 0.0)  # identical differences: the degenerate interval


def test_levene_is_median_centred() -> None:
    ref = ss.levene(A, B, center="median")
    assert stats.levene_median(A, B) == pytest.approx((ref.statistic, ref.pvalue))
    assert stats.levene_median(A, B) != pytest.approx(tuple(ss.levene(A, B, center="mean")))


def test_variance_reduction() -> None:
    assert stats.variance_reduction(A, B) == pytest.approx(1 - A.var(ddof=1) / B.var(ddof=1))
    assert math.isnan(stats.variance_reduction(A, np.ones(5)))


def test_welch_is_ttest_ind_unequal_var() -> None:
    x, y = np.array([0.5, 0.6, 0.55, 0.58]), np.array([0.7, 0.72, 0.69, 0.75, 0.71, 0.8])
    ref = ss.ttest_ind(x, y, equal_var=False)
    assert stats.welch(x, y) == pytest.approx((ref.statistic, ref.pvalue))


@pytest.mark.parametrize("method", ["bonferroni", "holm"])
def test_adjust_is_multipletests_and_keeps_nan(method: str) -> None:
    p = np.array([0.01, 0.04, np.nan, 0.03, 0.5])
    got = stats.adjust(p, method)
    finite = ~np.isnan(p)
    assert got[finite] == pytest.approx(multipletests(p[finite], method=method)[1])
    assert math.isnan(got[2])


def test_correction_parse_rejects_unknown() -> None:
    assert stats.Correction.parse("HOLM") is stats.Correction.HOLM
    with pytest.raises(ConfigError, match="--correction 'fdr'.*bonferroni, holm"):
        stats.Correction.parse("fdr")


def test_too_few_values_give_nan_not_errors() -> None:
    one = np.array([0.8])
    for value in (*stats.paired_t(one, one), *stats.wilcoxon(one, one), *stats.nadeau_bengio(one, one, RATIO),
                  stats.cohens_dz(one, one), stats.hedges_g(one, one), *stats.bootstrap_ci(one, one),
                  *stats.levene_median(one, one), *stats.welch(one, one)):
        assert math.isnan(value)


def test_compare_paired_bundles_the_same_numbers() -> None:
    c = stats.compare_paired(A, B, test_train_ratio=RATIO, seed=0)
    assert c.n == 5 and c.mean_diff == pytest.approx((A - B).mean())
    assert c.p_t == pytest.approx(ss.ttest_rel(A, B).pvalue)
    assert c.p_wilcoxon == pytest.approx(ss.wilcoxon(A, B).pvalue)
    ci = ss.ttest_rel(A, B).confidence_interval()
    assert (c.ci_low, c.ci_high) == pytest.approx((ci.low, ci.high))
    # at n = 5 no bootstrap interval: here BCa would exclude 0 where the t-interval (p = 0.19) does not
    assert math.isnan(c.boot_low) and stats.bootstrap_ci(A, B, seed=0)[0] > 0 > c.ci_low
    rng = np.random.default_rng(3)
    a, b = rng.normal(0.8, 0.02, 25), rng.normal(0.79, 0.02, 25)
    big = stats.compare_paired(a, b, test_train_ratio=RATIO, seed=0)
    assert (big.boot_low, big.boot_high) == stats.bootstrap_ci(a, b, seed=0)  # from BOOTSTRAP_MIN_N pairs on


def test_stars() -> None:
    assert [stats.stars(p) for p in (0.0005, 0.005, 0.03, 0.2, math.nan)] == ["***", "**", "*", "ns", ""]
