"""Run and resume sweeps on Ray Tune (DESIGN §8): ``run_sweep`` and ``resume_sweep``.

Our results table is the truth. ``resume_sweep`` runs exactly the trials of the manifest that
have no ok row, as a fresh Tune run: a trial is one atomic step with no checkpoint, so
``Tuner.restore`` would add nothing, and it would re-run any trial that finished after Ray's
last experiment snapshot. This also finishes sweeps whose Ray state is missing or damaged.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import logging
import math
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import pandas as pd
import psutil

import qmoe
from qmoe.errors import ConfigError
from qmoe.spec import TrialSpec

from sweeps.cluster import ClusterInfo, check_reachable, ray_session, validate_address, worker_env
from sweeps.parse import default_name
from sweeps.plan import Resolver, SweepPlan, TableRef, reload_tables, trial_from_dict, trial_to_dict
from sweeps.progress import LineProgress, NullProgress
from sweeps.store import SweepStore, now_iso

log = logging.getLogger(__name__)
DEFAULT_STORAGE = Path("qmoe-runs")
# Tune's defaults print status tables, write JSON/CSV/TensorBoard logs per trial and log each
# trial error with a traceback; the progress line and the results table replace all three.
_TUNE_ENV = {"RAY_AIR_NEW_OUTPUT": "0", "TUNE_DISABLE_AUTO_CALLBACK_LOGGERS": "1",
             "TUNE_PRINT_ALL_TRIAL_ERRORS": "0"}


@dataclass(frozen=True, kw_only=True)
class RunOptions:
    """How to run a sweep (the flags shared by ``qmoe sweep ...`` and ``qmoe resume``)."""

    storage: Path = DEFAULT_STORAGE  # folder holding every sweep (shared by all nodes on a cluster)
    address: str | None = None  # None: embedded Ray; "auto", "HOST:PORT" or "ray://HOST:PORT"
    cpus_per_trial: int = 1  # CPUs reserved per trial = torch threads of the trial
    max_concurrent: int | None = None  # cap on trials at once (None: as many as CPUs allow)
    max_failures: int = 2  # Ray retries of a failing trial before it is recorded as an error
    quiet: bool = False  # no progress line
    verbose: bool = False  # let Ray's logs and the workers' output through
    trial_fn: str | Callable[..., Any] | None = None  # None: $QMOE_TRIAL_FN or qmoe.trial:run_trial
    progress_stream: TextIO | None = None  # where the progress line goes (stderr)

    def __post_init__(self) -> None:
        if self.cpus_per_trial < 1:
            raise ConfigError(f"--cpus-per-trial {self.cpus_per_trial} is invalid: use 1 or more")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ConfigError(f"--max-concurrent {self.max_concurrent} is invalid: use 1 or more")
        if self.max_failures < 0:
            raise ConfigError(f"--max-failures {self.max_failures} is invalid: use 0 (no retry) or more")
        validate_address(self.address)

    def resolved_trial_fn(self) -> str | Callable[..., Any]:
        """The trial function to run; a reference that does not load fails here, once."""
        from sweeps.trainable import DEFAULT_TRIAL_FN, TRIAL_FN_ENV, resolve_trial_fn

        ref = self.trial_fn or os.environ.get(TRIAL_FN_ENV) or DEFAULT_TRIAL_FN
        resolve_trial_fn(ref)
        return ref


@dataclass(frozen=True, kw_only=True)
class SweepOutcome:
    """What a run or resume did, with the figures of its efficiency."""

    name: str
    path: Path
    total: int  # trials in the sweep
    ran: int  # trials this command ran
    ok: int  # trials of the sweep with an ok row
    errors: int  # trials of the sweep with an error row
    pending: int  # trials with no row (not run, or the run was cut short)
    wall_seconds: float  # from the start of the Tune run to its end
    command_seconds: float  # from the process start to the end
    first_trial_seconds: float | None  # from the process start to the first trial function starting in a worker
    trial_seconds: float  # sum of the trials' durations (started_at to finished_at of its rows)
    slots: int  # trials that could run at once
    nodes: int  # Ray nodes in the cluster
    results: pd.DataFrame

    @property
    def efficiency(self) -> float | None:
        """(sum of trial seconds / slots) / wall seconds: 1.0 = no time lost between trials."""
        if not self.ran or self.wall_seconds <= 0:
            return None
        return self.trial_seconds / max(self.slots, 1) / self.wall_seconds


def _process_start() -> float:
    """When this process started, on the ``time.time()`` clock (to 10 ms on Linux).

    The kernel counts a process's start in clock ticks since boot (``CLOCK_BOOTTIME``); psutil
    adds them to the boot time of ``/proc/stat``, which is rounded down to the second, and so
    reads up to a second early.
    """
    try:
        with open("/proc/self/stat", encoding="ascii") as fh:
            ticks = int(fh.read().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        return time.time() - time.clock_gettime(time.CLOCK_BOOTTIME) + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):  # not Linux
        return psutil.Process().create_time()


def _first_start(rows: pd.DataFrame) -> float | None:
    """The earliest ``started_at`` of these rows (set in the worker as it calls the trial
    function), as a ``time.time()`` value; None when no row has one."""
    first = pd.to_datetime(rows["started_at"], errors="coerce", utc=True).min() if len(rows) else pd.NaT
    return None if pd.isna(first) else first.timestamp()


@contextlib.contextmanager
def _loading_trial_fn(options: RunOptions) -> Iterator[Callable[[], str | Callable[..., Any]]]:
    """Load the trial function (:meth:`RunOptions.resolved_trial_fn`) in a thread during the block.

    The block starts Ray: ray.init spends its 3-5 s mostly waiting for the processes it starts,
    and loading the default trial function imports torch, sklearn and the model code (1-3 s on
    2 cores). Ray's own modules are imported here first, so that the thread imports only
    modules that Ray's start does not. Yields a call that waits for the reference and raises
    the ConfigError of one that does not load.
    """
    import sweeps.trainable  # noqa: F401  (ray, ray.tune)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qmoe-load") as pool:
        yield pool.submit(options.resolved_trial_fn).result


def _trial_name(trial: Any) -> str:
    return trial.config["trial_key"]


@contextlib.contextmanager
def quiet_tune(verbose: bool) -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in _TUNE_ENV}
    os.environ.update(_TUNE_ENV)
    loggers = [logging.getLogger(n) for n in ("ray.tune", "ray.train", "ray.air")]
    levels = [lg.level for lg in loggers]
    if not verbose:
        for lg in loggers:
            lg.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _execute(store: SweepStore, all_trials: Sequence[TrialSpec], todo: Sequence[TrialSpec],
             tables: Mapping[str, Any], options: RunOptions, trial_fn: str | Callable[..., Any],
             cluster: ClusterInfo) -> SweepOutcome:
    """Run ``todo`` on Ray Tune, recording rows as trials finish."""
    from ray import tune

    from sweeps.recorder import Recorder
    from sweeps.trainable import Payload, SweepTrainable

    payload = Payload(tables={t.dataset: tables[t.dataset] for t in todo},
                      trials={t.trial_key: trial_to_dict(t) for t in todo},
                      trial_fn=trial_fn, threads=options.cpus_per_trial)
    trainable = tune.with_resources(tune.with_parameters(SweepTrainable, payload=payload),
                                    {"cpu": options.cpus_per_trial})
    progress = NullProgress() if options.quiet else LineProgress(store.name, options.progress_stream)
    recorder = Recorder(store, {t.trial_key: t for t in todo}, progress)
    store.ray_dir.mkdir(exist_ok=True)
    run_name = _next_run_name(store.ray_dir)
    slots = max(1, math.floor(cluster.cpus / options.cpus_per_trial))
    if options.max_concurrent:
        slots = min(slots, options.max_concurrent)
    with quiet_tune(options.verbose):
        tuner = tune.Tuner(
            trainable,
            param_space={"trial_key": tune.grid_search([t.trial_key for t in todo])},
            tune_config=tune.TuneConfig(reuse_actors=True, max_concurrent_trials=options.max_concurrent,
                                        trial_name_creator=_trial_name, trial_dirname_creator=_trial_name),
            run_config=tune.RunConfig(
                name=run_name, storage_path=str(store.ray_dir), verbose=0, callbacks=[recorder],
                failure_config=tune.FailureConfig(max_failures=options.max_failures),
                checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))
        progress.start(total=len(all_trials), done=len(store.ok_keys()))
        since, t0 = now_iso(), time.time()
        try:
            tuner.fit()
        finally:
            progress.stop()
        wall = time.time() - t0
    outcome = _outcome(store, all_trials, since=since, wall=wall, slots=slots, nodes=cluster.nodes,
                       first_start=recorder.first_start)
    store.log_run({"started_at": since, "ran": outcome.ran, "ok": outcome.ok, "errors": outcome.errors,
                   "wall_seconds": wall, "command_seconds": outcome.command_seconds,
                   "first_trial_seconds": outcome.first_trial_seconds,
                   "trial_seconds": outcome.trial_seconds, "slots": slots, "nodes": cluster.nodes,
                   "efficiency": outcome.efficiency})
    return outcome


def _next_run_name(ray_dir: Path) -> str:
    """``run-N`` after the highest existing one: a fresh Tune experiment folder every time,
    never one holding the (possibly damaged) state of an earlier run."""
    numbers = [int(p.name[4:]) for p in ray_dir.iterdir() if p.name[:4] == "run-" and p.name[4:].isdigit()]
    return f"run-{max(numbers, default=0) + 1}"


def _outcome(store: SweepStore, all_trials: Sequence[TrialSpec], *, since: str | None, wall: float,
             slots: int, nodes: int, first_start: float | None) -> SweepOutcome:
    """Counts and timings of a run, read back from the results table (the rows written ``since``)."""
    results = store.read_results()
    keys = {t.trial_key for t in all_trials}
    status = results.set_index("trial_key")["status"] if len(results) else pd.Series(dtype=object)
    ok = sum(1 for k in keys if status.get(k) == "ok")
    errors = sum(1 for k in keys if status.get(k) == "error")
    this_run = results[results["finished_at"] >= since] if since else results.iloc[:0]
    # utc=True: a run whose every row lacks a start time (workers that died before starting)
    # would otherwise parse as tz-naive NaT, which cannot be subtracted from tz-aware times.
    seconds = (pd.to_datetime(this_run["finished_at"], errors="coerce", utc=True)
               - pd.to_datetime(this_run["started_at"], errors="coerce", utc=True))
    started = _process_start()
    # The trial functions' own start in the workers; Tune's on_trial_start (the worker is ready)
    # only when no row has a start time.
    first_start = _first_start(this_run) or first_start
    return SweepOutcome(name=store.name, path=store.path, total=len(keys), ran=len(this_run), ok=ok,
                        errors=errors, pending=len(keys) - ok - errors, wall_seconds=wall,
                        command_seconds=time.time() - started,
                        first_trial_seconds=(first_start - started) if first_start else None,
                        trial_seconds=float(seconds.dt.total_seconds().sum()), slots=slots, nodes=nodes,
                        results=results)


def manifest_for(plan: SweepPlan, name: str) -> dict[str, Any]:
    """The manifest of a new sweep: spec, tables, every trial."""
    return {"name": name, "kind": plan.spec.kind, "created_at": now_iso(), "qmoe_version": qmoe.__version__,
            "spec": plan.spec.to_dict(), "tables": [r.to_dict() for r in plan.refs],
            "skipped": dict(plan.skipped), "trials": [trial_to_dict(t) for t in plan.trials]}


def run_sweep(plan: SweepPlan, *, name: str | None = None, options: RunOptions = RunOptions()) -> SweepOutcome:
    """Start a new sweep named ``name`` and run every trial of ``plan``.

    Nothing is written before the name, the storage and the Ray address are checked.

    Raises:
        ConfigError: the name exists (use :func:`resume_sweep`), the storage is not writable,
            the address is unreachable.
    """
    store = SweepStore(options.storage, name or default_name(plan.spec.kind))
    store.check_new()
    with _loading_trial_fn(options) as loaded, \
            ray_session(options.address, env=worker_env(options.cpus_per_trial), verbose=options.verbose) as cluster:
        trial_fn = loaded()
        store.create(manifest_for(plan, store.name))
        with store.lock():
            return _execute(store, plan.trials, plan.trials, plan.tables, options, trial_fn, cluster)


def resume_sweep(name: str, *, options: RunOptions = RunOptions(), resolve: Resolver | None = None) -> SweepOutcome:
    """Finish a sweep: run every trial without an ok row (errored, unfinished, never started).

    Finished trials are never re-run. The tables are loaded again and must hash as they did.

    Raises:
        ConfigError: no such sweep, or another command holds it; DataError: a table changed.
    """
    store = SweepStore(options.storage, name)
    manifest = store.read_manifest()
    # Fail on a damaged table or an unreachable address before the lock file is touched.
    store.read_results()
    address = validate_address(options.address)
    if address not in (None, "auto"):
        check_reachable(address)
    with store.lock():
        trials = [trial_from_dict(d) for d in manifest["trials"]]
        ok = store.ok_keys()
        todo = [t for t in trials if t.trial_key not in ok]
        if not todo:
            return _outcome(store, trials, since=None, wall=0.0, slots=0, nodes=0, first_start=None)
        needed = {t.dataset for t in todo}
        refs = [TableRef(**r) for r in manifest["tables"] if r["name"] in needed]
        tables = reload_tables(refs, resolve)
        env = worker_env(options.cpus_per_trial)
        with _loading_trial_fn(options) as loaded, \
                ray_session(options.address, env=env, verbose=options.verbose) as cluster:
            return _execute(store, trials, todo, tables, options, loaded(), cluster)
