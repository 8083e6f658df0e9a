"""Fault 2: a trial's worker process is SIGKILLed mid-training; Ray retries it; the sweep completes.

The kill is real: the worker process dies by SIGKILL (from inside the trial, or from this test
holding its pid), so Ray sees the actor die, not an exception.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from qmoe.sweeps import RunOptions, alpha_spec, plan_sweep, run_sweep
from qmoe.sweeps.overrides import apply_overrides
from tests.faults.fault_fns import fault_trial, read_log

pytestmark = pytest.mark.ray


def four_trials(resolver):
    """Mixtures at alpha 0 and 0.3 on folds 1 and 2."""
    return plan_sweep(apply_overrides(alpha_spec((0.3,)), folds=(1, 2)), resolve=resolver)


def sweep_with(plan, tmp_path: Path, name: str, max_failures: int, **faults):
    """Run ``plan`` with :func:`fault_trial` given ``faults``; its outcome."""
    fn = functools.partial(fault_trial, **faults)
    return run_sweep(plan, name=name, options=RunOptions(storage=tmp_path, trial_fn=fn, max_failures=max_failures,
                                                         quiet=True))


def starts(log: Path) -> Counter:
    return Counter(k for k, event, _, _ in read_log(log) if event == "start")


def test_worker_killed_from_inside_is_retried(ray_cluster, tmp_path, resolver) -> None:
    log = tmp_path / "log"
    plan = four_trials(resolver)
    out = sweep_with(plan, tmp_path, "killed", 2, seconds=0.4, log=str(log), kill_fold=1, kill_attempts=1)
    assert (out.total, out.ok, out.errors, out.pending) == (4, 4, 0, 0)
    df = pd.read_parquet(out.path / "results.parquet")
    assert len(df) == 4 and df["trial_key"].is_unique and (df["status"] == "ok").all()
    killed = {t.trial_key for t in plan.trials if t.fold == 1}
    events = read_log(log)
    assert {k for k, e, _, _ in events if e == "kill"} == killed
    # each killed trial ran twice, in two different worker processes; the others once
    assert starts(log) == Counter({t.trial_key: 2 if t.trial_key in killed else 1 for t in plan.trials})
    for key in killed:
        assert len({pid for k, e, _, pid in events if k == key and e == "start"}) == 2


@pytest.mark.slow
def test_worker_killed_from_outside_is_retried(ray_cluster, tmp_path, resolver) -> None:
    log, pids = tmp_path / "log", tmp_path / "pids"
    pids.mkdir()
    plan = four_trials(resolver)
    victim = next(t.trial_key for t in plan.trials if t.fold == 2)
    killed: list[int] = []

    def kill_the_victim_mid_training() -> None:
        deadline = time.time() + 120
        while time.time() < deadline:
            pid_file = pids / f"{victim}.1.pid"
            if pid_file.exists() and pid_file.read_text():
                time.sleep(0.3)  # well inside its 2 s of "training"
                pid = int(pid_file.read_text())
                os.kill(pid, signal.SIGKILL)
                killed.append(pid)
                return
            time.sleep(0.05)

    killer = threading.Thread(target=kill_the_victim_mid_training, daemon=True)
    killer.start()
    out = sweep_with(plan, tmp_path, "shot", 2, seconds=0.3, log=str(log), pid_dir=str(pids), slow_key=victim,
                     slow_seconds=2.0)
    killer.join(timeout=5)
    assert killed, "the victim's pid file never appeared"
    assert (out.ok, out.errors, out.pending) == (4, 0, 0)
    assert starts(log)[victim] == 2
    assert (pids / f"{victim}.2.pid").read_text() != str(killed[0])  # retried in a fresh worker
    df = pd.read_parquet(out.path / "results.parquet")
    assert len(df) == 4 and df["trial_key"].is_unique and (df["status"] == "ok").all()


@pytest.mark.slow
def test_worker_killed_every_time_is_recorded_as_an_error(ray_cluster, tmp_path, resolver) -> None:
    log = tmp_path / "log"
    plan = four_trials(resolver)
    out = sweep_with(plan, tmp_path, "doomed", 1, seconds=0.2, log=str(log), kill_fold=2, kill_attempts=99)
    assert (out.ok, out.errors, out.pending) == (2, 2, 0)  # the sweep finished anyway
    df = pd.read_parquet(out.path / "results.parquet").set_index("trial_key")
    errors = df[df["status"] == "error"]
    assert set(errors.index) == {t.trial_key for t in plan.trials if t.fold == 2}
    assert errors["error"].str.contains("worker process died").all(), errors["error"].tolist()
    assert errors["f1_macro"].isna().all() and errors["latency_p50_us"].isna().all()
    assert all(n == 2 for k, n in starts(log).items() if k in errors.index)  # 1 try + 1 retry
