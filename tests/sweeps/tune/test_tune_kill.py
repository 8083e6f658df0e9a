"""SIGKILL the driver of ``qmoe tune`` mid-way, then ``qmoe tune --resume``: exactly the budget."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from qmoe.sweeps import RunOptions
from qmoe.layout import COUNTED
from qmoe.sweeps.tune.study import open_study, optuna_quiet
from qmoe.sweeps.tune.tune_runner import resume_tune
from qmoe.sweeps.tune.tune_store import TuneStore

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPACE = """
[fixed]          # a few seconds per trial, and no ASHA stop, so that trials are running at the kill
max_epochs = 6
patience = 6
hidden = [256]
[scheduler]
enabled = false
"""
BUDGET = 8


def counted_rows(path: Path) -> pd.DataFrame:
    try:
        df = pd.read_parquet(path)
    except (FileNotFoundError, OSError):
        return pd.DataFrame(columns=["trial", "status"])
    return df[df["status"].isin(COUNTED)]


def test_sigkill_mid_tune_then_resume_reaches_the_budget_exactly(ray_cluster, synth_table, tmp_path) -> None:
    (tmp_path / "space.toml").write_text(SPACE)
    storage = tmp_path / "runs"
    table = storage / "killed" / "tuning.parquet"
    driver = subprocess.Popen(
        [sys.executable, "-m", "qmoe.cli.main", "tune", "--model", "q4", "--folds", "1,2", "--trials", str(BUDGET),
         "--space", str(tmp_path / "space.toml"), "--name", "killed", "--storage", str(storage),
         "--address", ray_cluster, "--quiet"],
        env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 180
        while len(counted_rows(table)) < 2:
            assert driver.poll() is None, driver.communicate()
            assert time.time() < deadline, "no finished trial within 180 s"
            time.sleep(0.1)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    before = counted_rows(table).set_index("trial")
    assert 2 <= len(before) < BUDGET
    time.sleep(1.0)  # let Ray reap the killed driver's workers

    outcome = resume_tune("killed", options=RunOptions(storage=storage, quiet=True))
    rows = outcome.rows
    done = rows[rows["status"].isin(COUNTED)]
    assert outcome.finished == len(done) == BUDGET and rows["trial"].is_unique
    assert outcome.ran == BUDGET - len(before)
    # what finished before the kill is kept as it was
    assert (done.set_index("trial").loc[before.index, "finished_at"] == before["finished_at"]).all()
    # the study agrees with the table: trials cut short are failed there and not counted here
    store = TuneStore(storage, "killed")
    with store.lock(), optuna_quiet():
        states = {t.number: t.state.name for t in open_study(store).trials}
    assert "RUNNING" not in states.values() and set(states) == set(rows["trial"])
    for r in rows.itertuples():
        assert states[r.trial] == {"complete": "COMPLETE", "stopped": "COMPLETE", "error": "FAIL",
                                   "interrupted": "FAIL"}[r.status]
    assert outcome.interrupted == int((rows["status"] == "interrupted").sum())
    assert rows["is_default"].sum() >= 1 and (store.path / "best.toml").is_file()
