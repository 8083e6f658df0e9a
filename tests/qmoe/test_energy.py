"""CodeCarbon's tracker, one per process, and its one-time probe run ahead in a background thread."""

from __future__ import annotations

import sys
import threading
import time
import types

import pytest

from qmoe.energy import WARM_UP_TASK, Energy, EnergyMeter


class FakeTracker:
    """Stands in for codecarbon's OfflineEmissionsTracker: records its tasks; the first start
    is slow (the hardware probe), and fails when told to."""

    made: list[FakeTracker] = []
    fail_first = False

    def __init__(self, **kwargs) -> None:
        self.kwargs, self.tasks, self.threads = kwargs, [], []
        self._hardware = []
        FakeTracker.made.append(self)

    def start_task(self, name: str) -> None:
        if not any(t.tasks for t in FakeTracker.made[:-1]) and not self.tasks:
            time.sleep(0.2)  # the probe
            if FakeTracker.fail_first and len(FakeTracker.made) == 1:
                raise RuntimeError("cpuinfo failed")
        self.tasks.append(name)
        self.threads.append(threading.current_thread().name)

    def stop_task(self):
        return types.SimpleNamespace(energy_consumed=1e-6, emissions=2e-7, duration=0.01)


@pytest.fixture
def fake_codecarbon(monkeypatch):
    monkeypatch.setattr(EnergyMeter, "_tracker", None)
    monkeypatch.setattr(EnergyMeter, "_warming", None)
    monkeypatch.setattr(FakeTracker, "made", [])
    monkeypatch.setitem(sys.modules, "codecarbon", types.SimpleNamespace(OfflineEmissionsTracker=FakeTracker))
    return FakeTracker


def test_warm_up_probes_in_the_background_and_the_first_measurement_reuses_it(fake_codecarbon) -> None:
    thread = EnergyMeter.warm_up("FRA")
    assert thread is not None and thread.daemon
    assert EnergyMeter.warm_up() is None  # already warming: no second probe
    with EnergyMeter().measure("train") as out:
        pass
    [tracker] = fake_codecarbon.made  # one tracker, made by the warm-up
    assert tracker.tasks == [WARM_UP_TASK, "train"]
    assert tracker.threads[0] == "qmoe-energy-probe" and tracker.threads[1] == threading.current_thread().name
    assert tracker.kwargs["country_iso_code"] == "FRA"
    assert out == [Energy(kwh=1e-6, co2_kg=2e-7, seconds=0.01, method="constant")]
    assert not thread.is_alive() and EnergyMeter._warming is None
    assert EnergyMeter.warm_up() is None  # the tracker is up


def test_a_failed_warm_up_is_forgotten_and_the_measurement_probes_again(fake_codecarbon) -> None:
    fake_codecarbon.fail_first = True
    try:
        EnergyMeter.warm_up()
        with EnergyMeter().measure("train") as out:
            pass
    finally:
        fake_codecarbon.fail_first = False
    assert len(fake_codecarbon.made) == 2 and fake_codecarbon.made[1].tasks == ["train"]
    assert len(out) == 1


def test_measurement_without_warm_up(fake_codecarbon) -> None:
    with EnergyMeter().measure("inference") as out:
        pass
    assert [t.tasks for t in fake_codecarbon.made] == [["inference"]] and len(out) == 1


def test_importing_the_meter_loads_neither_torch_nor_codecarbon() -> None:
    import subprocess

    code = "import sys, qmoe.energy; print(int('torch' in sys.modules), int('codecarbon' in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["0", "0"]
