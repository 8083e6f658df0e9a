"""Energy of a block of work: CodeCarbon's offline tracker, one per process (DESIGN §6).

CodeCarbon probes the hardware once per process, at its first task: ~2.5 s of wall time here,
most of it waiting for py-cpuinfo's child process (~0.6 s of it this process's CPU). A sweep
worker starts that probe in a background thread as it starts (:meth:`EnergyMeter.warm_up`),
while it imports the trial's code, instead of inside its first trial. This module imports
neither torch nor CodeCarbon until it is used.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

_CC_MODES = {"intel_rapl": "rapl", "apple_powermetrics": "rapl", "cpu_load": "cpu-load",
             "constant": "constant", "intel_power_gadget": "rapl"}
WARM_UP_TASK = "qmoe-warm-up"


@dataclass(frozen=True)
class Energy:
    """Energy and emissions of a measured block, in CodeCarbon's units (kWh, kg CO2eq)."""

    kwh: float
    co2_kg: float
    seconds: float
    method: str  # rapl | cpu-load | constant


class EnergyMeter:
    """CodeCarbon's offline tracker, one per process, measuring named blocks as tasks.

    The first block in a process pays CodeCarbon's hardware probe unless :meth:`warm_up`
    ran it already; later ones are cheap, which matters when Ray reuses a worker for many
    trials.
    """

    _tracker = None
    _lock = threading.Lock()
    _warming: threading.Thread | None = None

    def __init__(self, country_iso_code: str | None = None) -> None:
        self.country = country_iso_code or os.environ.get("QMOE_COUNTRY", "IRL")

    @classmethod
    def warm_up(cls, country_iso_code: str | None = None) -> threading.Thread | None:
        """Run CodeCarbon's one-time hardware probe in a background thread (a throw-away task);
        the next :meth:`measure` waits for it. A probe that fails is forgotten: the first
        measurement then probes again, and raises what it raises. Returns the thread, or None
        when the tracker is already up or warming."""
        with cls._lock:
            if cls._tracker is not None or cls._warming is not None:
                return None
            thread = threading.Thread(target=cls(country_iso_code)._probe, name="qmoe-energy-probe", daemon=True)
            cls._warming = thread
        thread.start()
        return thread

    def _probe(self) -> None:
        try:
            tracker = self._tracker_now()
            tracker.start_task(WARM_UP_TASK)
            tracker.stop_task()
        except Exception as err:  # noqa: BLE001 - the measurement itself will raise it
            log.debug("CodeCarbon's warm-up failed (%s); the first measurement probes again", err)
            EnergyMeter._tracker = None

    def _get(self):  # noqa: ANN202 - codecarbon type
        warming = EnergyMeter._warming
        if warming is not None and warming is not threading.current_thread():
            warming.join()
            EnergyMeter._warming = None
        return self._tracker_now()

    def _tracker_now(self):  # noqa: ANN202 - codecarbon type
        if EnergyMeter._tracker is None:
            from codecarbon import OfflineEmissionsTracker

            # after the import, which sets its own level (INFO): the tracker's constructor logs
            # before it applies ``log_level``
            logging.getLogger("codecarbon").setLevel(logging.ERROR)
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
