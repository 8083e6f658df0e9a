"""The mean-difference test a paired design calls for: difference, CI, p, equivalence (TOST), power.

One split (official folds, or one seeded assignment): the fold units are independent, so the test
is the paired t on the fold means (seeds averaged), its t-interval, and TOST
(``statsmodels ttost_paired``) on the same fold means. Several seeded splits (repeated k-fold):
fold units of different splits share samples, so the test is Bouckaert & Frank's corrected
repeated k-fold t on the k r cells: ``se = sqrt((1/(k r) + n2/n1) var(d))``, ``k r - 1`` df
(``scipy.stats.t``), and the CI and both one-sided TOST tests use that same corrected ``se``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as ss

from qmoe.analysis.aggregate import Paired
from qmoe.analysis.power import detectable_difference, tost_margin
from qmoe.analysis.stats import CONFIDENCE, nadeau_bengio, paired_t, t_interval, tost

PAIRED_T, BOUCKAERT_FRANK = "paired t (fold means)", "Bouckaert–Frank (cells)"


@dataclass(frozen=True, kw_only=True)
class MeanTest:
    """Candidate - reference on paired data, as the verdicts read it."""

    test: str
    n: int  # values the test uses: fold means, or cells for Bouckaert-Frank
    mean_a: float  # means over the same paired values: their ratio is "% of reference"
    mean_b: float
    mean_diff: float
    sd_diff: float
    inflation: float  # variance factor of the corrected test over the plain one (1 for the paired t)
    t: float
    p: float
    ci_low: float
    ci_high: float
    p_tost: float  # equivalence within ±margin
    p_out: float  # difference beyond the margin on the estimate's side

    @property
    def ratio(self) -> float:
        return self.mean_a / self.mean_b if self.mean_b else math.nan

    def detectable(self, alpha: float) -> float:
        """Smallest |difference| found with 80% power at ``alpha`` (two-sided)."""
        return detectable_difference(self.n, self.sd_diff, alpha) * math.sqrt(self.inflation)

    def tost_margin(self, alpha: float) -> float:
        """Smallest margin TOST confirms with 80% power at ``alpha`` when the true difference is 0."""
        return tost_margin(self.n, self.sd_diff, alpha) * math.sqrt(self.inflation)


def mean_test(p: Paired, margin: float, level: float = CONFIDENCE) -> MeanTest:
    """The mean-difference and equivalence tests of a paired comparison (see the module doc)."""
    if p.n_splits <= 1:
        a, b = p.a, p.b
        d = a - b
        t, pt = paired_t(a, b)
        lo, hi = t_interval(a, b, level)
        p_tost, p_out = tost(a, b, margin)
        return MeanTest(test=PAIRED_T, n=len(d), mean_a=_mean(a), mean_b=_mean(b), mean_diff=_mean(d),
                        sd_diff=_sd(d), inflation=1.0, t=t, p=pt, ci_low=lo, ci_high=hi, p_tost=p_tost, p_out=p_out)
    a, b = p.cells["a"].to_numpy(dtype=float), p.cells["b"].to_numpy(dtype=float)
    d = a - b
    j, ratio = len(d), p.test_train_ratio
    t, pt = nadeau_bengio(a, b, ratio)
    sd = _sd(d)
    inflation = 1 + j * ratio if math.isfinite(ratio) else math.nan
    se = math.sqrt((1 / j + ratio) * sd * sd) if j >= 2 and math.isfinite(ratio) else math.nan
    mean = _mean(d)
    lo = hi = p_tost = p_out = math.nan
    if fmt_ok(se):
        q = ss.t.ppf((1 + level) / 2, j - 1)
        lo, hi = mean - q * se, mean + q * se
        p_tost = float(max(ss.t.sf((mean + margin) / se, j - 1), ss.t.cdf((mean - margin) / se, j - 1)))
        p_out = float(ss.t.sf((abs(mean) - margin) / se, j - 1))
    return MeanTest(test=BOUCKAERT_FRANK, n=j, mean_a=_mean(a), mean_b=_mean(b), mean_diff=mean, sd_diff=sd,
                    inflation=inflation, t=t, p=pt, ci_low=lo, ci_high=hi, p_tost=p_tost, p_out=p_out)


def fmt_ok(x: float) -> bool:
    return math.isfinite(x) and x > 0


def _mean(x: np.ndarray) -> float:
    return float(np.mean(x)) if len(x) else math.nan


def _sd(x: np.ndarray) -> float:
    return float(np.std(x, ddof=1)) if len(x) > 1 else math.nan
