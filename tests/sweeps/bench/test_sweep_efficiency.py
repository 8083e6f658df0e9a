"""Sweep efficiency (qmoe.sweeps.bench.sweep_efficiency): the figures, and the three runs on Ray
(fake trials unless marked slow)."""

from __future__ import annotations

import dataclasses

import sys

import pytest

from qmoe.sweeps.bench.jobs import RunTimes, TrialTime
from qmoe.sweeps.bench.sweep_efficiency import ShortBench, SizedBench

FAKE = {"QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "0.05"}
QMOE = (sys.executable, "-m", "qmoe.cli.main")


def times(seconds: list[float], wall: float | None = None) -> RunTimes:
    return RunTimes(label="t", wall_seconds=wall,
                    trials=tuple(TrialTime(trial_key=str(i), model="q4", seconds=s) for i, s in enumerate(seconds)))


def test_efficiency_figures_and_targets() -> None:
    # 8 x 5 s one by one on 2 slots: 20 s of wall at best; ours takes 25 s, the defaults 60 s.
    short = ShortBench(serial=times([5.0] * 8), ours=times([5.5] * 8, wall=25.0), defaults=times([9.0] * 8, wall=60.0),
                       first_trial=8.0, command_wall=35.0, slots=2)
    assert short.ours_efficiency == pytest.approx(0.8) and short.defaults_efficiency == pytest.approx(1 / 3)
    assert short.ratio == pytest.approx(2.4) and short.met
    assert not short.efficiency_met and short.first_trial_met  # 0.8 < 0.85; 8 s <= 8 s
    quick = ShortBench(serial=times([5.0] * 8), ours=times([5.5] * 8, wall=23.0), defaults=times([9.0] * 8, wall=60.0),
                       first_trial=8.5, command_wall=35.0, slots=2)
    assert quick.ours_efficiency == pytest.approx(20 / 23) and quick.efficiency_met and not quick.first_trial_met
    assert not dataclasses.replace(quick, first_trial=None).first_trial_met  # never seen running: not met
    sized = SizedBench(reference=times([40.0] * 15), ours=times([42.0] * 15, wall=330.0), serial=True,
                       command_wall=400.0, table_name="t", slots=2)
    assert sized.efficiency == pytest.approx(300 / 330) and sized.efficiency_met  # >= 0.9
    assert sized.grid_hours == pytest.approx(330 * 15 / 3600) and sized.grid_met
    assert sized.grid_seeds_hours == pytest.approx(10 * 330 * 15 / 3600)  # ten seeds, each its own trial
    assert not dataclasses.replace(sized, ours=times([42.0] * 15, wall=375.0)).efficiency_met  # 0.8 < 0.9
    slow = SizedBench(reference=times([40.0] * 15), ours=times([42.0] * 15, wall=700.0), serial=True,
                      command_wall=720.0, table_name="t", slots=2)
    assert not slow.efficiency_met and not slow.grid_met


@pytest.mark.ray
def test_sweep_bench_runs_the_three_ways_with_fake_trials(ray_cluster, synth_table, monkeypatch) -> None:
    from qmoe.sweeps.bench.sweep_efficiency import sweep_bench

    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)
    got = sweep_bench(QMOE, address=ray_cluster)
    assert [len(t.trials) for t in (got.serial, got.ours, got.defaults)] == [8, 8, 8]
    assert got.ours_efficiency > 0 and got.defaults_efficiency > 0 and got.first_trial > 0


@pytest.mark.ray
def test_sized_bench_runs_the_table1_slice_with_fake_trials(ray_cluster, tmp_path, monkeypatch) -> None:
    from qmoe.data.sized import SizedConfig, sized_table_path
    from qmoe.sweeps.bench.sweep_efficiency import sized_bench

    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)
    tiny = sized_table_path(tmp_path, SizedConfig(n_clips=50, dim=8, n_classes=5, latent=4))
    got = sized_bench(QMOE, data=tiny, address=ray_cluster)
    assert len(got.ours.trials) == 15 and 0 < got.efficiency


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_bench_with_real_trials() -> None:
    from qmoe.sweeps.bench.sweep_efficiency import sweep_bench

    got = sweep_bench(QMOE)
    assert [len(t.trials) for t in (got.serial, got.ours, got.defaults)] == [8, 8, 8]
    assert 0 < got.ours_efficiency <= 1.05 and 0 < got.defaults_efficiency <= 1.05
