"""Clips per second of feature extraction on Ray (``qmoe.sweeps.bench.extraction_speed``)."""

from __future__ import annotations

import pytest

from qmoe.sweeps.bench.extraction_speed import extraction_throughput

pytestmark = pytest.mark.ray


def test_extraction_throughput_reports_clips_per_second(ray_cluster) -> None:
    rows = extraction_throughput(("melstats",), clips={"melstats": 32})
    (row,) = rows
    assert row.backbone == "melstats" and row.clips == 32 and row.workers == 2
    assert row.clips_per_s > 0 and row.seconds > 0 and row.startup_s <= row.seconds
