"""Sweeps under a real (local) Ray with fake trial functions: rows, retries, errors, resume."""

from __future__ import annotations

import functools
import io
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

from qmoe.errors import ConfigError
from qmoe.sweeps import RunOptions, alpha_spec, plan_sweep, resume_sweep, run_sweep, sweep_status
from qmoe.sweeps.overrides import apply_overrides
from qmoe.sweeps.store import SweepStore
from tests.sweeps import fakes

pytestmark = pytest.mark.ray


def events(log: Path) -> Counter:
    """(trial_key, event) -> count, from a fake's log file."""
    if not log.exists():
        return Counter()
    return Counter(tuple(line.split()) for line in log.read_text().splitlines())


def test_quick_sweep_writes_one_row_per_trial(ray_cluster, tmp_path, resolver) -> None:
    log, stream = tmp_path / "log", io.StringIO()
    plan = plan_sweep(alpha_spec((0.02, 0.2, 0.3)), resolve=resolver)
    fn = functools.partial(fakes.fast_trial, seconds=0.05, log=str(log))
    out = run_sweep(plan, name="quick", options=RunOptions(storage=tmp_path / "runs", trial_fn=fn,
                                                           progress_stream=stream))
    assert (out.total, out.ran, out.ok, out.errors, out.pending) == (20, 20, 20, 0, 0)
    df = pd.read_parquet(out.path / "results.parquet")
    assert len(df) == 20 and df["trial_key"].is_unique
    assert set(df["trial_key"]) == {t.trial_key for t in plan.trials}
    assert (df["status"] == "ok").all() and df["node"].str.contains("/").all()
    assert (df["started_at"] != "").all() and (df["finished_at"] >= df["started_at"]).all()
    assert len(list((out.path / "routing").glob("*.parquet"))) == 20
    assert all(n == 1 for (key, ev), n in events(log).items() if ev == "start")
    assert "20/20 done" in stream.getvalue() and "0 failed" in stream.getvalue()
    assert out.first_trial_seconds is not None and out.efficiency is not None
    (run,) = SweepStore(tmp_path / "runs", "quick").read_runs()  # the figures `qmoe bench` reads
    assert run["ran"] == 20 and run["efficiency"] == pytest.approx(out.efficiency)
    assert run["first_trial_seconds"] == pytest.approx(out.first_trial_seconds)
    # the name is now taken
    with pytest.raises(ConfigError, match="already exists.*qmoe resume quick"):
        run_sweep(plan, name="quick", options=RunOptions(storage=tmp_path / "runs", trial_fn=fn))
    # resume with nothing left to do runs nothing
    again = resume_sweep("quick", options=RunOptions(storage=tmp_path / "runs", trial_fn=fn), resolve=resolver)
    assert again.ran == 0 and again.ok == 20


def test_failing_trial_is_retried_recorded_then_resumed_alone(ray_cluster, tmp_path, resolver) -> None:
    log = tmp_path / "log"
    storage = tmp_path / "runs"
    plan = plan_sweep(apply_overrides(alpha_spec((0.3,)), folds=(1, 2)), resolve=resolver)  # 4 trials
    flaky = functools.partial(fakes.flaky_trial, fail_fold=2, seconds=0.05, log=str(log))
    out = run_sweep(plan, name="flaky", options=RunOptions(storage=storage, trial_fn=flaky, max_failures=1,
                                                           quiet=True))
    assert (out.ok, out.errors, out.pending) == (2, 2, 0)  # the sweep still finished
    failing = {t.trial_key for t in plan.trials if t.fold == 2}
    seen = events(log)
    assert {k for (k, ev) in seen if ev == "fail"} == failing
    assert all(seen[(k, "fail")] == 2 for k in failing)  # 1 try + max_failures=1 retry, by Ray
    df = pd.read_parquet(out.path / "results.parquet").set_index("trial_key")
    errors = df[df["status"] == "error"]
    assert set(errors.index) == failing
    assert errors["error"].str.contains("RuntimeError: injected fault in fold 2").all()
    assert (errors["node"] != "").all() and (errors["started_at"] != "").all()
    assert errors["f1_macro"].isna().all()
    status = sweep_status("flaky", storage)
    assert (status.ok, status.error, status.pending) == (2, 2, 0) and len(status.errors) == 2

    ok_before = df.loc[df["status"] == "ok", "started_at"]
    log.unlink()
    fixed = functools.partial(fakes.fast_trial, seconds=0.05, log=str(log))
    again = resume_sweep("flaky", options=RunOptions(storage=storage, trial_fn=fixed, quiet=True),
                         resolve=resolver)
    assert (again.ran, again.ok, again.errors) == (2, 4, 0)
    assert {k for (k, ev) in events(log) if ev == "start"} == failing  # only the errored ones ran
    df2 = pd.read_parquet(out.path / "results.parquet").set_index("trial_key")
    assert len(df2) == 4 and (df2["status"] == "ok").all()
    assert (df2.loc[ok_before.index, "started_at"] == ok_before).all()  # finished ones untouched


def test_qmoe_error_is_recorded_without_retry(ray_cluster, tmp_path, resolver) -> None:
    plan = plan_sweep(apply_overrides(alpha_spec((0.3,), baseline=False), folds=(1,)), resolve=resolver)
    out = run_sweep(plan, name="diverge", options=RunOptions(
        storage=tmp_path, trial_fn="tests.sweeps.fakes:config_error_trial", max_failures=3, quiet=True))
    assert (out.ok, out.errors) == (0, 1)
    row = out.results.iloc[0]
    assert row["error"] == "loss diverged to NaN at epoch 3" and row["node"]
    assert out.wall_seconds < 20  # no 3 retries in fresh workers


def test_resume_refuses_while_another_command_holds_the_sweep(ray_cluster, tmp_path, resolver) -> None:
    plan = plan_sweep(apply_overrides(alpha_spec((0.3,), baseline=False), folds=(1,)), resolve=resolver)
    fn = functools.partial(fakes.fast_trial, seconds=0.01)
    run_sweep(plan, name="busy", options=RunOptions(storage=tmp_path, trial_fn=fn, quiet=True))
    store = SweepStore(tmp_path, "busy")
    store.results_path.unlink()
    with store.lock():
        with pytest.raises(ConfigError, match="in use by pid"):
            resume_sweep("busy", options=RunOptions(storage=tmp_path, trial_fn=fn), resolve=resolver)
