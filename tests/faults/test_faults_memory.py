"""Long sweeps keep the driver's memory flat: a 40-trial sweep's driver RSS at the end is within
20% of its RSS after the first 5 trials (the figure ``qmoe bench`` reports, from
:func:`sweeps.bench_memory.driver_memory_profile`)."""

from __future__ import annotations

import pytest

from qmoe.sweeps.bench.driver_memory import driver_memory_profile

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_driver_memory_stays_flat_over_40_trials(ray_cluster, synth_table) -> None:
    figures = driver_memory_profile(40)
    assert figures["trials"] == 40
    assert figures["rss_after_5_mb"] > 0 and figures["rss_end_mb"] > 0
    assert abs(figures["growth"]) <= 0.20, figures
    assert figures["growth"] == pytest.approx(figures["rss_end_mb"] / figures["rss_after_5_mb"] - 1, abs=1e-3)
