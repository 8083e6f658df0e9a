"""Every statistic of the report, each through scipy / statsmodels or its textbook formula.

Conventions: a paired comparison takes the candidate ``a`` and the reference ``b`` measured on
the same folds (same order) and reports ``a - b``. A statistic that cannot be computed (too few
values, zero variance) is NaN, never an error.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from enum import Enum

import numpy as np
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.weightstats import ttost_paired

from qmoe.errors import ConfigError

BOOTSTRAP_RESAMPLES = 9999
BOOTSTRAP_SEED = 0
# Below this many paired values the BCa interval of a mean is too narrow (its acceleration and
# bias terms are estimated from the same handful of values; at n = 5 it excluded 0 where the
# paired t did not). The t-interval is exact under normality at any n and is shown instead.
BOOTSTRAP_MIN_N = 20
CONFIDENCE = 0.95


class Correction(str, Enum):
    """Multiple-comparison correction of the p-values of one family of tests."""

    BONFERRONI = "bonferroni"
    HOLM = "holm"

    @classmethod
    def parse(cls, value: str | Correction) -> Correction:
        """``"holm"`` -> ``Correction.HOLM``; ConfigError listing the known names otherwise."""
        try:
            return cls(str(getattr(value, "value", value)).strip().lower())
        except ValueError:
            known = ", ".join(c.value for c in cls)
            raise ConfigError(f"--correction {value!r} is unknown; known: {known}") from None


def _arr(x) -> np.ndarray:
    return np.asarray(x, dtype=float)


def _quiet(func, *args, **kwargs):
    # scipy warns (and returns NaN) on degenerate input such as identical samples; the report
    # shows NaN as "-" with a note, so the warning itself is noise.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return func(*args, **kwargs)
        except ValueError:
            return None


def mean_std(x) -> tuple[float, float, int]:
    """Mean, standard deviation (ddof 1; NaN below two values) and count of the finite values."""
    x = _arr(x)
    x = x[np.isfinite(x)]
    n = len(x)
    mean = float(np.mean(x)) if n else math.nan
    std = float(np.std(x, ddof=1)) if n > 1 else math.nan
    return mean, std, n


def paired_t(a, b) -> tuple[float, float]:
    """Paired t-test (``scipy.stats.ttest_rel``): statistic and two-sided p."""
    if len(_arr(a)) < 2:
        return math.nan, math.nan
    res = _quiet(stats.ttest_rel, _arr(a), _arr(b))
    return (math.nan, math.nan) if res is None else (float(res.statistic), float(res.pvalue))


def nadeau_bengio(a, b, test_train_ratio: float) -> tuple[float, float]:
    """Nadeau-Bengio corrected resampled t-test of the paired differences.

    ``t = mean(d) / sqrt((1/J + n_test/n_train) * var(d))`` with J differences, var ddof 1,
    and a two-sided p from Student's t with J - 1 degrees of freedom. The ``n_test/n_train``
    term inflates the variance for the overlap of training sets across folds.

    Given the k x r cells of r repeats (seeds or seeded splits) of k-fold CV, J = k r and this is
    the corrected repeated k-fold cv test of Bouckaert & Frank (2004):
    ``t = mean(d) / sqrt((1/(k r) + n2/n1) var(d))``, p from ``scipy.stats.t`` with k r - 1 df.
    """
    d = _arr(a) - _arr(b)
    j = len(d)
    if j < 2 or not math.isfinite(test_train_ratio) or test_train_ratio < 0:
        return math.nan, math.nan
    var = float(np.var(d, ddof=1))
    if var == 0:
        return math.nan, math.nan
    t = float(np.mean(d)) / math.sqrt((1.0 / j + test_train_ratio) * var)
    return t, float(2 * stats.t.sf(abs(t), df=j - 1))


def t_interval(a, b, level: float = CONFIDENCE) -> tuple[float, float]:
    """The paired t confidence interval of the mean difference a - b (``ttest_rel(...).confidence_interval``).

    It excludes 0 exactly when the two-sided paired t has p < 1 - level.
    """
    a, b = _arr(a), _arr(b)
    if len(a) < 2:
        return math.nan, math.nan
    d = a - b
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    res = _quiet(stats.ttest_rel, a, b)
    if res is None:
        return math.nan, math.nan
    ci = res.confidence_interval(confidence_level=level)
    return float(ci.low), float(ci.high)


def tost(a, b, margin: float) -> tuple[float, float]:
    """Equivalence of paired a and b within ±margin: TOST p (``statsmodels ttost_paired``) and the
    one-sided p that the difference lies beyond the margin on the side of the estimate.

    TOST p < level shows |mean(a - b)| < margin; the second p < level shows the opposite
    (``scipy.stats.ttest_1samp`` of the differences against ±margin).
    """
    a, b = _arr(a), _arr(b)
    if len(a) < 2 or not (math.isfinite(margin) and margin > 0):
        return math.nan, math.nan
    d = a - b
    if np.all(d == d[0]):  # no spread: the verdict is certain either way
        inside = abs(float(d[0])) < margin
        return (0.0, 1.0) if inside else (1.0, 0.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p_tost = float(ttost_paired(a, b, -margin, margin)[0])
    upper = float(np.mean(d)) >= 0
    res = _quiet(stats.ttest_1samp, d, margin if upper else -margin, alternative="greater" if upper else "less")
    return p_tost, (math.nan if res is None else float(res.pvalue))


def wilcoxon(a, b) -> tuple[float, float]:
    """Wilcoxon signed-rank test (``scipy.stats.wilcoxon``): statistic and two-sided p."""
    if len(_arr(a)) < 2:
        return math.nan, math.nan
    res = _quiet(stats.wilcoxon, _arr(a), _arr(b))
    return (math.nan, math.nan) if res is None else (float(res.statistic), float(res.pvalue))


def cohens_dz(a, b) -> float:
    """Cohen's d_z: mean of the paired differences over their standard deviation (ddof 1)."""
    d = _arr(a) - _arr(b)
    if len(d) < 2:
        return math.nan
    sd = float(np.std(d, ddof=1))
    return float(np.mean(d)) / sd if sd > 0 else math.nan


def hedges_g(a, b) -> float:
    """Hedges' g: mean difference over the pooled SD, times ``1 - 3 / (4 (n_a + n_b) - 9)``."""
    a, b = _arr(a), _arr(b)
    na, nb = len(a), len(b)
    if na < 2 or nb < 2:
        return math.nan
    pooled = math.sqrt(((na - 1) * np.var(a, ddof=1) + (nb - 1) * np.var(b, ddof=1)) / (na + nb - 2))
    if pooled == 0:
        return math.nan
    correction = 1 - 3 / (4 * (na + nb) - 9)
    return float((np.mean(a) - np.mean(b)) / pooled * correction)


def bootstrap_ci(a, b, *, seed: int = BOOTSTRAP_SEED, n_resamples: int = BOOTSTRAP_RESAMPLES,
                 level: float = CONFIDENCE) -> tuple[float, float]:
    """Bootstrap CI of the mean paired difference (``scipy.stats.bootstrap``, BCa, seeded).

    Identical differences give the degenerate interval (d, d); BCa falling over (NaN) falls
    back to the percentile interval.
    """
    d = _arr(a) - _arr(b)
    if len(d) < 2:
        return math.nan, math.nan
    if np.all(d == d[0]):
        return float(d[0]), float(d[0])
    for method in ("BCa", "percentile"):
        res = _quiet(stats.bootstrap, (d,), np.mean, n_resamples=n_resamples, confidence_level=level,
                     method=method, rng=np.random.default_rng(seed))
        if res is not None:
            lo, hi = float(res.confidence_interval.low), float(res.confidence_interval.high)
            if math.isfinite(lo) and math.isfinite(hi):
                return lo, hi
    return math.nan, math.nan


def levene_median(a, b) -> tuple[float, float]:
    """Levene's test of equal variances, median-centred (Brown-Forsythe): statistic and p."""
    if len(_arr(a)) < 2 or len(_arr(b)) < 2:
        return math.nan, math.nan
    res = _quiet(stats.levene, _arr(a), _arr(b), center="median")
    return (math.nan, math.nan) if res is None else (float(res.statistic), float(res.pvalue))


def variance_reduction(treated, baseline) -> float:
    """``1 - var(treated) / var(baseline)`` (ddof 1); NaN when the baseline has no variance."""
    t, b = _arr(treated), _arr(baseline)
    if len(t) < 2 or len(b) < 2:
        return math.nan
    vb = float(np.var(b, ddof=1))
    return 1 - float(np.var(t, ddof=1)) / vb if vb > 0 else math.nan


def welch(a, b) -> tuple[float, float]:
    """Welch's t-test (``scipy.stats.ttest_ind(equal_var=False)``): statistic and two-sided p."""
    if len(_arr(a)) < 2 or len(_arr(b)) < 2:
        return math.nan, math.nan
    res = _quiet(stats.ttest_ind, _arr(a), _arr(b), equal_var=False)
    return (math.nan, math.nan) if res is None else (float(res.statistic), float(res.pvalue))


def adjust(pvalues, correction: Correction | str) -> np.ndarray:
    """p-values adjusted for multiple comparisons (``statsmodels multipletests``).

    NaN p-values (tests that could not run) stay NaN and do not count as comparisons.
    """
    p = _arr(pvalues)
    out = np.full(p.shape, np.nan)
    finite = np.isfinite(p)
    if finite.any():
        out[finite] = multipletests(p[finite], method=Correction.parse(correction).value)[1]
    return out


def stars(p: float) -> str:
    """``***`` p < 0.001, ``**`` < 0.01, ``*`` < 0.05, ``ns`` otherwise, ``""`` for NaN."""
    if p is None or not math.isfinite(p):
        return ""
    return "***" if p < 0.001 else "**" if p < 0.01 else "*" if p < 0.05 else "ns"


@dataclass(frozen=True, kw_only=True)
class PairedComparison:
    """Every statistic of one candidate-vs-reference comparison on paired folds."""

    n: int
    mean_a: float
    mean_b: float
    mean_diff: float
    t: float
    p_t: float
    t_nb: float
    p_nb: float
    w: float
    p_wilcoxon: float
    dz: float
    hedges_g: float
    ci_low: float  # paired t-interval
    ci_high: float
    boot_low: float  # BCa bootstrap interval, only from BOOTSTRAP_MIN_N pairs on
    boot_high: float
    n_cells: int  # paired (fold, seed) cells behind the fold means
    t_bf: float  # Bouckaert-Frank corrected repeated k-fold t on the cells
    p_bf: float


def compare_paired(a, b, *, test_train_ratio: float, seed: int = BOOTSTRAP_SEED, cells_a=None,
                   cells_b=None) -> PairedComparison:
    """Paired t, Nadeau-Bengio t, Wilcoxon, Cohen's dz, Hedges' g and CIs of a - b on fold values.

    With ``cells_a``/``cells_b`` (every paired fold x seed cell, when there are more cells than
    folds) the Bouckaert-Frank corrected repeated k-fold t is computed on them as well.
    """
    a, b = _arr(a), _arr(b)
    t, p_t = paired_t(a, b)
    t_nb, p_nb = nadeau_bengio(a, b, test_train_ratio)
    w, p_w = wilcoxon(a, b)
    lo, hi = t_interval(a, b)
    blo, bhi = bootstrap_ci(a, b, seed=seed) if len(a) >= BOOTSTRAP_MIN_N else (math.nan, math.nan)
    n_cells = len(a) if cells_a is None else len(_arr(cells_a))
    t_bf, p_bf = (nadeau_bengio(cells_a, cells_b, test_train_ratio) if n_cells > len(a)
                  else (math.nan, math.nan))
    return PairedComparison(
        n=len(a), mean_a=float(np.mean(a)) if len(a) else math.nan,
        mean_b=float(np.mean(b)) if len(b) else math.nan,
        mean_diff=float(np.mean(a - b)) if len(a) else math.nan,
        t=t, p_t=p_t, t_nb=t_nb, p_nb=p_nb, w=w, p_wilcoxon=p_w,
        dz=cohens_dz(a, b), hedges_g=hedges_g(a, b), ci_low=lo, ci_high=hi, boot_low=blo, boot_high=bhi,
        n_cells=n_cells, t_bf=t_bf, p_bf=p_bf)
