"""Interleaved timing rounds (``qmoe.bench_rounds``): the order of turns, what each callable
is given, and ratios paired within a round, so that load on the machine cancels."""

from __future__ import annotations

import inspect

import numpy as np
import pytest
import torch

import qmoe.bench_rounds
import qmoe.measure
from qmoe.bench_rounds import Turns, kernel_seconds, numpy_latency, paired_ratios, time_in_rounds


class _Clock:
    """A fake clock: every call of a callable costs its own time x the load of the round."""

    def __init__(self) -> None:
        self.ns = 0
        self.load = 1.0

    def perf_counter_ns(self) -> int:
        return self.ns

    def perf_counter(self) -> float:
        return self.ns / 1e9


def _callable(clock: _Clock, name: str, us_per_row: float, calls: list) -> object:
    def fn(x: object) -> None:
        rows = x.shape[0]
        calls.append((name, type(x).__name__, rows))
        clock.ns += int(round(us_per_row * rows * clock.load * 1e3))

    return fn


def test_turns_interleave_with_the_baseline_first_and_once_more_at_the_end(monkeypatch: pytest.MonkeyPatch) -> None:
    clock, calls = _Clock(), []
    monkeypatch.setattr(qmoe.bench_rounds, "time", clock)
    monkeypatch.setattr(qmoe.measure, "time", clock)  # the batches' rate (rows_per_second)
    fns = [_callable(clock, n, us, calls) for n, us in (("base", 100.0), ("fast", 10.0), ("np", 20.0))]
    turns = time_in_rounds(fns, torch.zeros(4, 3), rounds=3, runs=4, batch=8, min_seconds=0.0, warmup=2,
                           pin=False, numpy=frozenset({2}))
    order = [name for k, (name, _, rows) in enumerate(calls) if k == 0 or calls[k - 1][0] != name]
    assert order == ["base", "fast", "np"] * 3 + ["base"]  # one turn each per round, the baseline once more
    per_turn = [(rows, kind) for name, kind, rows in calls if name == "np"][:2 + 4 + 3]
    # a turn: 2 warm-up and 4 timed single rows, one untimed batch, at least two timed batches
    assert [r for r, _ in per_turn] == [1] * 6 + [8] * 3
    assert {kind for _, kind in per_turn} == {"ndarray"}  # numpy callables get numpy rows
    assert {kind for name, kind, _ in calls if name != "np"} == {"Tensor"}
    assert [len(t.p50_us) for t in turns] == [4, 3, 3] and [len(t.rates) for t in turns] == [4, 3, 3]
    assert turns[0].times_us.shape == (16,) and turns[1].times_us.shape == (12,)
    assert turns[1].p50_us == (10.0, 10.0, 10.0) and turns[0].p50() == 100.0
    assert turns[1].rates == pytest.approx((1e5,) * 3)  # 10 µs a row: 100,000 rows/s


def test_load_drifting_across_the_run_cancels_in_every_rounds_ratio(monkeypatch: pytest.MonkeyPatch) -> None:
    """The machine slows down steadily (another process's load growing): each turn runs at a
    higher load than the one before. Against the mean of the baseline's turns before and after
    it, every round's ratio is still the true 10x; against the turn before it alone, it would
    read 6.7x, 8x and 8.6x."""
    clock, calls = _Clock(), []
    monkeypatch.setattr(qmoe.bench_rounds, "time", clock)
    monkeypatch.setattr(qmoe.measure, "time", clock)  # the batches' rate (rows_per_second)
    base, fast = _callable(clock, "base", 100.0, calls), _callable(clock, "fast", 10.0, calls)
    loads = iter([1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0])  # per turn: base, fast, base, fast, base, fast, base
    original = qmoe.bench_rounds.pinned_to_one_core

    def next_turn():  # noqa: ANN202 - a turn starts by pinning itself: the load steps up there
        clock.load = next(loads)
        return original()

    monkeypatch.setattr(qmoe.bench_rounds, "pinned_to_one_core", next_turn)
    turns = time_in_rounds([base, fast], torch.zeros(2, 3), rounds=3, runs=5, batch=4, min_seconds=0.0, warmup=1)
    assert turns[0].p50_us == pytest.approx((100.0, 200.0, 300.0, 400.0))
    assert turns[1].p50_us == pytest.approx((15.0, 25.0, 35.0))
    speedups, ratios = paired_ratios(turns[0], turns[1])
    assert speedups == pytest.approx((10.0,) * 3) and ratios == pytest.approx((10.0,) * 3)
    assert [b / f for b, f in zip(turns[0].p50_us, turns[1].p50_us)] == pytest.approx((100 / 15, 200 / 25, 300 / 35))


def test_paired_ratios_use_the_baseline_turns_around_each_round() -> None:
    base = Turns(np.ones(1), (100.0, 300.0, 200.0), (10.0, 30.0, 20.0))
    form = Turns(np.ones(1), (10.0, 25.0), (40.0, 50.0))
    speedups, ratios = paired_ratios(base, form)
    assert speedups == (20.0, 10.0) and ratios == pytest.approx((40 * (1 / 10 + 1 / 30) / 2, 50 * (1 / 30 + 1 / 20) / 2))


def test_the_floors_time_a_function_of_numpy_rows() -> None:
    seen = []
    lat = numpy_latency(lambda x: seen.append(x.shape), np.zeros((3, 5), np.float32), runs=10, warmup=2)
    assert lat.runs == 10 and lat.p50_us >= 0 and set(seen) == {(1, 5)} and len(seen) == 12
    assert kernel_seconds(lambda x: None, np.zeros((4, 2)), min_seconds=0.001) >= 0


def test_the_rounds_let_the_sign_test_decide_where_one_round_in_four_falls_across() -> None:
    from scipy.stats import binom

    from qmoe.bench import bench_latency, bench_mixture
    from qmoe.bench_rounds import ROUNDS
    from qmoe.bench_targets import SIGN_TEST_ALPHA, sign_verdict

    # the fewest rounds at or over the target that the test accepts, then how often that many
    # land there when each round does with probability 3/4
    need = next(k for k in range(ROUNDS + 1)
                if sign_verdict([2.0] * k + [0.5] * (ROUNDS - k), 1.0, at_least=True)[0])
    assert (ROUNDS, need) == (31, 21)
    assert binom.sf(need - 1, ROUNDS, 0.75) > 0.85  # 15 rounds (12 needed): 0.46
    assert binom.sf(need - 1, ROUNDS, 0.5) <= SIGN_TEST_ALPHA
    for fn in (bench_latency, bench_mixture, time_in_rounds):
        assert inspect.signature(fn).parameters["rounds"].default == ROUNDS
