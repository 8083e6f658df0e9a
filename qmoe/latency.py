"""Batch-1 latency that means something on a shared machine (DESIGN §6, issue 13 §4).

Three things make a latency figure comparable between trials:

- **one core**: the timed calls run pinned to one CPU (``os.sched_setaffinity``, restored
  afterwards), the one the process is on when timing starts, so the scheduler does not move
  the loop between cores (cold caches) mid-measurement;
- **a stated precision**: calls are timed in rounds of ``runs`` until the 95% confidence
  interval of the median -- distribution-free, from order statistics (the binomial
  distribution of the number of calls below the median, :func:`median_ci`) -- is within
  ``±precision`` of the median, or a cap on calls or seconds is reached; the number of calls
  and the interval's half-width are recorded;
- **the co-running load, recorded**: the CPU time other processes used during the timing
  window, on the pinned core and on the whole machine (``/proc/stat`` through psutil, minus
  this process's own), and the 1-minute load average. A trial timed while a neighbour
  trained on the same core says so in its row.

What it cannot do is make a neighbour go away: a sweep running two trials on two cores times
each trial while the other trains; the recorded load says how much. ``--latency isolated``
(:mod:`qmoe.sweeps.isolated`) times the saved models one at a time after the sweep instead.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import psutil
import torch
from scipy import stats

from qmoe.measure import torch_threads

log = logging.getLogger(__name__)

CONFIDENCE = 0.95  # of the median's interval
PRECISION = 0.02  # target half-width of that interval, as a share of the median
MAX_RUNS = 20_000  # cap on timed calls (a 10 µs model reaches it in ~0.2 s)
MAX_SECONDS = 3.0  # cap on timing seconds (a 400 µs model: ~7,500 calls)
#: The measures of a latency figure, as results-table columns ``latency_<name>``.
MEASURES = ("mean_us", "std_us", "p50_us", "p99_us", "runs", "p50_ci_us", "cpu", "load1",
            "others_cores", "core_others")


@dataclass(frozen=True)
class LatencyStats:
    """Batch-1 latency in microseconds over ``runs`` timed calls, and the conditions.

    Attributes:
        p50_ci_us: half-width of the 95% order-statistic confidence interval of the median.
        cpu: the core the calls were pinned to (None: not pinned, e.g. not Linux).
        load1: the 1-minute load average at the end of the timing.
        others_cores: CPU time of other processes during the timing / its wall time (cores).
        core_others: share of the pinned core's time other processes used during the timing.
    """

    mean_us: float
    std_us: float
    p50_us: float
    p99_us: float
    runs: int
    p50_ci_us: float | None = None
    cpu: int | None = None
    load1: float | None = None
    others_cores: float | None = None
    core_others: float | None = None

    def columns(self, prefix: str = "latency_") -> dict[str, float | int | None]:
        """The figures as results-table columns (``latency_p50_us``, ...)."""
        return {prefix + name: getattr(self, name) for name in MEASURES}


def median_ci(times: np.ndarray, confidence: float = CONFIDENCE) -> tuple[float, float]:
    """A distribution-free confidence interval of the median of ``times``.

    The interval between order statistics ``x_(l)`` and ``x_(n+1-l)`` covers the median with
    probability ``1 - 2 P(B < l)``, B ~ Binomial(n, 1/2), whatever the distribution (latencies
    are skewed and heavy-tailed, so no normal approximation). ``l`` is the largest index with
    ``P(B < l) <= (1 - confidence) / 2`` (scipy's binomial quantile). Returns (low, high);
    (nan, nan) when n is too small for any interval at this confidence (n < 6 at 95%).
    """
    x = np.sort(np.asarray(times, dtype=np.float64))
    n = len(x)
    tail = (1.0 - confidence) / 2.0
    # ppf(tail) is the smallest k with P(B <= k) >= tail, so P(B <= k - 1) < tail: l = k.
    low = int(stats.binom.ppf(tail, n, 0.5)) if n else 0
    if low < 1:
        return float("nan"), float("nan")
    return float(x[low - 1]), float(x[n - low])


@contextlib.contextmanager
def pinned_to_one_core() -> Iterator[int | None]:
    """Run the block pinned to one CPU of this process's affinity set; yields the CPU (None
    where affinity cannot be set). The previous affinity is restored even if the block raises.

    The CPU is the one the process runs on now (the scheduler has already placed it away from
    other busy processes where it could), else the lowest allowed one.
    """
    if not hasattr(os, "sched_setaffinity"):
        yield None
        return
    before = os.sched_getaffinity(0)  # of the calling thread (Linux: pid 0 = this thread)
    current = _current_cpu()
    cpu = current if current in before else min(before)
    try:
        os.sched_setaffinity(0, {cpu})
    except OSError as err:
        log.debug("cannot pin to CPU %d: %s", cpu, err)
        yield None
        return
    try:
        yield cpu
    finally:
        os.sched_setaffinity(0, before)


def _current_cpu() -> int:
    """The CPU the calling thread last ran on (-1 when unknown)."""
    try:
        with open("/proc/thread-self/stat", encoding="ascii") as fh:
            return int(fh.read().rsplit(")", 1)[1].split()[36])  # field 39, processor
    except (OSError, ValueError, IndexError):
        try:
            return int(psutil.Process().cpu_num())
        except (AttributeError, psutil.Error):
            return -1


def _busy(times: object) -> float:
    """Seconds a CPU (or the machine) was not idle, from a psutil ``cpu_times`` entry."""
    idle = getattr(times, "idle", 0.0) + getattr(times, "iowait", 0.0)
    return float(sum(times)) - idle - getattr(times, "guest", 0.0) - getattr(times, "guest_nice", 0.0)


class CoLoad:
    """CPU time used by other processes between :meth:`start` and :meth:`stop`.

    The kernel counts CPU time in ticks (10 ms here), so a window of a fraction of a second
    gives a coarse figure; it tells a quiet core from one shared with a busy neighbour.
    """

    def __init__(self, cpu: int | None) -> None:
        self.cpu = cpu
        self._proc = psutil.Process()

    def _sample(self) -> tuple[float, float, float | None, float, float]:
        own = self._proc.cpu_times()
        per_cpu = psutil.cpu_times(percpu=True)
        core = _busy(per_cpu[self.cpu]) if self.cpu is not None and self.cpu < len(per_cpu) else None
        return (time.perf_counter(), _busy(psutil.cpu_times()), core, own.user + own.system,
                time.thread_time())

    def start(self) -> None:
        self._t0 = self._sample()

    def stop(self) -> tuple[float | None, float | None, float | None]:
        """(load1, others_cores, core_others) over the window (None where unknown)."""
        (w0, m0, c0, p0, t0), (w1, m1, c1, p1, t1) = self._t0, self._sample()
        wall = max(w1 - w0, 1e-9)
        # The machine: minus every thread of this process; the pinned core: minus the timing
        # thread only (this process's other threads may run on the other cores meanwhile).
        others = max(0.0, (m1 - m0) - max(p1 - p0, 0.0)) / wall
        core = None if c0 is None or c1 is None else min(1.0, max(0.0, (c1 - c0) - max(t1 - t0, 0.0)) / wall)
        try:
            load1: float | None = os.getloadavg()[0]
        except OSError:
            load1 = None
        return load1, others, core


@torch.no_grad()
def measure_latency(fn: Callable[[torch.Tensor], object], samples: torch.Tensor, *, runs: int = 200,
                    warmup: int = 20, precision: float | None = PRECISION, max_runs: int = MAX_RUNS,
                    max_seconds: float = MAX_SECONDS, pin: bool = True) -> LatencyStats:
    """Time ``fn`` on one sample at a time (cycling through ``samples``), one thread.

    Args:
        fn: the model (anything callable on a (1, D) tensor).
        samples: rows to cycle through (N, D).
        runs: calls per round; at least one round is timed.
        warmup: untimed calls first (caches, lazy compilation).
        precision: stop once the 95% CI of the median is within ± this share of it; None =
            exactly ``runs`` calls.
        max_runs, max_seconds: caps on the timed calls when ``precision`` is not reached.
        pin: pin the calls to one core (see :func:`pinned_to_one_core`).
    """
    pinning = pinned_to_one_core() if pin else contextlib.nullcontext(None)
    with torch_threads(1), pinning as cpu:
        for i in range(warmup):
            fn(samples[i % len(samples)].unsqueeze(0))
        load = CoLoad(cpu)
        load.start()
        rounds: list[np.ndarray] = []
        start, n = time.perf_counter(), 0
        while True:
            times = np.empty(runs, dtype=np.float64)
            for j in range(runs):
                x = samples[(n + j) % len(samples)].unsqueeze(0)  # (1, D)
                t0 = time.perf_counter_ns()
                fn(x)
                times[j] = (time.perf_counter_ns() - t0) / 1e3
            rounds.append(times)
            n += runs
            if precision is None or n + runs > max_runs or time.perf_counter() - start >= max_seconds:
                break
            low, high = median_ci(np.concatenate(rounds))
            if (high - low) / 2.0 <= precision * float(np.median(np.concatenate(rounds))):
                break
        load1, others, core = load.stop()
    times = np.concatenate(rounds)
    low, high = median_ci(times)
    return LatencyStats(mean_us=float(times.mean()), std_us=float(times.std(ddof=1)) if n > 1 else 0.0,
                        p50_us=float(np.percentile(times, 50)), p99_us=float(np.percentile(times, 99)),
                        runs=n, p50_ci_us=(high - low) / 2.0 if np.isfinite(low) else None, cpu=cpu,
                        load1=load1, others_cores=others, core_others=core)
