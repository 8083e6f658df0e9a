"""Where the F1 variance of one configuration comes from, and intervals for variance ratios.

The design is a crossed fold x seed table: every fold unit (split_seed, fold) trained with every
seed. The two-way random-effects ANOVA (``statsmodels`` OLS + ``anova_lm``) gives the mean
squares; the variance components are their method-of-moments solutions (truncated at 0):

    sigma2_fold = (MS_fold - MS_res) / r,   sigma2_seed = (MS_seed - MS_res) / k,   sigma2_res = MS_res

with k fold units and r seeds. With one observation per fold x seed cell the residual *is* the
fold:seed interaction (training randomness that is not shared across folds) plus measurement
noise; they cannot be told apart. Confidence intervals are generalised confidence intervals
(Weerahandi 1993; Burdick, Borror & Montgomery 2005): the sums of squares of a balanced normal
model are independent scaled chi-squares, so drawing ``U ~ chi2(df)`` and forming
``SS / U`` gives a generalised pivot for every expected mean square, and for any function of them
(components, shares, ratios of two independent configurations). For the residual alone this is
the exact chi-square (and for a ratio of residuals the exact F) interval, used directly.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.formula.api import ols
from statsmodels.stats.anova import anova_lm

COMPONENTS = ("fold", "seed", "resid")
DRAWS = 20_000  # generalised-pivot draws; percentile Monte Carlo error well under 1% of a bound
CONFIDENCE = 0.95


def balanced(cells: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The largest fold-unit x seed grid without holes, found greedily, and the cells dropped.

    ``cells`` columns: ``unit`` (hashable fold unit), ``seed``, ``y``. A hole (an errored or
    missing trial) costs the row or column with the larger share of holes, one at a time.
    """
    grid = cells.pivot_table(index="unit", columns="seed", values="y", aggfunc="mean")
    total = int(grid.notna().sum().sum())
    while grid.size and grid.isna().any().any():
        rows, cols = grid.isna().mean(axis=1), grid.isna().mean(axis=0)
        if rows.max() >= cols.max():
            grid = grid.drop(index=rows.idxmax())
        else:
            grid = grid.drop(columns=cols.idxmax())
    return grid, total - int(grid.size)


@dataclass(frozen=True, kw_only=True)
class Decomposition:
    """Variance components of one configuration's F1 over a balanced fold x seed grid."""

    k: int  # fold units
    r: int  # seeds per unit
    dropped: int  # cells left out to balance the grid
    ss: dict[str, float]
    df: dict[str, int]
    estimate: dict[str, float]  # fold, seed, resid (NaN when the design cannot separate it)
    ci: dict[str, tuple[float, float]] = field(default_factory=dict)  # components and share:<c>

    @property
    def total(self) -> float:
        return float(np.nansum([self.estimate[c] for c in COMPONENTS]))

    def share(self, component: str) -> float:
        total = self.total
        value = self.estimate[component]
        return value / total if total > 0 and math.isfinite(value) else math.nan

    def pivots(self, rng: np.random.Generator, draws: int = DRAWS) -> dict[str, np.ndarray]:
        """Generalised pivotal quantities of each component (arrays of ``draws``)."""
        k, r, ss, df = self.k, self.r, self.ss, self.df
        if r < 2:  # one seed: only the total over folds (fold and training randomness confounded)
            return {"fold": ss["fold"] / rng.chisquare(df["fold"], draws),
                    "seed": np.full(draws, np.nan), "resid": np.full(draws, np.nan)}
        res = ss["resid"] / rng.chisquare(df["resid"], draws)
        fold = np.maximum(0.0, (ss["fold"] / rng.chisquare(df["fold"], draws) - res) / r)
        seed = np.maximum(0.0, (ss["seed"] / rng.chisquare(df["seed"], draws) - res) / k)
        return {"fold": fold, "seed": seed, "resid": res}


def _quantiles(x: np.ndarray, level: float) -> tuple[float, float]:
    x = x[np.isfinite(x)]
    if not len(x):
        return math.nan, math.nan
    lo, hi = np.quantile(x, [(1 - level) / 2, (1 + level) / 2])
    return float(lo), float(hi)


def chi2_interval(ss: float, df: int, level: float = CONFIDENCE) -> tuple[float, float]:
    """Exact interval of a normal variance from its sum of squares: ``SS / chi2_{(1±level)/2}(df)``."""
    if df < 1:
        return math.nan, math.nan
    return float(ss / stats.chi2.ppf((1 + level) / 2, df)), float(ss / stats.chi2.ppf((1 - level) / 2, df))


def decompose(grid: pd.DataFrame, *, dropped: int = 0, seed: int = 0, level: float = CONFIDENCE,
              draws: int = DRAWS) -> Decomposition | None:
    """Variance components of a balanced fold-unit x seed grid of F1 (None below 2 fold units).

    The sums of squares come from ``anova_lm`` on ``y ~ C(fold) + C(seed)``; with one seed the
    design only has the variance over folds, reported as the fold component (it then also holds
    the training randomness, which one seed cannot separate).
    """
    k, r = grid.shape
    if k < 2 or r < 1:
        return None
    y = grid.to_numpy(dtype=float)
    if r == 1:
        ss = {"fold": float(np.sum((y - y.mean()) ** 2)), "seed": math.nan, "resid": math.nan}
        df = {"fold": k - 1, "seed": 0, "resid": 0}
        estimate = {"fold": ss["fold"] / df["fold"], "seed": math.nan, "resid": math.nan}
    else:
        long = pd.DataFrame({"y": y.ravel(), "fold": np.repeat(np.arange(k), r), "seed": np.tile(np.arange(r), k)})
        with warnings.catch_warnings():  # a perfect fit (zero residual) is legal here
            warnings.simplefilter("ignore")
            table = anova_lm(ols("y ~ C(fold) + C(seed)", data=long).fit(), typ=2)
        ss = {"fold": float(table.loc["C(fold)", "sum_sq"]), "seed": float(table.loc["C(seed)", "sum_sq"]),
              "resid": float(table.loc["Residual", "sum_sq"])}
        df = {"fold": k - 1, "seed": r - 1, "resid": (k - 1) * (r - 1)}
        ms = {c: ss[c] / df[c] for c in COMPONENTS}
        estimate = {"fold": max(0.0, (ms["fold"] - ms["resid"]) / r),
                    "seed": max(0.0, (ms["seed"] - ms["resid"]) / k), "resid": ms["resid"]}
    dec = Decomposition(k=k, r=r, dropped=dropped, ss=ss, df=df, estimate=estimate)
    piv = dec.pivots(np.random.default_rng(seed), draws)
    total = sum(np.nan_to_num(piv[c]) for c in COMPONENTS)
    ci = {c: _quantiles(piv[c], level) for c in COMPONENTS}
    ci |= {f"share:{c}": _quantiles(np.where(total > 0, piv[c] / np.where(total > 0, total, 1), np.nan), level)
           for c in COMPONENTS}
    if r >= 2:
        ci["resid"] = chi2_interval(ss["resid"], df["resid"], level)
    else:
        ci["fold"] = chi2_interval(ss["fold"], df["fold"], level)
    return dataclasses.replace(dec, ci=ci)


def component_ratio(a: Decomposition, b: Decomposition, component: str, *, seed: int = 0,
                    level: float = CONFIDENCE, draws: int = DRAWS) -> tuple[float, float, float]:
    """``sigma2_a / sigma2_b`` of one component with a CI: (ratio, low, high).

    Residuals of two configurations come from independent training draws, so their ratio has the
    exact F interval. Fold (and seed) components are compared through independent generalised
    pivots; two configurations measured on the same folds have positively correlated fold
    effects (a hard fold is hard for both), which makes this interval wider than it need be.
    """
    ea, eb = a.estimate[component], b.estimate[component]
    ratio = ea / eb if math.isfinite(ea) and math.isfinite(eb) and eb > 0 else math.nan
    if component == "resid" and a.r >= 2 and b.r >= 2:
        lo, hi = f_ratio_interval(ea, eb, a.df["resid"], b.df["resid"], level)
        return ratio, lo, hi
    rng = np.random.default_rng(seed)
    pa, pb = a.pivots(rng, draws)[component], b.pivots(rng, draws)[component]
    with np.errstate(divide="ignore", invalid="ignore"):
        lo, hi = _quantiles(np.where(pb > 0, pa / np.where(pb > 0, pb, 1), np.nan), level)
    return ratio, lo, hi


def f_ratio_interval(var_a: float, var_b: float, df_a: int, df_b: int,
                     level: float = CONFIDENCE) -> tuple[float, float]:
    """Exact CI of ``sigma2_a / sigma2_b`` from the variances of two independent normal samples."""
    if df_a < 1 or df_b < 1 or not (var_b > 0) or not math.isfinite(var_a):
        return math.nan, math.nan
    ratio = var_a / var_b
    return (float(ratio / stats.f.ppf((1 + level) / 2, df_a, df_b)),
            float(ratio / stats.f.ppf((1 - level) / 2, df_a, df_b)))


def f_ratio_test(var_a: float, var_b: float, df_a: int, df_b: int) -> float:
    """Two-sided p of the F-test of equal variances of two independent normal samples."""
    if df_a < 1 or df_b < 1 or not (var_b > 0) or not math.isfinite(var_a):
        return math.nan
    cdf = stats.f.cdf(var_a / var_b, df_a, df_b)
    return float(min(1.0, 2 * min(cdf, 1 - cdf)))


def pitman_morgan(a, b, level: float = CONFIDENCE) -> tuple[float, float, float, float]:
    """Variance ratio of *paired* samples (the same folds): ``var(a)/var(b)``, CI and p.

    Pitman (1939) / Morgan (1939): under bivariate normality ``var(a) = var(b)`` exactly when
    ``a + b`` and ``a - b`` are uncorrelated, so the test is the correlation t-test of those two
    (``scipy.stats.pearsonr``, n - 2 df). Inverting it for ``var(a) = lambda var(b)`` gives
    ``lambda in F * [K - sqrt(K^2 - 1), K + sqrt(K^2 - 1)]`` with ``F = s_a^2 / s_b^2``,
    ``K = 1 + 2 (1 - r^2) t^2 / (n - 2)``, r the correlation of a and b and t the two-sided
    t quantile with n - 2 df. Returns (ratio, low, high, p); NaN below 3 pairs.
    """
    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    n = len(a)
    if n < 3:
        return math.nan, math.nan, math.nan, math.nan
    va, vb = float(np.var(a, ddof=1)), float(np.var(b, ddof=1))
    if not (va > 0 and vb > 0):
        return (va / vb if vb > 0 else math.nan), math.nan, math.nan, math.nan
    ratio = va / vb
    r = float(np.corrcoef(a, b)[0, 1])
    t = stats.t.ppf((1 + level) / 2, n - 2)
    k = 1 + 2 * (1 - r * r) * t * t / (n - 2)
    spread = math.sqrt(max(k * k - 1, 0.0))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        p = float(stats.pearsonr(a + b, a - b).pvalue)
    return ratio, ratio * (k - spread), ratio * (k + spread), p


def residuals(grid: pd.DataFrame) -> np.ndarray:
    """Two-way residuals ``y - row mean - column mean + grand mean`` of a fold x seed grid, flat."""
    y = grid.to_numpy(dtype=float)
    return (y - y.mean(axis=1, keepdims=True) - y.mean(axis=0, keepdims=True) + y.mean()).ravel()
