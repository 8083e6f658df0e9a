"""Measurements of a trained model (DESIGN §6): throughput, energy, peak memory.

Batch-1 latency has its own module (:mod:`qmoe.latency`: one core, a stated precision, the
co-running load); energy comes from CodeCarbon's offline tracker, whose kWh / kg are
converted here once and for all.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch

from qmoe.energy import Energy, EnergyMeter  # noqa: F401 - measurements of a trial, in one place

log = logging.getLogger(__name__)

KWH_TO_WH = 1e3
KWH_TO_MJ = 3.6e9  # 1 kWh = 3.6e6 J = 3.6e9 mJ
KG_TO_G = 1e3
KG_TO_UG = 1e9


@contextlib.contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op torch threads, then restore."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@torch.no_grad()
def measure_throughput(fn: Callable[[torch.Tensor], object], samples: torch.Tensor, *,
                       batch: int = 256, min_seconds: float = 0.3) -> float:
    """Samples per second at ``batch`` (rows repeated to fill it), one thread."""
    reps = int(np.ceil(batch / len(samples)))
    x = samples.repeat(reps, 1)[:batch]  # (batch, D)
    with torch_threads(1):
        return rows_per_second(fn, x, min_seconds=min_seconds, min_calls=3)


def rows_per_second(fn: Callable[[Any], object], x: Any, *, min_seconds: float, min_calls: int) -> float:
    """Rows of ``x`` per second through ``fn`` (any callable on a batch: a tensor or an array):
    one untimed call, then calls for at least ``min_seconds`` and ``min_calls``."""
    fn(x)
    n, start = 0, time.perf_counter()
    while True:
        fn(x)
        n += 1
        elapsed = time.perf_counter() - start
        if elapsed >= min_seconds and n >= min_calls:
            return n * len(x) / elapsed


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS counter of this process (Linux); False where unsupported."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def rss_mb() -> float:
    """Resident memory of this process now, in MB (Linux ``/proc``; nan elsewhere)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return float("nan")


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MB (since the last :func:`reset_peak_rss`)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
