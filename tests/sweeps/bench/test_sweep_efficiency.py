"""Sweep efficiency (qmoe.sweeps.bench.sweep_efficiency): the figures, and the three runs on Ray
(fake trials unless marked slow)."""

from __future__ import annotations

import dataclasses
import subprocess
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
    # against the trials' own 42 s inside the sweep: 315 s of work per slot in 330 s of wall
    assert sized.own_efficiency == pytest.approx(315 / 330)
    assert sized.efficiency == pytest.approx(sized.own_efficiency * 40 / 42)  # over their slow-down there
    assert sized.grid_hours == pytest.approx(330 * 15 / 3600) and sized.grid_met
    assert sized.grid_seeds_hours == pytest.approx(10 * 330 * 15 / 3600)  # ten seeds, each its own trial
    assert not dataclasses.replace(sized, ours=times([42.0] * 15, wall=375.0)).efficiency_met  # 0.8 < 0.9
    slow = SizedBench(reference=times([40.0] * 15), ours=times([42.0] * 15, wall=700.0), serial=True,
                      command_wall=720.0, table_name="t", slots=2)
    assert not slow.efficiency_met and not slow.grid_met


def test_the_short_efficiency_ceiling_is_the_workers_imports_ahead_of_the_trials() -> None:
    # 8 x 5 s on 2 slots: 20 s at best; a worker's imports take 3 s first: 20 / 23 at most
    short = ShortBench(serial=times([5.0] * 8), ours=times([5.5] * 8, wall=25.0), defaults=times([9.0] * 8, wall=60.0),
                       first_trial=8.0, command_wall=35.0, slots=2, worker_imports=3.0)
    assert short.ceiling == pytest.approx(20 / 23) and not short.ruled_out  # 0.870 >= 0.85
    slow = dataclasses.replace(short, worker_imports=4.0)
    assert slow.ceiling == pytest.approx(20 / 24) and slow.ruled_out  # 0.833 < 0.85: no sweep meets it here
    assert dataclasses.replace(short, worker_imports=None).ceiling is None  # not measured: no verdict
    assert not dataclasses.replace(short, worker_imports=None).ruled_out
    one = dataclasses.replace(short, slots=1)  # one slot: 40 s of trials after the imports
    assert one.ceiling == pytest.approx(40 / 43)


def test_the_first_trial_floor_is_rays_start_then_a_workers_imports() -> None:
    short = ShortBench(serial=times([5.0] * 8), ours=times([5.5] * 8, wall=25.0), defaults=times([9.0] * 8, wall=60.0),
                       first_trial=12.0, command_wall=35.0, slots=2, worker_imports=3.5, ray_start=4.0)
    assert short.first_trial_floor == pytest.approx(7.5) and not short.first_trial_ruled_out  # 7.5 s <= 8 s
    slow = dataclasses.replace(short, worker_imports=4.5)
    assert slow.first_trial_floor == pytest.approx(8.5) and slow.first_trial_ruled_out  # no sweep runs one by 8 s
    assert not slow.first_trial_met  # the measured figure still decides met or not
    for unmeasured in (dataclasses.replace(slow, ray_start=None), dataclasses.replace(slow, worker_imports=None)):
        assert unmeasured.first_trial_floor is None and not unmeasured.first_trial_ruled_out


def test_ray_start_seconds_keeps_the_least_of_its_runs_from_each_process_start(monkeypatch) -> None:
    from qmoe.errors import QmoeError
    from qmoe.sweeps.bench import sweep_efficiency as se

    clock = iter([100.0, 200.0])  # when each process is started
    up = iter([105.5, 204.25])  # when each one's Ray was up (printed by the process)
    monkeypatch.setattr(se.time, "time", lambda: next(clock))

    def fake_run(cmd, **kwargs):
        assert "ray_session(None" in cmd[-1]  # the embedded Ray a sweep starts
        return subprocess.CompletedProcess(cmd, 0, stdout=f"{next(up)}\n", stderr="")

    monkeypatch.setattr(se.subprocess, "run", fake_run)
    assert se.ray_start_seconds(runs=2) == pytest.approx(4.25)
    monkeypatch.setattr(se.time, "time", lambda: 0.0)
    monkeypatch.setattr(se.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(
        cmd, 1, stdout="", stderr="Traceback\nRuntimeError: no raylet\n"))
    with pytest.raises(QmoeError, match="timing Ray's start failed .exit 1.: RuntimeError: no raylet"):
        se.ray_start_seconds(runs=1)


@pytest.mark.slow
def test_ray_start_seconds_starts_and_stops_a_real_embedded_ray() -> None:
    from qmoe.sweeps.bench import sweep_efficiency as se

    assert 0.5 < se.ray_start_seconds(runs=1) < 120.0


def test_worker_import_seconds_times_ray_tune_and_the_trial_code_after_ray(monkeypatch) -> None:
    from qmoe.errors import QmoeError
    from qmoe.sweeps.bench import sweep_efficiency as se

    got = se.worker_import_seconds(runs=1)
    assert 0.0 < got < 120.0
    # a broken import is reported, not timed
    monkeypatch.setattr(se, "WORKER_IMPORTS", ("qmoe_no_such_module",))
    with pytest.raises(QmoeError, match="qmoe_no_such_module.*failed"):
        se.worker_import_seconds(runs=1)


def test_worker_import_seconds_keeps_the_least_of_its_runs(monkeypatch) -> None:
    from qmoe.sweeps.bench import sweep_efficiency as se

    outputs = iter(["2.5\n", "1.75\n", "3.0\n"])

    def fake_run(cmd, **kwargs):
        assert "import ray.tune, qmoe.trial" in cmd[-1]
        return subprocess.CompletedProcess(cmd, 0, stdout=next(outputs), stderr="")

    monkeypatch.setattr(se.subprocess, "run", fake_run)
    assert se.worker_import_seconds(runs=3) == 1.75


@pytest.mark.ray
def test_sweep_bench_runs_the_three_ways_with_fake_trials(ray_cluster, synth_table, monkeypatch) -> None:
    from qmoe.sweeps.bench.sweep_efficiency import sweep_bench

    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)
    got = sweep_bench(QMOE, address=ray_cluster)
    assert [len(t.trials) for t in (got.serial, got.ours, got.defaults)] == [8, 8, 8]
    assert got.ours_efficiency > 0 and got.defaults_efficiency > 0 and got.first_trial > 0
    assert got.worker_imports > 0 and 0 < got.ceiling < 1  # the imports were timed in the same run
    assert got.ray_start is None and got.first_trial_floor is None  # the sweeps joined a running Ray


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
