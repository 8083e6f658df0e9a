"""Run and resume sweeps on Ray Tune (DESIGN §8): ``run_sweep`` and ``resume_sweep``.

Our results table is the truth. ``resume_sweep`` runs exactly the trials of the manifest that
have no ok row, as a fresh Tune run: a trial is one atomic step with no checkpoint, so
``Tuner.restore`` would add nothing, and it would re-run any trial that finished after Ray's
last experiment snapshot. This also finishes sweeps whose Ray state is missing or damaged.

A sweep is a grid on the shared run core (:mod:`qmoe.sweeps.engine`): the trainable runs one
whole trial per step (:mod:`qmoe.sweeps.trainable`), the recorder writes its row as it ends
(:mod:`qmoe.sweeps.recorder`).

What a sweep keeps of its trials is its spec's (``save_models``, ``latency``; recorded in the
manifest, so a resume goes on keeping it): each trained model in ``models/<trial_key>/``, and
with ``latency = isolated`` a latency phase after the trials, once Ray has stopped
(:mod:`qmoe.sweeps.isolated`).
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import psutil

import qmoe
from qmoe import layout
from qmoe.record import now_iso
from qmoe.spec import TrialSpec

from qmoe.sweeps.cluster import ClusterInfo
from qmoe.sweeps.engine import DEFAULT_STORAGE, RunOptions, TuneJob, fit
from qmoe.sweeps.grid import SweepSpec
from qmoe.sweeps.overrides import Overrides
from qmoe.sweeps.parse import default_name
from qmoe.sweeps.plan import Resolver, SweepPlan, TableRef, check_command, plan_sweep, reload_tables
from qmoe.sweeps.store import SweepStore
from qmoe.sweeps.trial_fn import TrialFn

log = logging.getLogger(__name__)


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
    isolated: Any = None  # what the isolated latency phase did (qmoe.sweeps.isolated.Isolated), if it ran

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
def _loading_trial_fn(options: RunOptions) -> Iterator[Callable[[], str | TrialFn]]:
    """Load the trial function (:meth:`RunOptions.resolved_trial_fn`) in a thread during the block.

    The block starts Ray: ray.init spends its 3-5 s mostly waiting for the processes it starts,
    and loading the default trial function imports torch, sklearn and the model code (1-3 s on
    2 cores). Ray's own modules are imported here first, so that the thread imports only
    modules that Ray's start does not. Yields a call that waits for the reference and raises
    the ConfigError of one that does not load.
    """
    import qmoe.sweeps.trainable  # noqa: F401  (ray, ray.tune)

    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="qmoe-load") as pool:
        yield pool.submit(options.resolved_trial_fn).result


def _trial_name(trial: Any) -> str:
    return trial.config["trial_key"]


def _execute(store: SweepStore, all_trials: Sequence[TrialSpec], todo: Sequence[TrialSpec],
             tables: Mapping[str, Any], options: RunOptions, trial_fn: str | TrialFn,
             cluster: ClusterInfo, save_models: bool = False) -> SweepOutcome:
    """Run ``todo`` on Ray Tune, recording rows as trials finish (and their models, if saved)."""
    from ray import tune

    from qmoe.sweeps.recorder import Recorder
    from qmoe.sweeps.trainable import Payload, SweepTrainable

    payload = Payload(tables={t.dataset: tables[t.dataset] for t in todo},
                      trials={t.trial_key: t.to_dict() for t in todo},
                      trial_fn=trial_fn, threads=options.cpus_per_trial,
                      models_dir=str(store.prepare_models_dir()) if save_models else None)
    progress = options.progress(store.name)
    recorder = Recorder(store, {t.trial_key: t for t in todo}, progress)
    job = TuneJob(trainable=SweepTrainable, payload=payload, recorder=recorder, progress=progress,
                  total=len(all_trials), done=len(store.ok_keys()), trial_name=_trial_name,
                  param_space={"trial_key": tune.grid_search([t.trial_key for t in todo])},
                  max_concurrent_trials=options.max_concurrent)
    fitted = fit(store, job, options)
    slots = options.slots(cluster)
    outcome = _outcome(store, all_trials, since=fitted.started_at, wall=fitted.wall_seconds, slots=slots,
                       nodes=cluster.nodes, first_start=recorder.first_start)
    store.log_run({"started_at": fitted.started_at, "ran": outcome.ran, "ok": outcome.ok,
                   "errors": outcome.errors, "wall_seconds": fitted.wall_seconds,
                   "command_seconds": outcome.command_seconds, "first_trial_seconds": outcome.first_trial_seconds,
                   "trial_seconds": outcome.trial_seconds, "slots": slots, "nodes": cluster.nodes,
                   "efficiency": outcome.efficiency})
    return outcome


def _outcome(store: SweepStore, all_trials: Sequence[TrialSpec], *, since: str | None, wall: float,
             slots: int, nodes: int, first_start: float | None) -> SweepOutcome:
    """Counts and timings of a run, read back from the results table (the rows written ``since``)."""
    results = store.read_results()
    keys = {t.trial_key for t in all_trials}
    status = results.set_index("trial_key")["status"] if len(results) else pd.Series(dtype=object)
    ok = sum(1 for k in keys if status.get(k) == layout.OK)
    errors = sum(1 for k in keys if status.get(k) == layout.ERROR)
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
            "skipped": dict(plan.skipped), "trials": [t.to_dict() for t in plan.trials]}


def _keeps(manifest: Mapping[str, Any]) -> tuple[bool, bool]:
    """(save models, isolated latency) of a sweep, from its manifest's spec (older sweeps: neither)."""
    spec = manifest.get("spec", {})
    isolated = spec.get("latency") == layout.ISOLATED
    return bool(spec.get("save_models")) or isolated, isolated


def _isolated(store: SweepStore, trials: Sequence[TrialSpec], tables: Mapping[str, Any],
              outcome: SweepOutcome) -> SweepOutcome:
    """Time the saved models alone (Ray has stopped, the lock is held), then the outcome again."""
    from qmoe.sweeps.isolated import time_isolated

    timed = time_isolated(store, [t.trial_key for t in trials], tables)
    return dataclasses.replace(outcome, isolated=timed, results=store.read_results())


def plan_command(spec: SweepSpec, overrides: Overrides = Overrides(), *, name: str | None = None,
                 storage: Path = DEFAULT_STORAGE, dry_run: bool = False,
                 resolve: Resolver | None = None) -> tuple[SweepPlan, str]:
    """What a ``qmoe sweep ...`` command runs, and the sweep's name: the checks of
    :func:`~qmoe.sweeps.plan.check_command` (before any table loads), then the grid expanded
    on the spec's tables (:func:`plan_sweep`).

    Raises:
        ConfigError: a bad override, a name in use, storage that cannot be written;
            DataError: a table that cannot be used.
    """
    spec, name = check_command(spec, overrides, name=name, storage=storage, dry_run=dry_run)
    return plan_sweep(spec, resolve=resolve), name


def run_sweep(plan: SweepPlan, *, name: str | None = None, options: RunOptions = RunOptions()) -> SweepOutcome:
    """Start a new sweep named ``name`` and run every trial of ``plan``.

    Nothing is written before the name, the storage and the Ray address are checked.

    Raises:
        ConfigError: the name exists (use :func:`resume_sweep`), the storage is not writable,
            the address is unreachable.
    """
    store = SweepStore(options.storage, name or default_name(plan.spec.kind))
    store.check_new()
    manifest = manifest_for(plan, store.name)
    save, isolated = _keeps(manifest)
    with contextlib.ExitStack() as held:
        with _loading_trial_fn(options) as loaded, options.ray() as cluster:
            trial_fn = loaded()
            store.create(manifest)
            held.enter_context(store.lock())
            outcome = _execute(store, plan.trials, plan.trials, plan.tables, options, trial_fn, cluster, save)
        # Ray has stopped and the lock is still held: nothing of the sweep runs beside the timing.
        return _isolated(store, plan.trials, plan.tables, outcome) if isolated else outcome


def resume_sweep(name: str, *, options: RunOptions = RunOptions(), resolve: Resolver | None = None) -> SweepOutcome:
    """Finish a sweep: run every trial without an ok row (errored, unfinished, never started).

    Finished trials are never re-run. The tables are loaded again and must hash as they did.
    The sweep keeps what its spec says (models, the isolated latency phase): with ``latency =
    isolated``, the ok rows not yet timed alone are timed after the trials, even when no trial
    is left to run.

    Raises:
        ConfigError: no such sweep, or another command holds it; DataError: a table changed.
    """
    store = SweepStore(options.storage, name)
    manifest = store.read_manifest()
    # Fail on a damaged table or an unreachable address before the lock file is touched.
    store.read_results()
    options.check_address()
    save, isolated = _keeps(manifest)
    with store.lock():
        if save:
            store.prepare_models_dir()  # what a killed save left goes, even with nothing to run
        trials = [TrialSpec.from_dict(d) for d in manifest["trials"]]
        todo = store.unfinished()
        untimed = isolated and _untimed(store)
        if not todo and not untimed:
            return _outcome(store, trials, since=None, wall=0.0, slots=0, nodes=0, first_start=None)
        needed = {t.dataset for t in (trials if isolated else todo)}
        refs = [TableRef(**r) for r in manifest["tables"] if r["name"] in needed]
        tables = reload_tables(refs, resolve)
        if not todo:
            outcome = _outcome(store, trials, since=None, wall=0.0, slots=0, nodes=0, first_start=None)
        else:
            with _loading_trial_fn(options) as loaded, options.ray() as cluster:
                outcome = _execute(store, trials, todo, tables, options, loaded(), cluster, save)
        return _isolated(store, trials, tables, outcome) if isolated else outcome


def _untimed(store: SweepStore) -> bool:
    """Whether an ok row of the sweep is not timed alone yet."""
    results = store.read_results()
    return bool(((results["status"] == layout.OK) & (results["latency_mode"] != layout.ISOLATED)).any())
