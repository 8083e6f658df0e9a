"""Sweep efficiency (issue 8), the sweep parts of ``qmoe bench``: our sweeps against the same
trials run one by one, and against Ray Tune with its defaults.

Efficiency = (sum of the same trials' seconds run one by one / slots) / sweep wall. Every run of
a comparison is a fresh process, run back to back: the trials one by one
(:mod:`qmoe.sweeps.bench.jobs`), our sweep as the real ``qmoe`` command (so "first trial
running" includes Python start-up, imports and Ray's start, as a user sees it), and the same
trials on Ray Tune with its defaults (:mod:`qmoe.sweeps.bench.ray_defaults`). The caller says
how to start ``qmoe`` (``command``: e.g. ``[sys.executable, "-m", "qmoe.cli.main"]``).

The short trials' efficiency has a ceiling on this machine (:attr:`ShortBench.ceiling`): a Tune
worker imports Ray Tune (to unpickle the trainable) and the trial function's module (torch,
scikit-learn, the models) after the run starts, before its first trial can train, so
``wall >= imports + sum / slots``. The first trial has a floor the same way
(:attr:`ShortBench.first_trial_floor`): Tune asks Ray for that worker only once Ray is up, so
the first trial runs no sooner than Ray's start (from a fresh process's start) plus those
imports. Both are timed in the same run (:func:`worker_import_seconds`, :func:`ray_start_seconds`).
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmoe.bench_targets import (FIRST_TRIAL_TARGET_S, GRID_HOURS_TARGET, SEEDS, SHORT_EFFICIENCY_TARGET,
                                SIZED_EFFICIENCY_TARGET, SWEEP_RATIO_TARGET)
from qmoe.errors import QmoeError

from qmoe.sweeps.bench.jobs import RunTimes, TrialTime, efficiency, serial_times, write_job
from qmoe.sweeps.store import SweepStore

#: 8 short single-model trials (q4 + the fp32/bitnet/ptq8 references, folds 1-2) on synth.
SHORT_ARGS = ("sweep", "bits", "--values", "4", "--folds", "1,2", "--quiet")
#: What a Tune worker imports after the run starts and before its first trial can train: Ray Tune
#: (its trainable is unpickled from it) and the module of the trial function the benchmark's
#: sweeps run (:data:`~qmoe.sweeps.trial_fn.DEFAULT_TRIAL_FN`: torch, scikit-learn, the models).
#: ``ray`` itself is left out: Ray may have started the worker process, which imports it, before
#: the run.
WORKER_IMPORTS = ("ray.tune", "qmoe.trial")
#: Fresh processes timing :data:`WORKER_IMPORTS` (the least is kept: a floor).
IMPORT_RUNS = 3
#: Fresh processes timing Ray's start (:func:`ray_start_seconds`; the least is kept).
RAY_START_RUNS = 2
#: A fresh process that starts the embedded Ray a sweep starts, prints the time once it is up,
#: and stops it.
_RAY_START = ("import time\n"
              "from qmoe.sweeps.cluster import ray_session, worker_env\n"
              "with ray_session(None, env=worker_env(1)):\n"
              "    print(time.time(), flush=True)\n")
#: The paper's Table 1 (15 configurations), run on fold :data:`SIZED_FOLD` of an ESC-50-sized table.
TABLE1 = Path(__file__).with_name("table1.toml")
SIZED_FOLD = 1
#: The paper grid: Table 1's configurations on 3 datasets x 5 folds.
GRID_SLICES = 3 * 5


@dataclass(frozen=True, kw_only=True)
class ShortBench:
    """8 short trials one by one, as our sweep, and on Ray Tune's defaults."""

    serial: RunTimes  # one by one, one process (the reference)
    ours: RunTimes  # `qmoe sweep ...`
    defaults: RunTimes  # Ray Tune with its defaults
    first_trial: float | None  # seconds from our command's start to its first trial running
    command_wall: float  # seconds of our whole command
    slots: int  # trials at once in both sweeps
    args: tuple[str, ...] = SHORT_ARGS  # our command's arguments
    worker_imports: float | None = None  # seconds a worker needs for WORKER_IMPORTS, at least
    ray_start: float | None = None  # seconds from a fresh process's start to its embedded Ray being up, at least

    @property
    def ceiling(self) -> float | None:
        """The highest efficiency any sweep of these trials reaches here: each slot's worker first
        imports :data:`WORKER_IMPORTS` (``worker_imports`` seconds at least), then runs its share of
        the trials, each taking no less than one by one; the busiest slot has at least
        ``sum / slots`` of them, so ``wall >= worker_imports + sum / slots``. None: not measured."""
        if self.worker_imports is None:
            return None
        ideal = self.serial.trial_seconds / max(self.slots, 1)
        return ideal / (ideal + self.worker_imports) if ideal > 0 else float("nan")

    @property
    def ruled_out(self) -> bool:
        """Whether :attr:`ceiling` is below the efficiency target: no sweep could meet it here."""
        ceiling = self.ceiling
        return ceiling is not None and ceiling < SHORT_EFFICIENCY_TARGET

    @property
    def first_trial_floor(self) -> float | None:
        """The least time from the command's start to its first trial running here: Ray's start
        (``ray_start``, from a fresh process's start), then a worker's imports (``worker_imports``),
        which begin only once Tune, on the running Ray, asks for that worker. None: not measured."""
        if self.ray_start is None or self.worker_imports is None:
            return None
        return self.ray_start + self.worker_imports

    @property
    def first_trial_ruled_out(self) -> bool:
        """Whether :attr:`first_trial_floor` exceeds the first-trial target: no sweep could meet it here."""
        floor = self.first_trial_floor
        return floor is not None and floor > FIRST_TRIAL_TARGET_S

    @property
    def ours_efficiency(self) -> float:
        return efficiency(self.serial, self.ours.wall_seconds or 0.0, self.slots)

    @property
    def defaults_efficiency(self) -> float:
        return efficiency(self.serial, self.defaults.wall_seconds or 0.0, self.slots)

    @property
    def ratio(self) -> float:
        """Our efficiency / the defaults' (target: :data:`~qmoe.bench_targets.SWEEP_RATIO_TARGET`)."""
        eff = self.defaults_efficiency
        return self.ours_efficiency / eff if eff > 0 else float("nan")

    @property
    def met(self) -> bool:
        return self.ratio >= SWEEP_RATIO_TARGET

    @property
    def efficiency_met(self) -> bool:
        return self.ours_efficiency >= SHORT_EFFICIENCY_TARGET

    @property
    def first_trial_met(self) -> bool:
        return self.first_trial is not None and self.first_trial <= FIRST_TRIAL_TARGET_S


@dataclass(frozen=True, kw_only=True)
class SizedBench:
    """Table 1's configurations on an ESC-50-sized fold as one sweep, and the grid extrapolated."""

    reference: RunTimes  # one by one (``serial``), or the sweep's own trial seconds
    ours: RunTimes  # the sweep
    serial: bool  # whether ``reference`` ran one by one
    command_wall: float
    table_name: str
    slots: int

    @property
    def efficiency(self) -> float:
        return efficiency(self.reference, self.ours.wall_seconds or 0.0, self.slots)

    @property
    def own_efficiency(self) -> float:
        """The same against the trials' seconds inside the sweep: what the sweep's start-up, the
        gaps between trials and the last trials' tail cost, both sides from the one run.
        :attr:`efficiency` is this times the trials' one-by-one seconds over their seconds inside
        the sweep (their slow-down there: two trials share the caches and the memory, and Ray's
        processes and the driver take CPU time beside them)."""
        return efficiency(self.ours, self.ours.wall_seconds or 0.0, self.slots)

    @property
    def grid_hours(self) -> float:
        """The whole paper grid (:data:`GRID_SLICES` slices like this one) in hours."""
        return (self.ours.wall_seconds or 0.0) * GRID_SLICES / 3600

    @property
    def efficiency_met(self) -> bool:
        return self.efficiency >= SIZED_EFFICIENCY_TARGET

    @property
    def grid_seeds_hours(self) -> float:
        """The paper grid with :data:`~qmoe.bench_targets.SEEDS` training seeds per (configuration,
        fold), each seed its own trial (seed batching is not built): ``SEEDS x grid_hours``."""
        return SEEDS * self.grid_hours

    @property
    def grid_met(self) -> bool:
        return self.grid_hours <= GRID_HOURS_TARGET


def worker_import_seconds(runs: int = IMPORT_RUNS) -> float:
    """The least seconds, over ``runs`` fresh processes, that importing :data:`WORKER_IMPORTS`
    takes after ``import ray``: per process the smaller of its CPU and wall seconds (either bounds
    what a single-threaded import needs; CPU excludes waiting on a busy machine, wall excludes
    threads an import may start).

    Raises:
        QmoeError: a process failed (the imports are broken here).
    """
    names = ", ".join(WORKER_IMPORTS)
    code = ("import time\nimport ray\n"
            "c0, w0 = time.process_time(), time.perf_counter()\n"
            f"import {names}\n"
            "print(min(time.process_time() - c0, time.perf_counter() - w0))\n")
    best = float("inf")
    for _ in range(runs):
        proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=dict(os.environ))
        if proc.returncode != 0:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise QmoeError(f"timing a worker's imports ({names}) failed (exit {proc.returncode}): {last}")
        best = min(best, float(proc.stdout.split()[-1]))
    return best


def ray_start_seconds(runs: int = RAY_START_RUNS) -> float:
    """The least seconds, over ``runs`` fresh processes, from starting the process to the embedded
    Ray of a sweep being up (:func:`~qmoe.sweeps.cluster.ray_session`: Python's start, ``import
    ray`` and ``ray.init``, as a sweep's driver needs at least). Each process stops its Ray.

    Raises:
        QmoeError: a process failed (Ray cannot start here).
    """
    best = float("inf")
    for _ in range(runs):
        start = time.time()
        proc = subprocess.run([sys.executable, "-c", _RAY_START], capture_output=True, text=True,
                              env=dict(os.environ))
        if proc.returncode != 0 or not proc.stdout.split():
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise QmoeError(f"timing Ray's start failed (exit {proc.returncode}): {last}")
        best = min(best, float(proc.stdout.split()[-1]) - start)
    return best


def run_sweep_command(command: Sequence[str], args: Sequence[str], storage: Path, name: str = "bench",
                      address: str | None = None) -> tuple[RunTimes, dict[str, Any], float]:
    """Run ``COMMAND ARGS --name NAME --storage STORAGE`` (``command`` starts ``qmoe``) in a fresh
    process, joining the Ray at ``address`` if given, else starting its own.

    Returns:
        each trial's seconds (from its results row), the run's figures (``runs.jsonl``), and
        the command's wall seconds.

    Raises:
        QmoeError: the command failed or recorded no run.
    """
    cmd = [*command, *args, "--name", name, "--storage", str(storage)]
    cmd += ["--address", address] if address else []
    t0 = time.time()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
    command_wall = time.time() - t0
    store = SweepStore(storage, name)
    runs = store.read_runs() if proc.returncode == 0 else []
    if not runs:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise QmoeError(f"the benchmark sweep failed (exit {proc.returncode}): {last}")
    import pandas as pd

    rows = store.read_results()
    seconds = (pd.to_datetime(rows["finished_at"], utc=True)
               - pd.to_datetime(rows["started_at"], utc=True)).dt.total_seconds()
    trials = tuple(TrialTime(trial_key=k, model=m, seconds=float(s))
                   for k, m, s in zip(rows["trial_key"], rows["model"], seconds))
    return RunTimes(label="qmoe sweep", trials=trials, wall_seconds=runs[-1]["wall_seconds"]), runs[-1], command_wall


def sweep_bench(command: Sequence[str], *, address: str | None = None) -> ShortBench:
    """8 short trials: one by one, our sweep (``command`` starts ``qmoe``), and Ray Tune with its
    defaults, back to back; then a worker's imports (:func:`worker_import_seconds`) and, when the
    sweeps started their own Ray, Ray's start (:func:`ray_start_seconds`).

    Args:
        command: how to start ``qmoe``.
        address: a running Ray for both sweeps to join (tests); None: each starts its own.
    """
    from qmoe.sweeps.bench.ray_defaults import defaults_times
    from qmoe.sweeps.builtin import bits_spec
    from qmoe.sweeps.overrides import apply_overrides
    from qmoe.sweeps.plan import plan_sweep

    with tempfile.TemporaryDirectory(prefix="qmoe-bench-") as tmp:
        tmp_path = Path(tmp)
        job = write_job(plan_sweep(apply_overrides(bits_spec((4,)), folds=(1, 2))), tmp_path / "job.json")
        serial = serial_times(job, tmp_path / "serial.json")
        ours, run, command_wall = run_sweep_command(command, SHORT_ARGS, tmp_path / "runs", address=address)
        defaults = defaults_times(job, tmp_path / "defaults.json", address=address)
    return ShortBench(serial=serial, ours=ours, defaults=defaults, first_trial=run.get("first_trial_seconds"),
                      command_wall=command_wall, slots=run["slots"], worker_imports=worker_import_seconds(),
                      ray_start=None if address else ray_start_seconds())


def sized_bench(command: Sequence[str], *, serial: bool = True, data: Path | None = None,
                spec_file: Path = TABLE1, address: str | None = None) -> SizedBench:
    """Table 1's 15 configurations on fold 1 of an ESC-50-sized table as one real sweep.

    Args:
        command: how to start ``qmoe``.
        serial: also run the trials one by one (about twice the sweep's wall on 2 cores); False:
            efficiency from the trials' own seconds inside the sweep, which reads higher (it
            leaves out the slow-down of trials running side by side).
        data: the table (default: the ESC-50-sized table of :mod:`qmoe.data.sized`, built once
            in the cache).
        spec_file: the sweep spec; it runs on fold :data:`SIZED_FOLD`.
        address: a running Ray for the sweep to join (tests); None: it starts its own.
    """
    from qmoe.cache_root import default_cache_dir
    from qmoe.data.sized import sized_table_path
    from qmoe.sweeps.grid import load_spec
    from qmoe.sweeps.overrides import apply_overrides
    from qmoe.sweeps.plan import plan_sweep

    path = Path(data) if data is not None else sized_table_path(default_cache_dir())
    with tempfile.TemporaryDirectory(prefix="qmoe-bench-") as tmp:
        tmp_path = Path(tmp)
        args = ["sweep", "run", str(spec_file), "--data", str(path), "--folds", str(SIZED_FOLD), "--quiet"]
        ours, run, command_wall = run_sweep_command(command, args, tmp_path / "runs", address=address)
        reference = ours
        if serial:
            plan = plan_sweep(apply_overrides(load_spec(spec_file), data=path, folds=(SIZED_FOLD,)))
            reference = serial_times(write_job(plan, tmp_path / "job.json"), tmp_path / "serial.json")
    return SizedBench(reference=reference, ours=ours, serial=serial, command_wall=command_wall,
                      table_name=path.name, slots=run["slots"])
