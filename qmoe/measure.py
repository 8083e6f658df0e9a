"""Measurements of a trained model (DESIGN §6): throughput, energy, peak memory.

Batch-1 latency has its own module (:mod:`qmoe.latency`: one core, a stated precision, the
co-running load); energy comes from CodeCarbon's offline tracker, whose kWh / kg are
converted here once and for all.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch

log = logging.getLogger(__name__)

KWH_TO_WH = 1e3
KWH_TO_MJ = 3.6e9  # 1 kWh = 3.6e6 J = 3.6e9 mJ
KG_TO_G = 1e3
KG_TO_UG = 1e9
_CC_MODES = {"intel_rapl": "rapl", "apple_powermetrics": "rapl", "cpu_load": "cpu-load",
             "constant": "constant", "intel_power_gadget": "rapl"}


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
        fn(x)
        n, start = 0, time.perf_counter()
        while True:
            fn(x)
            n += 1
            elapsed = time.perf_counter() - start
            if elapsed >= min_seconds and n >= 3:
                return n * batch / elapsed


@dataclass(frozen=True)
class Energy:
    """Energy and emissions of a measured block, in CodeCarbon's units (kWh, kg CO2eq)."""

    kwh: float
    co2_kg: float
    seconds: float
    method: str  # rapl | cpu-load | constant


class EnergyMeter:
    """CodeCarbon's offline tracker, one per process, measuring named blocks as tasks.

    The first block in a process costs ~1.5 s (CodeCarbon probes the hardware); later ones
    are cheap, which matters when Ray reuses a worker for many trials.
    """

    _tracker = None

    def __init__(self, country_iso_code: str | None = None) -> None:
        self.country = country_iso_code or os.environ.get("QMOE_COUNTRY", "IRL")

    def _get(self):  # noqa: ANN202 - codecarbon type
        if EnergyMeter._tracker is None:
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
            from codecarbon import OfflineEmissionsTracker

            EnergyMeter._tracker = OfflineEmissionsTracker(
                country_iso_code=self.country, save_to_file=False, log_level="error",
                tracking_mode="process", measure_power_secs=3600, allow_multiple_runs=True)
        return EnergyMeter._tracker

    def method(self) -> str:
        tracker = self._get()
        modes = [getattr(h, "_mode", None) for h in getattr(tracker, "_hardware", [])
                 if type(h).__name__ == "CPU"]
        return _CC_MODES.get(modes[0], str(modes[0])) if modes else "constant"

    @contextlib.contextmanager
    def measure(self, name: str) -> Iterator[list[Energy]]:
        """Measure the block; the yielded list receives one :class:`Energy` at exit."""
        tracker = self._get()
        out: list[Energy] = []
        tracker.start_task(name)
        try:
            yield out
        finally:
            data = tracker.stop_task()
            out.append(Energy(kwh=float(data.energy_consumed), co2_kg=float(data.emissions),
                              seconds=float(data.duration), method=self.method()))


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
