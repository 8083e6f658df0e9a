"""The sweep trainable's worker set-up (its trials run under real Ray in test_sweep_ray.py)."""

from __future__ import annotations

import pytest

from qmoe.energy import EnergyMeter
from qmoe.spec import TrialSpec
from qmoe.sweeps.trainable import Payload, SweepTrainable


@pytest.mark.parametrize("energy, warmed", [((True, False), 1), ((False, False), 0)])
def test_setup_starts_the_energy_probe_only_for_trials_that_measure_energy(monkeypatch, energy, warmed) -> None:
    calls = []
    monkeypatch.setattr(EnergyMeter, "warm_up", classmethod(lambda cls: calls.append(cls)))
    trials = {str(i): TrialSpec(dataset="synth", fold=i + 1, experts=("q4",), measure_energy=e).to_dict()
              for i, e in enumerate(energy)}
    trainable = object.__new__(SweepTrainable)  # setup alone, without an actor
    trainable.setup({}, payload=Payload(tables={}, trials=trials, trial_fn="tests.sweeps.fakes:fast_trial",
                                        threads=1))
    assert len(calls) == warmed
