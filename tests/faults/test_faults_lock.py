"""Fault 6: two commands on the same sweep at once, as real processes.

The second refuses at once with one clear line (the kernel lock names the holder's pid, or the
name is taken), writes nothing, and the first finishes undisturbed. In-process lock tests:
tests/sweeps/test_sweep_store.py (lock refused, lock released when its holder is SIGKILLed)
and tests/sweeps/test_sweep_ray.py::test_resume_refuses_while_another_command_holds_the_sweep.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qmoe.cli.main import main
from qmoe.sweeps.store import SweepStore
from tests.faults.procs import one_error_line, qmoe, rows, stop, wait_for

pytestmark = pytest.mark.ray


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``folder`` but the lock: (size, mtime_ns)."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in folder.rglob("*") if p.is_file() and p.name != ".lock" and "ray" not in p.parts}


def test_second_command_refuses_while_a_sweep_runs(ray_cluster, synth_table, tmp_path, capsys) -> None:
    storage = tmp_path / "runs"
    env = {**os.environ, "QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "1.0"}
    common = ["--storage", str(storage), "--address", ray_cluster]
    first = qmoe("sweep", "alpha", "--values", "0.3", "--name", "busy", *common, "--quiet", env=env)
    store = SweepStore(storage, "busy")
    try:
        wait_for(store.is_locked, timeout=120, what="the first command taking the sweep", alive=first)
        # status reads the table while the sweep runs, and says so
        assert main(["status", "busy", "--storage", str(storage)]) == 0
        assert "yes" in capsys.readouterr().out
        before = snapshot(store.path)
        second = [qmoe("resume", "busy", *common, env=env),
                  qmoe("sweep", "alpha", "--values", "0.3", "--name", "busy", *common, env=env)]
        results = [p.communicate(timeout=120) for p in second]
        assert [p.returncode for p in second] == [1, 1]
        resume_line, sweep_line = (one_error_line(err) for _, err in results)
        assert f"sweep 'busy' is in use by pid {first.pid} on " in resume_line
        assert "wait for it to finish" in resume_line
        assert "sweep 'busy' already exists" in sweep_line and "qmoe resume busy" in sweep_line
        assert first.poll() is None  # undisturbed: still running
        now = snapshot(store.path)
        assert all(now.get(k) == v or k == "results.parquet" for k, v in before.items())  # nothing else touched
        out, err = first.communicate(timeout=300)
    finally:
        stop(first)
    assert first.returncode == 0, err
    df = rows(store.results_path)
    assert len(df) == 10 and df["trial_key"].is_unique and (df["status"] == "ok").all()


@pytest.mark.slow
def test_second_resume_refuses_while_a_resume_runs(ray_cluster, synth_table, tmp_path) -> None:
    storage = tmp_path / "runs"
    env = {**os.environ, "QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "0.05"}
    common = ["--storage", str(storage), "--address", ray_cluster, "--quiet"]
    first = qmoe("sweep", "alpha", "--values", "0.3", "--name", "twice", *common, env=env)
    assert first.wait(timeout=300) == 0, first.communicate()[1]
    store = SweepStore(storage, "twice")
    store.read_results().iloc[:2].to_parquet(store.results_path, index=False)  # 8 trials left to run

    env["QMOE_FAKE_SECONDS"] = "1.0"
    one = qmoe("resume", "twice", *common, env=env)
    try:
        wait_for(store.is_locked, timeout=120, what="the first resume taking the sweep", alive=one)
        two = qmoe("resume", "twice", *common, env=env)
        _, err = two.communicate(timeout=120)
        assert two.returncode == 1
        assert f"in use by pid {one.pid}" in one_error_line(err)
        assert one.poll() is None
        _, err = one.communicate(timeout=300)
    finally:
        stop(one)
    assert one.returncode == 0, err
    df = rows(store.results_path)
    assert len(df) == 10 and df["trial_key"].is_unique and (df["status"] == "ok").all()
