"""p-value floors and detectable effects, each against an independent computation."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest
from scipy import stats as ss
from statsmodels.stats.weightstats import ttost_paired

from qmoe.analysis import power


@pytest.mark.parametrize("n", [3, 4, 5, 6, 8])
def test_wilcoxon_floor_is_2_over_2_to_the_n_and_scipys_most_extreme_p(n: int) -> None:
    assert power.wilcoxon_floor(n) == 2 / 2 ** n  # exact: a power of two
    d = np.arange(1, n + 1) / 100  # every difference positive, no ties: the most extreme outcome
    assert ss.wilcoxon(d, method="exact").pvalue == pytest.approx(power.wilcoxon_floor(n), rel=1e-12)


def _brute_force_levene_min(n1: int, n2: int, levels: int) -> float:
    # Every pair of groups on an integer grid (order within a group is irrelevant), each scored
    # by scipy's own median-centred Levene: an independent search for the smallest p. Zero
    # within-group spread at two different levels gives F = inf and p = 0; equal levels give NaN.
    best = 1.0
    grid = range(levels)
    for g1 in itertools.combinations_with_replacement(grid, n1):
        for g2 in itertools.combinations_with_replacement(grid, n2):
            with np.errstate(all="ignore"):
                p = ss.levene(g1, g2, center="median").pvalue
            if math.isfinite(p):
                best = min(best, p)
    return best


@pytest.mark.parametrize("n1, n2, levels", [(3, 3, 5), (3, 5, 4), (5, 5, 4), (3, 4, 4)])
def test_levene_floor_matches_a_brute_force_search(n1: int, n2: int, levels: int) -> None:
    floor = power.levene_floor(n1, n2)
    found = _brute_force_levene_min(n1, n2, levels)
    # the search reaches the floor (the extreme configuration lies on the grid) and never beats it
    assert found == pytest.approx(floor, abs=1e-12)
    if n1 % 2 == 0 or n2 % 2 == 0:
        assert floor == 0.0
    else:
        assert floor > 0


def test_levene_floor_of_five_folds_is_the_issues_figure() -> None:
    assert power.levene_floor(5, 5) == pytest.approx(0.00395, abs=5e-5)  # "p ≈ 0.004 with 5 folds"
    assert power.corrected_floor(power.levene_floor(5, 5), 7) == pytest.approx(0.0276, abs=5e-4)  # "0.028 / 7"
    assert power.corrected_floor(0.3, 7) == 1.0


def test_detectable_difference_has_80_percent_power_by_the_noncentral_t() -> None:
    n, sd, alpha = 5, 0.02, 0.05
    delta = power.detectable_difference(n, sd, alpha)
    nc, df = delta / sd * math.sqrt(n), n - 1
    crit = ss.t.ppf(1 - alpha / 2, df)
    assert ss.nct.sf(crit, df, nc) + ss.nct.cdf(-crit, df, nc) == pytest.approx(0.8, abs=1e-4)
    assert power.detectable_difference(10, sd, alpha) < delta  # more folds, smaller effects
    assert math.isnan(power.detectable_difference(1, sd, alpha))


def test_detectable_difference_of_independent_samples() -> None:
    n1, n2, sd, alpha = 20, 40, 0.1, 0.05
    delta = power.detectable_difference_ind(n1, n2, sd, alpha)
    df, nc = n1 + n2 - 2, delta / sd / math.sqrt(1 / n1 + 1 / n2)
    crit = ss.t.ppf(1 - alpha / 2, df)
    assert ss.nct.sf(crit, df, nc) + ss.nct.cdf(-crit, df, nc) == pytest.approx(0.8, abs=1e-4)


def test_detectable_variance_ratio_by_simulation() -> None:
    # Sample variances of normal samples with the ratio at the detectable value: the two-sided
    # F-test must reject (on the reduction side) about 80% of the time. 20,000 seeded draws: the
    # binomial standard error is 0.0028, so 0.8 ± 0.012 is a > 4-sigma band.
    df, alpha, n_sim = 9, 0.05, 20_000
    rho = power.detectable_variance_ratio(df, df, alpha)
    rng = np.random.default_rng(11)
    a = rng.normal(0, math.sqrt(rho), (n_sim, df + 1)).var(axis=1, ddof=1)
    b = rng.normal(0, 1, (n_sim, df + 1)).var(axis=1, ddof=1)
    rate = np.mean(a / b < ss.f.ppf(alpha / 2, df, df))
    assert rate == pytest.approx(0.8, abs=0.012)


def test_tost_margin_gives_at_least_80_percent_power_by_simulation() -> None:
    # True difference 0, margin = tost_margin: statsmodels' TOST must show equivalence in at least
    # 80% of 4,000 seeded samples (binomial se 0.0063; the union bound makes it a lower bound).
    n, sd, alpha = 8, 0.01, 0.05
    margin = power.tost_margin(n, sd, alpha)
    rng = np.random.default_rng(5)
    wins = 0
    for _ in range(4000):
        d = rng.normal(0, sd, n)
        wins += ttost_paired(d, np.zeros(n), -margin, margin)[0] < alpha
    rate = wins / 4000
    assert 0.8 - 0.02 <= rate <= 0.95
