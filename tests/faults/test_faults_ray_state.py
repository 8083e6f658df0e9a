"""Fault 5: Ray Tune's own experiment state is missing or damaged; resume still finishes the sweep.

Our results table is the truth: resume runs, as a fresh Tune run, exactly the trials without
an ok row; it never reads Ray's state (no ``Tuner.restore``, which fails on a truncated
experiment state file, a known Ray Tune failure mode), and each run gets a new Tune folder.
"""

from __future__ import annotations

import functools
import os
import shutil
from pathlib import Path

import pytest

from qmoe.sweeps import RunOptions, alpha_spec, plan_sweep, resume_sweep, run_sweep
from qmoe.sweeps.overrides import apply_overrides
from qmoe.sweeps.store import SweepStore
from tests.faults.fault_fns import fault_trial, read_log
from tests.sweeps.fakes import FakeTable, fake_resolver

pytestmark = pytest.mark.ray

RESOLVE = fake_resolver({"synth": FakeTable(n_folds=5, source="synth")})


@pytest.fixture(scope="module")
def finished(ray_cluster, tmp_path_factory) -> Path:
    """A finished 4-trial sweep (with Ray's state of its run), copied by each test."""
    storage = tmp_path_factory.mktemp("state") / "runs"
    plan = plan_sweep(apply_overrides(alpha_spec((0.3,)), folds=(1, 2)), resolve=RESOLVE)
    out = run_sweep(plan, name="s", options=RunOptions(storage=storage, trial_fn=functools.partial(
        fault_trial, seconds=0.05), quiet=True))
    assert out.ok == 4 and any(p.is_file() for p in (storage / "s" / "ray").rglob("*"))
    return storage


def _files(ray_dir: Path) -> list[Path]:
    return [p for p in ray_dir.rglob("*") if p.is_file()]


def truncate(ray_dir: Path) -> None:
    for p in _files(ray_dir):  # experiment_state-*.json, tuner.pkl, search state, trial files
        p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def scramble(ray_dir: Path) -> None:
    for p in _files(ray_dir):
        p.write_bytes(os.urandom(max(1, p.stat().st_size)))


def empty(ray_dir: Path) -> None:
    for p in ray_dir.iterdir():
        shutil.rmtree(p)


def renumber(ray_dir: Path) -> None:
    """run-1 became run-2 (truncated): a new run must not land in that damaged folder."""
    truncate(ray_dir)
    (ray_dir / "run-1").rename(ray_dir / "run-2")


@pytest.mark.parametrize("damage", [
    pytest.param(shutil.rmtree, id="missing"),
    pytest.param(truncate, id="truncated"),
    pytest.param(scramble, id="garbage", marks=pytest.mark.slow),
    pytest.param(empty, id="emptied", marks=pytest.mark.slow),
    pytest.param(renumber, id="renumbered", marks=pytest.mark.slow),
])
def test_resume_runs_only_the_trials_without_an_ok_row(finished, tmp_path, damage) -> None:
    storage, log = tmp_path / "runs", tmp_path / "log"
    shutil.copytree(finished, storage)
    store = SweepStore(storage, "s")
    full = store.read_results()
    kept = full.iloc[:1]
    kept.to_parquet(store.results_path, index=False)  # as if the driver died after one row
    damage(store.ray_dir)

    fn = functools.partial(fault_trial, seconds=0.05, log=str(log))
    again = resume_sweep("s", options=RunOptions(storage=storage, trial_fn=fn, quiet=True), resolve=RESOLVE)
    assert (again.ran, again.ok, again.errors, again.pending) == (3, 4, 0, 0)
    ran = [k for k, event, _, _ in read_log(log) if event == "start"]
    assert sorted(ran) == sorted(set(full["trial_key"]) - set(kept["trial_key"]))  # each once
    df = store.read_results()
    assert len(df) == 4 and df["trial_key"].is_unique and (df["status"] == "ok").all()
    assert df.set_index("trial_key").loc[kept["trial_key"].iloc[0], "started_at"] == kept["started_at"].iloc[0]
