"""Interleaved timing rounds for the deployed forms of ``qmoe bench`` (issue 14): every form and
the torch baseline take short turns, so the load of a shared machine falls on both sides of a
ratio alike.

Timing each form in one block of calls after another let a burst of load land on a single form:
in one such run binary's batch-1 p50 read 17.7 µs where its kernel (5.1 µs) and a bare call
(6.3 µs) add up to 11.4, and torch fp32 eager read 297 µs at the start and 172 µs at the end.

Here a round gives every callable one turn, the baseline (the first) first: a few untimed calls,
then ``runs`` timed calls on one sample each (batch 1), then whole batches for at least
``min_seconds`` (throughput). The baseline takes one more turn after the last round. A form's
ratio in a round is against the mean of the baseline's turns just before and after that round
(as the training epochs pair each epoch with its fp32 neighbours, :func:`qmoe.bench.bench_epochs`);
its figure is the median of its rounds' ratios, and a target's verdict is a sign test on them
(:func:`qmoe.bench_targets.sign_verdict`), "not shown" where the rounds do not decide.

The floors are timed apart from the rounds, each by its own best-of or median
(:func:`kernel_seconds`, :func:`numpy_latency`): they judge no target.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qmoe.latency import LatencyStats, pinned_to_one_core
from qmoe.measure import rows_per_second, torch_threads

#: Rounds of turns. The sign test at p <= 0.05 needs 21 of 31 rounds on one side (12 of 15).
#: Where 1 round in 4 falls on the far side of a target, 31 rounds decide 87% of the time, 15
#: only 46%: binary's batch-1 speed-up (~17x here, about 1 round in 4 at 20x or more) read "not
#: shown" in such runs. A round costs ~0.3 s; its turns time ``ceil(runs / rounds)`` calls each.
ROUNDS = 31
#: Untimed calls at the start of each turn (the form's weights back into the caches).
WARMUP = 5


@dataclass(frozen=True)
class Turns:
    """One callable's turns, in order (the baseline's: one more than the rounds)."""

    times_us: np.ndarray  # every timed batch-1 call, all turns
    p50_us: tuple[float, ...]  # per turn: the median batch-1 call
    rates: tuple[float, ...]  # per turn: samples/s at the batch

    def p50(self) -> float:
        """The median batch-1 call over every turn."""
        return float(np.percentile(self.times_us, 50))

    def p99(self) -> float:
        return float(np.percentile(self.times_us, 99))


def time_in_rounds(fns: Sequence[Callable[[torch.Tensor], object]], samples: torch.Tensor, *,
                   rounds: int = ROUNDS, runs: int = 20, batch: int = 256, min_seconds: float = 0.02,
                   warmup: int = WARMUP, pin: bool = True, numpy: frozenset[int] = frozenset()) -> list[Turns]:
    """Time every callable in ``rounds`` interleaved rounds, one thread; ``fns[0]`` is the
    baseline, timed at the start of each round and once after the last.

    Args:
        fns: callables on a (rows, D) tensor; the first is the baseline.
        samples: rows to cycle through (N, D); a batch repeats them up to ``batch`` rows.
        rounds: rounds of turns (at least 1).
        runs: timed batch-1 calls per turn.
        batch: rows per throughput call.
        min_seconds: least time of a turn's throughput calls (at least two calls are timed).
        warmup: untimed batch-1 calls and one untimed batch at the start of every turn.
        numpy: indices of the callables that take numpy arrays (the same rows) instead.
        pin: pin each turn to the core it starts on (:func:`qmoe.latency.pinned_to_one_core`;
            per turn, so that a process busy on one core holds back no more than a turn).
    """
    big = samples.repeat(-(-batch // len(samples)), 1)[:batch]
    ones = [samples[i: i + 1] for i in range(len(samples))]
    inputs = {False: (ones, big), True: ([np.ascontiguousarray(r.numpy()) for r in ones], big.numpy())}
    times: list[list[np.ndarray]] = [[] for _ in fns]
    p50s: list[list[float]] = [[] for _ in fns]
    rates: list[list[float]] = [[] for _ in fns]
    turn_no = [0]

    def turn(k: int) -> None:
        with pinned_to_one_core() if pin else contextlib.nullcontext():
            timed_turn(k)

    def timed_turn(k: int) -> None:
        fn, start = fns[k], turn_no[0] * runs
        one, rows = inputs[k in numpy]
        turn_no[0] += 1
        for i in range(warmup):
            fn(one[(start + i) % len(one)])
        t = np.empty(runs)
        for j in range(runs):
            x = one[(start + j) % len(one)]
            t0 = time.perf_counter_ns()
            fn(x)
            t[j] = (time.perf_counter_ns() - t0) / 1e3
        times[k].append(t)
        p50s[k].append(float(np.median(t)))
        rates[k].append(rows_per_second(fn, rows, min_seconds=min_seconds, min_calls=2))

    with torch_threads(1):
        for _ in range(rounds):
            for k in range(len(fns)):
                turn(k)
        turn(0)
    return [Turns(np.concatenate(t), tuple(p), tuple(r)) for t, p, r in zip(times, p50s, rates)]


def paired_ratios(base: Turns, form: Turns) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per round: the speed-up (the baseline's p50 / the form's, batch 1) and the throughput
    ratio (the form's samples/s / the baseline's), each against the mean of the baseline's two
    turns just before and after the round, in time per call (per sample at batch 256): load
    that grows or falls steadily over the run cancels exactly."""
    speedups = tuple((b0 + b1) / 2 / f for b0, b1, f in zip(base.p50_us, base.p50_us[1:], form.p50_us))
    ratios = tuple(f * (1 / b0 + 1 / b1) / 2 for b0, b1, f in zip(base.rates, base.rates[1:], form.rates))
    return speedups, ratios


def median(values: Sequence[float]) -> float:
    """The median of the rounds' ratios (nan without rounds)."""
    return float(statistics.median(values)) if values else float("nan")


def numpy_latency(fn: Callable[[np.ndarray], object], rows: np.ndarray, runs: int = 300,
                  warmup: int = 20) -> LatencyStats:
    """:func:`~qmoe.latency.measure_latency` for a function of numpy rows (no torch per call)."""
    one = [np.ascontiguousarray(rows[i: i + 1]) for i in range(len(rows))]  # (1, D) each
    for i in range(warmup):
        fn(one[i % len(one)])
    times = np.empty(runs)
    for i in range(runs):
        x = one[i % len(one)]
        t0 = time.perf_counter_ns()
        fn(x)
        times[i] = (time.perf_counter_ns() - t0) / 1e3
    return LatencyStats(mean_us=float(times.mean()), std_us=float(times.std(ddof=1)),
                        p50_us=float(np.percentile(times, 50)), p99_us=float(np.percentile(times, 99)), runs=runs)


def kernel_seconds(native: Callable[[np.ndarray], object], x: np.ndarray, min_seconds: float = 0.2) -> float:
    """Seconds per sample of a native model's compiled work: the best of repeated batch calls
    (the call's fixed cost spread over the batch), one thread."""
    native(x)
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        native(x)
        best = min(best, time.perf_counter() - t0)
    return best / len(x)
