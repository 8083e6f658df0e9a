"""What a test could have decided at this n: p-value floors and the smallest detectable effects.

A verdict is only as strong as its design. Each function answers "could this test, with these
group sizes and this many comparisons, have reached p < level at all, and how large must an
effect be to be found 80% of the time?" so that the report can say *not shown (the design cannot
decide)* instead of a negative verdict.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
from scipy import stats
from statsmodels.stats.power import TTestIndPower, TTestPower

POWER = 0.8  # the conventional target power of "the smallest effect this design can detect"


def wilcoxon_floor(n: int) -> float:
    """Smallest two-sided exact p of the Wilcoxon signed-rank test with ``n`` non-zero differences.

    The most extreme outcome (every difference of one sign) has probability 2^-n under the null,
    on each side: ``2 / 2**n`` (0.0625 for 5 folds).
    """
    return min(1.0, 2.0 / 2.0 ** n) if n >= 1 else 1.0


def levene_floor(n1: int, n2: int) -> float:
    """Smallest p the median-centred Levene (Brown-Forsythe) test can give for groups of n1, n2.

    Method: the test is a one-way ANOVA F on ``z = |x - median|``. F is largest when one group's
    z are all 0 (a constant group) and the other group's z are as equal as median centring
    allows: values split evenly at -1 and +1, plus the median itself (z = 0) when the size is
    odd. Both assignments are evaluated with ``scipy.stats.levene`` and the smaller p is kept.
    With an even-sized group both z-groups can be constant, F is unbounded and the floor is 0.
    A brute-force search on tiny groups confirms this is the extreme (tests/analysis).
    """
    if n1 < 2 or n2 < 2:
        return math.nan
    floors = []
    for constant, spread in ((n1, n2), (n2, n1)):
        half = spread // 2
        values = np.array([-1.0] * half + [0.0] * (spread % 2) + [1.0] * half)
        with warnings.catch_warnings():  # F = inf (zero within-group spread) is the point here
            warnings.simplefilter("ignore")
            p = stats.levene(np.zeros(constant), values, center="median").pvalue
        floors.append(0.0 if not math.isfinite(p) else float(p))
    return min(floors)


def corrected_floor(floor: float, m: int) -> float:
    """The floor after a Bonferroni or Holm correction over ``m`` tests: ``min(1, m * floor)``.

    Holm's smallest adjusted p is also ``m`` times the smallest raw p, so both corrections share it.
    """
    return min(1.0, floor * max(m, 1)) if math.isfinite(floor) else math.nan


def detectable_difference(n: int, sd: float, alpha: float, power: float = POWER) -> float:
    """Smallest |mean paired difference| a two-sided paired t-test detects with ``power``.

    ``TTestPower.solve_power`` gives the standardised effect (d_z) for ``n`` pairs at level
    ``alpha``; times the standard deviation of the differences it is in the metric's units.
    """
    if n < 2 or not (math.isfinite(sd) and sd > 0) or not 0 < alpha < 1:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=power,
                                          alternative="two-sided")
    return float(np.asarray(effect).item()) * sd


def detectable_difference_ind(n1: int, n2: int, sd: float, alpha: float, power: float = POWER) -> float:
    """Smallest |mean difference| of two independent samples (pooled ``sd``) found with ``power``."""
    if n1 < 2 or n2 < 2 or not (math.isfinite(sd) and sd > 0) or not 0 < alpha < 1:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        effect = TTestIndPower().solve_power(effect_size=None, nobs1=n1, ratio=n2 / n1, alpha=alpha,
                                             power=power, alternative="two-sided")
    return float(np.asarray(effect).item()) * sd


def tost_margin(n: int, sd: float, alpha: float, power: float = POWER) -> float:
    """Smallest equivalence margin TOST confirms with ``power`` when the true difference is 0.

    Each one-sided test must succeed; by the union bound both do with probability at least
    ``power`` when each has power ``(1 + power) / 2``. So the margin is the one-sided paired-t
    detectable effect at that power (a slight over-statement, never an under-statement).
    """
    if n < 2 or not (math.isfinite(sd) and sd > 0) or not 0 < alpha < 1:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        effect = TTestPower().solve_power(effect_size=None, nobs=n, alpha=alpha, power=(1 + power) / 2,
                                          alternative="larger")
    return float(np.asarray(effect).item()) * sd


def detectable_variance_ratio(df_a: int, df_b: int, alpha: float, power: float = POWER) -> float:
    """Smallest reduction ``var_a / var_b < 1`` the two-sided F-test finds with ``power``.

    With sample variances of independent normal samples, ``s_a^2 / s_b^2 = rho * F(df_a, df_b)``.
    The test rejects (reduction side) when the ratio is below ``F_{alpha/2}``, so its power at
    ``rho`` is ``F.cdf(F_{alpha/2} / rho)``; setting that to ``power`` gives
    ``rho = F.ppf(alpha/2) / F.ppf(power)``. For the robust Levene test this is an optimistic
    bound (under normality the F-test is the most powerful).
    """
    if df_a < 1 or df_b < 1 or not 0 < alpha < 1:
        return math.nan
    return float(stats.f.ppf(alpha / 2, df_a, df_b) / stats.f.ppf(power, df_a, df_b))
