"""Variance components, their intervals and variance-ratio intervals against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as ss

from qmoe.analysis.variance import (balanced, chi2_interval, component_ratio, decompose, f_ratio_interval, pitman_morgan,
                               residuals)

FOLD_SD, SEED_SD, NOISE_SD = 0.03, 0.01, 0.005  # the components the simulations are built from
K, R = 5, 10


def simulate(rng: np.random.Generator, k: int = K, r: int = R) -> pd.DataFrame:
    y = 0.8 + rng.normal(0, FOLD_SD, (k, 1)) + rng.normal(0, SEED_SD, (1, r)) + rng.normal(0, NOISE_SD, (k, r))
    return pd.DataFrame(y, index=range(1, k + 1), columns=range(r))


def test_components_are_the_anova_mean_squares_computed_with_numpy() -> None:
    grid = simulate(np.random.default_rng(1))
    y = grid.to_numpy()
    k, r = y.shape
    grand, rows, cols = y.mean(), y.mean(axis=1), y.mean(axis=0)
    ms_fold = r * np.sum((rows - grand) ** 2) / (k - 1)
    ms_seed = k * np.sum((cols - grand) ** 2) / (r - 1)
    ms_res = np.sum((y - rows[:, None] - cols[None, :] + grand) ** 2) / ((k - 1) * (r - 1))
    dec = decompose(grid, draws=2000)
    assert dec.estimate["resid"] == pytest.approx(ms_res, rel=1e-9)
    assert dec.estimate["fold"] == pytest.approx(max(0.0, (ms_fold - ms_res) / r), rel=1e-9)
    assert dec.estimate["seed"] == pytest.approx(max(0.0, (ms_seed - ms_res) / k), rel=1e-9)
    assert sum(dec.share(c) for c in ("fold", "seed", "resid")) == pytest.approx(1.0)
    # the residual interval is the exact chi-square one
    lo, hi = dec.ci["resid"]
    df = (k - 1) * (r - 1)
    assert (lo, hi) == pytest.approx((ms_res * df / ss.chi2.ppf(0.975, df), ms_res * df / ss.chi2.ppf(0.025, df)))
    assert np.sum(residuals(grid) ** 2) == pytest.approx(ms_res * df)


def test_estimates_are_unbiased_and_intervals_cover_over_many_simulated_sweeps() -> None:
    # 200 seeded sweeps of 5 folds x 10 seeds from known components. Unbiased moment estimates:
    # the mean over the sweeps lies within 4 standard errors of the truth. Coverage of the 95%
    # intervals: the binomial standard error over 200 sweeps is 0.015, so >= 0.90 is a 3-sigma
    # lower band (generalised intervals of few folds are conservative, so higher is expected).
    rng = np.random.default_rng(2024)
    truth = {"fold": FOLD_SD ** 2, "seed": SEED_SD ** 2, "resid": NOISE_SD ** 2}
    est = {c: [] for c in truth}
    cover = {c: 0 for c in truth}
    n = 200
    for i in range(n):
        dec = decompose(simulate(rng), draws=2000, seed=i)
        for c, value in truth.items():
            est[c].append(dec.estimate[c])
            lo, hi = dec.ci[c]
            cover[c] += lo <= value <= hi
    for c, value in truth.items():
        values = np.array(est[c])
        assert abs(values.mean() - value) <= 4 * values.std(ddof=1) / math.sqrt(n), c
        assert cover[c] / n >= 0.90, (c, cover[c] / n)


def test_one_seed_has_only_the_variance_over_folds() -> None:
    grid = simulate(np.random.default_rng(3), r=1)
    dec = decompose(grid, draws=1000)
    y = grid.to_numpy().ravel()
    assert dec.estimate["fold"] == pytest.approx(y.var(ddof=1))
    assert math.isnan(dec.estimate["seed"]) and math.isnan(dec.estimate["resid"])
    assert dec.ci["fold"] == pytest.approx(chi2_interval(np.sum((y - y.mean()) ** 2), K - 1))
    assert decompose(grid.iloc[:1]) is None  # one fold: nothing to decompose


def test_balanced_drops_the_line_with_the_most_holes() -> None:
    cells = pd.DataFrame([(u, s, 0.8 + u / 100 + s / 1000) for u in range(4) for s in range(3)], columns=["unit", "seed", "y"])
    cells = cells[~((cells["unit"] == 2) & (cells["seed"].isin([0, 1])))]  # fold 2 lost two seeds
    grid, dropped = balanced(cells)
    assert list(grid.index) == [0, 1, 3] and list(grid.columns) == [0, 1, 2] and dropped == 1
    one = cells[~((cells["unit"] == 0) & (cells["seed"] == 2))]  # and fold 0 lost seed 2
    grid, dropped = balanced(one)
    assert not grid.isna().any().any() and grid.size + dropped == len(one)


def test_residual_ratio_is_the_exact_f_interval() -> None:
    a = decompose(simulate(np.random.default_rng(4)), draws=1000)
    b = decompose(simulate(np.random.default_rng(5)), draws=1000)
    ratio, lo, hi = component_ratio(a, b, "resid")
    f = a.estimate["resid"] / b.estimate["resid"]
    df = (K - 1) * (R - 1)
    assert ratio == pytest.approx(f)
    assert (lo, hi) == pytest.approx((f / ss.f.ppf(0.975, df, df), f / ss.f.ppf(0.025, df, df)))
    assert f_ratio_interval(2.0, 1.0, 4, 4) == pytest.approx((2 / ss.f.ppf(0.975, 4, 4), 2 / ss.f.ppf(0.025, 4, 4)))
    fr, flo, fhi = component_ratio(a, b, "fold", seed=1)
    assert flo < fr < fhi


def test_pitman_morgan_interval_inverts_the_correlation_test() -> None:
    # At either end of the interval, rescaling a by the bound makes var(a') = var(b) borderline:
    # the correlation of a' + b and a' - b (scipy pearsonr) then has p = 0.05 exactly.
    rng = np.random.default_rng(6)
    shared = rng.normal(0, 0.03, 8)
    a = shared * 0.4 + rng.normal(0, 0.01, 8)
    b = shared + rng.normal(0, 0.01, 8)
    ratio, lo, hi, p = pitman_morgan(a, b)
    assert ratio == pytest.approx(a.var(ddof=1) / b.var(ddof=1))
    assert lo < ratio < hi
    assert p == pytest.approx(ss.pearsonr(a + b, a - b).pvalue)
    for bound in (lo, hi):
        scaled = a / math.sqrt(bound)
        assert ss.pearsonr(scaled + b, scaled - b).pvalue == pytest.approx(0.05, abs=1e-9)
    assert all(math.isnan(x) for x in pitman_morgan(a[:2], b[:2]))
