"""``qmoe.measure``'s throughput helpers: how many calls are timed and what the rate counts."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import qmoe.measure
from qmoe.measure import measure_throughput, rows_per_second


class _Clock:
    def __init__(self) -> None:
        self.s = 0.0

    def perf_counter(self) -> float:
        return self.s


@pytest.mark.parametrize("min_seconds, min_calls, timed", [(0.0, 2, 2), (0.0, 5, 5), (0.35, 2, 4)])
def test_rows_per_second_times_enough_calls_after_an_untimed_one(monkeypatch: pytest.MonkeyPatch,
                                                                min_seconds: float, min_calls: int,
                                                                timed: int) -> None:
    clock, calls = _Clock(), []
    monkeypatch.setattr(qmoe.measure, "time", clock)

    def fn(x: np.ndarray) -> None:  # 0.1 s a call
        calls.append(len(x))
        clock.s += 0.1

    rate = rows_per_second(fn, np.zeros((8, 3)), min_seconds=min_seconds, min_calls=min_calls)
    assert len(calls) == 1 + timed and set(calls) == {8}
    assert rate == pytest.approx(8 / 0.1)  # rows (not calls) per second


def test_measure_throughput_fills_the_batch_from_the_samples() -> None:
    seen = []
    rate = measure_throughput(lambda x: seen.append(tuple(x.shape)), torch.zeros(3, 2), batch=7, min_seconds=0.0)
    assert rate > 0 and set(seen) == {(7, 2)} and len(seen) == 4  # one untimed call, then at least 3
