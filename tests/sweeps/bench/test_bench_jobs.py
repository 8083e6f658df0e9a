"""The sweep benchmarks' runners with fake trials: job files, one by one, Ray Tune's defaults."""

from __future__ import annotations

import pytest

from qmoe.sweeps import bits_spec, plan_sweep
from qmoe.sweeps.bench.jobs import RunTimes, TrialTime, efficiency, read_job, run_serially, write_job
from qmoe.sweeps.overrides import apply_overrides

FAKE = {"QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "0.05"}


@pytest.fixture
def short_plan(synth_table):
    return plan_sweep(apply_overrides(bits_spec((4,)), folds=(1, 2)))  # 8 trials on synth


@pytest.fixture
def fake_trials(monkeypatch):
    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)


def test_job_file_names_the_trials_and_reloads_the_tables(short_plan, tmp_path) -> None:
    trials, tables = read_job(write_job(short_plan, tmp_path / "job.json"))
    assert [t.trial_key for t in trials] == [t.trial_key for t in short_plan.trials]
    assert trials == list(short_plan.trials)
    assert {n: t.content_hash() for n, t in tables.items()} == \
        {n: t.content_hash() for n, t in short_plan.tables.items()}


def test_run_serially_times_every_trial_in_order(short_plan, fake_trials) -> None:
    times = run_serially(short_plan.trials, short_plan.tables)
    assert [t.trial_key for t in times.trials] == [t.trial_key for t in short_plan.trials]
    assert all(t.seconds >= 0.05 for t in times.trials) and times.wall_seconds is None
    assert times.mean_seconds == pytest.approx(times.trial_seconds / 8)


def test_run_times_round_trip_and_efficiency() -> None:
    serial = RunTimes(label="one by one", trials=(TrialTime(trial_key="a", model="q4", seconds=6.0),
                                                  TrialTime(trial_key="b", model="fp32", seconds=4.0)))
    assert RunTimes.from_dict(serial.to_dict()) == serial
    assert efficiency(serial, wall_seconds=5.0, slots=2) == pytest.approx(1.0)
    assert efficiency(serial, wall_seconds=10.0, slots=2) == pytest.approx(0.5)


@pytest.mark.ray
def test_ray_tune_defaults_run_every_trial(ray_cluster, short_plan, fake_trials, tmp_path) -> None:
    from qmoe.sweeps.bench.ray_defaults import run_with_defaults

    trials = short_plan.trials[:3]  # a fresh worker process per trial: a few seconds each
    times = run_with_defaults(trials, short_plan.tables, tmp_path / "tune")
    assert sorted(t.trial_key for t in times.trials) == sorted(t.trial_key for t in trials)
    assert all(t.seconds >= 0.05 for t in times.trials)
    assert times.wall_seconds > times.trial_seconds / 2
