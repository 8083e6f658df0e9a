"""Fault 1: the driver (``qmoe sweep``, then ``qmoe resume``) is SIGKILLed at seeded random points.

``qmoe resume`` then completes the sweep: every trial is in the table exactly once, and a trial
that had its row before a kill is never run again (same ``started_at``, no start logged after its row).
A kill point is a number of rows to wait for (0 = as soon as the process runs, before the
sweep may even exist) plus a random delay, so kills can land during start-up, between trials,
mid-trial and during row writes. Seed 0 runs by default; the others are ``slow``.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from tests.faults.procs import qmoe, rows, stop, wait_for

pytestmark = pytest.mark.ray

TOTAL = 10  # alpha 0.3 and its baseline, 5 folds


def starts(log: Path) -> Counter:
    if not log.exists():
        return Counter()
    return Counter(line.split()[0] for line in log.read_text().splitlines() if line.endswith("start"))


def kill_at(proc, results: Path, rng: random.Random, lo: int) -> pd.DataFrame:
    """SIGKILL ``proc`` once ``k`` rows exist (k drawn in lo..TOTAL-1) plus a random delay.

    Returns the table as it was the moment the process was dead.
    """
    k, delay = rng.randint(lo, TOTAL - 1), rng.uniform(0.0, 1.0)
    try:
        wait_for(lambda: len(rows(results)) >= k, timeout=180, what=f"{k} rows", alive=proc)
    except AssertionError:
        if proc.poll() == 0:  # it finished before the kill point: nothing left to kill
            return rows(results)
        raise
    time.sleep(delay)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    time.sleep(1.0)  # the killed job's workers wind down (Ray kills them with their driver)
    return rows(results)


@pytest.mark.parametrize("seed", [0, pytest.param(1, marks=pytest.mark.slow),
                                  pytest.param(2, marks=pytest.mark.slow),
                                  pytest.param(3, marks=pytest.mark.slow)])
def test_driver_sigkilled_at_random_points_then_resumed(ray_cluster, synth_table, tmp_path, seed) -> None:
    rng = random.Random(seed)
    log = tmp_path / "trials.log"
    env = {**os.environ, "QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "0.8",
           "QMOE_FAKE_LOG": str(log)}
    common = ["--storage", str(tmp_path / "runs"), "--address", ray_cluster, "--quiet"]
    sweep_dir = tmp_path / "runs" / "killed"
    results = sweep_dir / "results.parquet"

    kept: dict[str, str] = {}  # trial_key -> started_at of every row that existed at a kill
    runs: dict[str, int] = {}  # trial_key -> times it had started when its row was first seen

    def check_and_remember(table: pd.DataFrame) -> None:
        assert table["trial_key"].is_unique and (table["status"] == "ok").all()
        so_far = starts(log)
        for key, started in zip(table["trial_key"], table["started_at"]):
            assert kept.setdefault(key, started) == started, f"{key} was run again"
            runs.setdefault(key, so_far[key])

    # kill 1: the sweep itself; seed 0 kills it mid-sweep, the others anywhere, start-up included
    driver = qmoe("sweep", "alpha", "--values", "0.3", "--name", "killed", *common, env=env)
    try:
        check_and_remember(kill_at(driver, results, rng, lo=3 if seed == 0 else 0))
    finally:
        stop(driver)
    if not (sweep_dir / "sweep.json").exists():
        # killed before the sweep existed: no half-made folder blocks starting it again
        assert not sweep_dir.exists()
        driver = qmoe("sweep", "alpha", "--values", "0.3", "--name", "killed", *common, env=env)
        try:
            check_and_remember(kill_at(driver, results, rng, lo=1))
        finally:
            stop(driver)

    # kill 2 (slow seeds): the first resume, at a later random point
    if seed != 0 and len(kept) < TOTAL:
        resume = qmoe("resume", "killed", *common, env=env)
        try:
            check_and_remember(kill_at(resume, results, rng, lo=len(kept) + 1))
        finally:
            stop(resume)

    had_row, before = set(kept), starts(log)
    # a trial is never started again once it has its row (twice before is fine: killed in flight)
    assert all(before[k] == runs[k] for k in had_row), (before, runs)
    resume = qmoe("resume", "killed", *common, env=env)
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    assert f"{TOTAL} ok, 0 errors, 0 pending" in err
    after = rows(results)
    assert len(after) == TOTAL and after["trial_key"].is_unique and (after["status"] == "ok").all()
    check_and_remember(after)  # rows from before the kills kept their start time
    final = starts(log)
    assert all(final[k] == runs[k] for k in had_row), (final, runs)  # finished ones not re-run
    assert sum(final.values()) - sum(before.values()) == TOTAL - len(had_row)  # the rest ran once
    assert not list(sweep_dir.glob(".*.tmp"))  # no temporary file of a killed write is left
