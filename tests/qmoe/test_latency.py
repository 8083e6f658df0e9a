"""Pinned batch-1 latency: one core (restored afterwards), a stated precision, the load recorded."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from scipy import stats

from qmoe.latency import MEASURES, LatencyStats, measure_latency, median_ci, pinned_to_one_core

needs_affinity = pytest.mark.skipif(not hasattr(os, "sched_setaffinity"), reason="no CPU affinity on this OS")


@needs_affinity
def test_pinning_uses_one_allowed_core_and_restores_the_affinity() -> None:
    before = os.sched_getaffinity(0)
    with pinned_to_one_core() as cpu:
        assert cpu in before and os.sched_getaffinity(0) == {cpu}
    assert os.sched_getaffinity(0) == before
    with pytest.raises(RuntimeError, match="boom"), pinned_to_one_core():
        raise RuntimeError("boom")
    assert os.sched_getaffinity(0) == before  # restored when the block raises, too


@needs_affinity
def test_pinning_keeps_a_narrowed_affinity() -> None:
    """A process already limited (e.g. by a Ray worker) stays within its set and gets it back."""
    before = os.sched_getaffinity(0)
    narrowed = {max(before)}
    os.sched_setaffinity(0, narrowed)
    try:
        with pinned_to_one_core() as cpu:
            assert cpu == max(before)
        assert os.sched_getaffinity(0) == narrowed
    finally:
        os.sched_setaffinity(0, before)


@pytest.mark.parametrize("n", [6, 20, 100, 1001])
def test_median_ci_is_the_order_statistic_interval(n: int) -> None:
    x = np.arange(1, n + 1, dtype=float)[::-1]  # unsorted on purpose; x_(i) = i
    low, high = median_ci(x)
    lo_idx = int(low)  # the interval is [x_(l), x_(n+1-l)]
    assert high == n + 1 - lo_idx
    coverage = 1 - 2 * stats.binom.cdf(lo_idx - 1, n, 0.5)
    assert coverage >= 0.95  # covers the median at least 95% of the time ...
    wider = 1 - 2 * stats.binom.cdf(lo_idx, n, 0.5)
    assert wider < 0.95  # ... and is the narrowest such interval


def test_median_ci_of_too_few_is_nan() -> None:
    assert all(np.isnan(median_ci(np.arange(5.0))))


def test_measure_latency_columns_and_rounds() -> None:
    model = torch.nn.Linear(8, 4)
    samples = torch.randn(16, 8)
    exact = measure_latency(model, samples, runs=50, warmup=2, precision=None)
    assert exact.runs == 50  # no precision target: exactly one round
    cols = exact.columns()
    assert list(cols) == [f"latency_{m}" for m in MEASURES]
    assert cols["latency_p99_us"] >= cols["latency_p50_us"] > 0
    assert exact.p50_ci_us is not None and exact.p50_ci_us >= 0
    assert exact.others_cores is not None and exact.others_cores >= 0 and exact.load1 is not None
    capped = measure_latency(model, samples, runs=50, warmup=2, precision=0.0, max_runs=200)
    assert capped.runs == 200  # an unreachable precision stops at the cap, in whole rounds
    if hasattr(os, "sched_setaffinity"):
        assert exact.cpu is not None and capped.cpu is not None
    assert measure_latency(model, samples, runs=20, warmup=0, precision=None, pin=False).cpu is None
    assert set(LatencyStats(mean_us=1, std_us=0, p50_us=1, p99_us=1, runs=1).columns("x_")) == {
        f"x_{m}" for m in MEASURES}
