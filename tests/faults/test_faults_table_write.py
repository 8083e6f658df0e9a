"""Fault 4: the process dies (SIGKILL) while writing the results table.

The previous table stays readable and complete (the write goes to a temporary file that is
renamed into place), the torn temporary file is removed by the next command that takes the
sweep, and resume fills in the rest. The same write failing with an exception (not a kill) is
tested in tests/sweeps/test_sweep_store.py::test_atomic_write_keeps_previous_file_on_failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

import pandas as pd
import pytest

from qmoe.cli.main import main
from qmoe.record import TrialRecord
from qmoe.spec import TrialSpec
from qmoe.sweeps.store import SweepStore
from tests.faults.procs import rows, stop, wait_for

TORN = ".results.parquet.*.tmp"


def test_kill_mid_write_keeps_the_previous_table(tmp_path) -> None:
    marker = tmp_path / "mid-write"
    code = textwrap.dedent(f"""
        from pathlib import Path
        from qmoe.record import TrialRecord
        from qmoe.spec import TrialSpec
        from qmoe.sweeps.store import SweepStore
        from tests.faults.torn_write import install

        def row(fold):
            spec = TrialSpec(dataset="synth", fold=fold, experts=("q4",))
            return TrialRecord(**TrialRecord.identity(spec), f1_macro=0.8).to_row()

        install(Path({str(marker)!r}), 3)
        store = SweepStore({str(tmp_path)!r}, "s")
        store.create({{"name": "s", "trials": []}})
        with store.lock():
            for fold in (1, 2, 3):
                store.upsert([row(fold)])
    """)
    child = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.PIPE, text=True)
    try:
        wait_for(marker.exists, timeout=60, what="the third write", alive=child)
        store = SweepStore(tmp_path, "s")
        before = store.results_path.read_bytes()
        os.kill(child.pid, signal.SIGKILL)
        child.wait()
    finally:
        stop(child)
    (torn,) = store.path.glob(TORN)  # the half-written temporary file is all the kill left
    assert torn.stat().st_size > 0
    with pytest.raises(Exception):
        pd.read_parquet(torn)
    assert store.results_path.read_bytes() == before  # the previous version, untouched
    df = store.read_results()
    assert sorted(df["fold"]) == [1, 2] and (df["status"] == "ok").all()
    assert not store.is_locked()  # the kernel released the dead writer's lock
    with store.lock():  # the next command cleans up and writes on
        assert not list(store.path.glob(TORN))
        spec = TrialSpec(dataset="synth", fold=3, experts=("q4",))
        store.upsert([TrialRecord(**TrialRecord.identity(spec), f1_macro=0.8).to_row()])
    assert sorted(store.read_results()["fold"]) == [1, 2, 3]


@pytest.mark.slow
@pytest.mark.ray
def test_driver_killed_mid_write_then_resumed(ray_cluster, synth_table, tmp_path, monkeypatch, capsys) -> None:
    marker, storage = tmp_path / "mid-write", tmp_path / "runs"
    env = {**os.environ, "QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "0.3"}
    args = ["sweep", "alpha", "--values", "0.3", "--name", "torn", "--storage", str(storage),
            "--address", ray_cluster, "--quiet"]
    driver = subprocess.Popen([sys.executable, "-m", "tests.faults.torn_write", str(marker), "4", *args],
                              env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = storage / "torn" / "results.parquet"
    try:
        wait_for(marker.exists, timeout=180, what="the fourth results write", alive=driver)
        before = results.read_bytes()
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        stop(driver)
    assert len(list(results.parent.glob(TORN))) == 1
    assert results.read_bytes() == before
    kept = rows(results)
    assert len(kept) == 3 and kept["trial_key"].is_unique and (kept["status"] == "ok").all()

    monkeypatch.setenv("QMOE_TRIAL_FN", "tests.sweeps.fakes:fast_trial")
    code = main(["resume", "torn", "--storage", str(storage), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 0, err
    after = rows(results)
    assert len(after) == 10 and after["trial_key"].is_unique and (after["status"] == "ok").all()
    merged = kept.set_index("trial_key")["started_at"]
    assert (after.set_index("trial_key").loc[merged.index, "started_at"] == merged).all()
    assert not list(results.parent.glob(TORN))
