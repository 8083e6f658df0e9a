"""``qmoe tune``: Optuna (TPE, seeded) inside Ray Tune over training hyper-parameters (DESIGN §8).

Typical use::

    from sweeps.tune import TuneSpec, run_tune, resume_tune
    outcome = run_tune(TuneSpec(experts=("q4",), folds=(1, 2), trials=40), name="tq4")
    outcome = resume_tune("tq4")                 # after a crash or a kill: finish the budget

How it runs: Ray Tune drives the trials; ``OptunaSearch`` (a seeded ``TPESampler``) suggests
each trial's settings from a define-by-run space and keeps its study in ``study.log``; a
``ConcurrencyLimiter`` lets it suggest only when a slot is free, so each suggestion sees every
finished trial; ASHA stops trials whose running objective falls behind at its rungs. The
objective is the mean validation macro-F1 over the chosen folds (:mod:`qmoe.tuning`).
The default settings are the first point evaluated (``points_to_evaluate``), so the best score
is never below theirs: by construction, not by luck.

Resume is a fresh Tune run that continues the same Optuna study, not ``Tuner.restore``: Ray's
experiment snapshot lags the trials (it would re-run trials that finished after it), and its
pickled searcher would bring back Optuna trial handles that no longer match the study. Instead
:func:`reconcile` makes the study agree with our table (a trial killed mid-run is failed in the
study and recorded as ``interrupted``; one recorded but not yet told is told), and the new run
gets the rest of the budget: requested minus the trials our table counts. Never more.

Seeding: the sampler is seeded with the tuning seed, offset by the study's size on a resume so
that a resumed run does not replay the first run's random start-up points. With several trials
at a time the order in which they finish depends on timing, so the sequence of suggestions is
reproducible only with ``--max-concurrent 1``.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import qmoe
from qmoe.errors import ConfigError

from sweeps.cluster import ClusterInfo, check_reachable, ray_session, validate_address, worker_env
from sweeps.parse import default_name
from sweeps.plan import Resolver, TableRef, default_resolver, reload_tables
from sweeps.progress import NullProgress
from sweeps.runner import RunOptions, quiet_tune
from sweeps.runner import _next_run_name as next_run_name
from sweeps.space import SearchSpace, default_space
from sweeps.spec import check_experts
from sweeps.store import now_iso
from sweeps.tune_store import COUNTED, SCORED, TuneStore, best_row, counted, default_row

log = logging.getLogger(__name__)


def check_trials(trials: Any) -> int:
    """``--trials``: a whole number >= 1 (ConfigError otherwise)."""
    if isinstance(trials, bool) or not isinstance(trials, int) or trials < 1:
        raise ConfigError(f"--trials {trials} is invalid: run at least 1 trial, e.g. --trials 40")
    return trials


@dataclass(frozen=True, kw_only=True)
class TuneSpec:
    """What to tune: the model, the table and folds, the budget, the space and the seed."""

    experts: tuple[str, ...]  # quantizer names; one = a single model, several = a mixture
    dataset: str = "synth"  # a dataset name (ignored when ``data`` is given)
    data: Path | None = None  # a ready embedding table
    folds: tuple[int, ...] | None = None  # the objective's folds; None = every fold of the table
    trials: int = 40  # the budget: trials that finish (complete, stopped early, or errored)
    space: SearchSpace | None = None  # None = the default space of the kind of model
    seed: int = 0  # seeds the sampler and every fold's split and training

    def __post_init__(self) -> None:
        experts = tuple(str(e).strip() for e in self.experts)
        if not experts or any(not e for e in experts):
            raise ConfigError("--model is empty: give a quantizer (e.g. q4) or a list (bitnet,q4,q8)")
        if len(set(experts)) != len(experts):
            raise ConfigError(f"--model {','.join(experts)!r} repeats an expert")
        check_experts(experts, "--model")
        object.__setattr__(self, "experts", experts)
        check_trials(self.trials)
        if self.space is None:
            object.__setattr__(self, "space", default_space(len(experts)))

    @property
    def model(self) -> str:
        return ",".join(self.experts)


@dataclass(frozen=True, kw_only=True)
class TuneOutcome:
    """What a tune or resume did, read back from the tuning table."""

    name: str
    path: Path
    requested: int  # the budget
    finished: int  # trials counted against it (complete, stopped, error)
    ran: int  # trials this command finished
    interrupted: int  # trials of a killed command found by this resume (not counted)
    best: dict[str, Any] | None  # the best row
    default: dict[str, Any] | None  # the default settings' row
    best_path: Path | None  # best.toml
    wall_seconds: float  # of the Tune run (0 when nothing ran)
    slots: int  # trials that could run at once
    rows: pd.DataFrame = field(repr=False)


# -- Optuna -------------------------------------------------------------------------------------

@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's INFO lines ("A new study created...", each trial) off for the block."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def open_study(store: TuneStore) -> Any:
    """The run's Optuna study (created if absent); call it while holding the store's lock."""
    import optuna

    return optuna.create_study(study_name=store.name, storage=store.study_storage(), direction="maximize",
                               load_if_exists=True)


def reconcile(store: TuneStore, manifest: Mapping[str, Any], run: str) -> int:
    """Make the study agree with our table after a killed command; returns the trials interrupted.

    - a trial still RUNNING in the study with a counted row (the command died between writing
      the row and telling Optuna) is told its recorded result;
    - a trial RUNNING without a row was cut short: failed in the study, recorded ``interrupted``
      (not counted: another trial takes its place);
    - a trial finished in the study without a row (died between telling Optuna and writing)
      gets its row from the study.
    """
    from optuna.trial import TrialState

    space = SearchSpace.from_dict(manifest["space"])
    default = manifest.get("default_point")
    study = open_study(store)
    rows = store.read_rows()
    by_trial = {int(r["trial"]): r for r in rows.to_dict("records")}
    new_rows: list[dict[str, Any]] = []
    interrupted = 0
    for t in study.get_trials(deepcopy=False):
        row = by_trial.get(t.number)
        base = {"trial": t.number, "params": space.values_json(t.params), "is_default": t.params == default,
                "run": run, "started_at": t.datetime_start.isoformat() if t.datetime_start else None,
                "finished_at": now_iso()}
        if t.state == TrialState.RUNNING:
            if row is not None and row["status"] in SCORED:
                study.tell(t.number, float(row["objective"]))
            else:
                study.tell(t.number, state=TrialState.FAIL)
            if row is None:
                interrupted += 1
                new_rows.append({**base, "status": "interrupted",
                                 "error": "the command stopped while this trial ran; not counted, another "
                                          "trial takes its place"})
        elif t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) and row is None:
            ok = t.state == TrialState.COMPLETE
            new_rows.append({**base, "status": "complete" if ok else "error", "objective": t.value if ok else None,
                             "epochs": len(t.intermediate_values),
                             "error": "" if ok else "failed; the command stopped before recording why"})
    store.upsert(new_rows)
    return interrupted


def startup_trials(budget: int) -> int:
    """Random trials before TPE models the results: Optuna's 10, fewer on small budgets (a
    quarter of the budget, at least 3), so that a 12-trial run is not all random search."""
    return min(10, max(3, budget // 4))


def sampler_seed(seed: int, n_trials: int) -> int:
    """The TPE seed of a run that starts with ``n_trials`` trials in the study."""
    return (seed * 1_000_003 + n_trials) % (2**32)


# -- running ------------------------------------------------------------------------------------

def _trial_name(trial: Any) -> str:
    from sweeps.tune_trainable import TRIAL

    return f"trial-{trial.config[TRIAL]}"


def _slots(cluster: ClusterInfo, options: RunOptions) -> int:
    slots = max(1, math.floor(cluster.cpus / options.cpus_per_trial))
    return min(slots, options.max_concurrent) if options.max_concurrent else slots


def _execute(store: TuneStore, manifest: Mapping[str, Any], table: Any, options: RunOptions,
             cluster: ClusterInfo, interrupted: int) -> TuneOutcome:
    """Run the rest of the budget as one Tune run, recording rows as trials finish."""
    import optuna
    from optuna.trial import TrialState
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from sweeps.tune_recorder import TuneProgress, TuneRecorder
    from sweeps.tune_trainable import OBJECTIVE, TunePayload, TuneTrainable

    space = SearchSpace.from_dict(manifest["space"])
    rows = store.read_rows()
    remaining = int(manifest["trials"]) - counted(rows)
    study = open_study(store)
    waiting = any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
    default = manifest.get("default_point")
    # The default settings go first, once: not again after they ran, nor while still enqueued.
    points = [default] if default is not None and default_row(rows) is None and not waiting else None
    sampler = optuna.samplers.TPESampler(seed=sampler_seed(int(manifest["seed"]), len(study.trials)),
                                         n_startup_trials=startup_trials(int(manifest["trials"])))
    slots = _slots(cluster, options)
    searcher = ConcurrencyLimiter(
        OptunaSearch(space=space.suggest, metric=OBJECTIVE, mode="max", points_to_evaluate=points,
                     sampler=sampler, study_name=store.name, storage=store.study_storage()),
        max_concurrent=slots)
    scheduler = (ASHAScheduler(time_attr="training_iteration", metric=OBJECTIVE, mode="max",
                               max_t=space.max_epochs, grace_period=space.grace,
                               reduction_factor=space.reduction_factor)
                 if space.asha else FIFOScheduler())
    payload = TunePayload(table=table, experts=tuple(manifest["experts"]), folds=tuple(manifest["folds"]),
                          seed=int(manifest["seed"]), space=space, threads=options.cpus_per_trial)
    trainable = tune.with_resources(tune.with_parameters(TuneTrainable, payload=payload),
                                    {"cpu": options.cpus_per_trial})
    store.ray_dir.mkdir(exist_ok=True)
    run = next_run_name(store.ray_dir)
    progress = NullProgress() if options.quiet else TuneProgress(store.name, options.progress_stream)
    best = best_row(rows)
    if isinstance(progress, TuneProgress) and best is not None:
        progress.best = float(best["objective"])
    recorder = TuneRecorder(store, manifest, run, progress)
    tuner = tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(search_alg=searcher, scheduler=scheduler, num_samples=remaining,
                                    reuse_actors=True, trial_name_creator=_trial_name,
                                    trial_dirname_creator=_trial_name),
        run_config=tune.RunConfig(
            name=run, storage_path=str(store.ray_dir), verbose=0, callbacks=[recorder],
            failure_config=tune.FailureConfig(max_failures=options.max_failures),
            checkpoint_config=tune.CheckpointConfig(checkpoint_at_end=False)))
    progress.start(total=int(manifest["trials"]), done=counted(rows))
    t0 = time.time()
    try:
        tuner.fit()
    finally:
        progress.stop()
    wall = time.time() - t0
    return _outcome(store, manifest, ran_in=run, interrupted=interrupted, wall=wall, slots=slots)


def _outcome(store: TuneStore, manifest: Mapping[str, Any], *, ran_in: str | None, interrupted: int,
             wall: float, slots: int) -> TuneOutcome:
    rows = store.read_rows()
    best_path = store.write_best(manifest, rows)
    ran = int(((rows["run"] == ran_in) & rows["status"].isin(COUNTED)).sum()) if ran_in else 0
    return TuneOutcome(name=store.name, path=store.path, requested=int(manifest["trials"]), finished=counted(rows),
                       ran=ran, interrupted=interrupted, best=best_row(rows), default=default_row(rows),
                       best_path=best_path, wall_seconds=wall, slots=slots, rows=rows)


def _last_run(store: TuneStore) -> str:
    """The label of the last Tune run started (the one a kill interrupted)."""
    if not store.ray_dir.is_dir():
        return "run-1"
    return f"run-{max(int(next_run_name(store.ray_dir)[4:]) - 1, 1)}"


def _check_folds(table: Any, folds: tuple[int, ...] | None) -> tuple[int, ...]:
    if len(table.fold_ids) < 2:
        raise ConfigError(f"{table.source} has one fold only: tuning needs other folds to train on")
    if folds is None:
        return tuple(int(f) for f in table.fold_ids)
    for fold in folds:
        table.check_fold(fold)
    return tuple(folds)


def default_tune_name(experts: tuple[str, ...]) -> str:
    """``tune-q4-20250131-142501``: the model and the local start time."""
    return default_name("tune-" + "-".join(experts))


def run_tune(spec: TuneSpec, *, name: str | None = None, options: RunOptions = RunOptions(),
             resolve: Resolver | None = None) -> TuneOutcome:
    """Start tuning run ``name`` and run ``spec.trials`` trials.

    Nothing is written before the name, the storage, the table, the folds and the Ray address
    are checked.

    Raises:
        ConfigError: the name exists (use :func:`resume_tune`), the storage is not writable, the
            address is unreachable; DataError: the table or a fold is missing.
    """
    store = TuneStore(options.storage, name or default_tune_name(spec.experts))
    store.check_new()
    resolve = resolve or default_resolver()
    data = Path(spec.data).expanduser().resolve() if spec.data is not None else None
    table = resolve(None, data) if data is not None else resolve(spec.dataset, None)
    folds = _check_folds(table, spec.folds)
    table_name = data.stem if data is not None else spec.dataset
    ref = TableRef(name=table_name, dataset=None if data else spec.dataset, data=str(data) if data else None,
                   content_hash=table.content_hash())
    assert spec.space is not None
    manifest = {"name": store.name, "kind": "tune", "created_at": now_iso(), "qmoe_version": qmoe.__version__,
                "model": spec.model, "experts": list(spec.experts), "table": ref.to_dict(), "folds": list(folds),
                "trials": spec.trials, "seed": spec.seed, "space": spec.space.to_dict(),
                "default_point": spec.space.default_point(len(spec.experts) > 1)}
    with ray_session(options.address, env=worker_env(options.cpus_per_trial),
                     verbose=options.verbose) as cluster:
        store.create(manifest)
        with store.lock(), quiet_tune(options.verbose), optuna_quiet():
            return _execute(store, manifest, table, options, cluster, interrupted=0)


def resume_tune(name: str, *, trials: int | None = None, options: RunOptions = RunOptions(),
                resolve: Resolver | None = None) -> TuneOutcome:
    """Continue tuning run ``name`` until its budget (or a new ``trials``) is reached, never beyond.

    Raises:
        ConfigError: no such run, another command holds it, a bad ``trials``; DataError: the
            table changed since the run started.
    """
    store = TuneStore(options.storage, name)
    manifest = store.read_manifest()
    address = validate_address(options.address)
    if address not in (None, "auto"):
        check_reachable(address)  # fail before the lock file or the study is touched
    with store.lock(), optuna_quiet():
        if trials is not None:
            manifest["trials"] = check_trials(trials)
            store.write_manifest(manifest)
        interrupted = reconcile(store, manifest, run=_last_run(store))
        if counted(store.read_rows()) >= int(manifest["trials"]):
            return _outcome(store, manifest, ran_in=None, interrupted=interrupted, wall=0.0, slots=0)
        ref = TableRef(**manifest["table"])
        table = reload_tables([ref], resolve)[ref.name]
        with ray_session(options.address, env=worker_env(options.cpus_per_trial),
                         verbose=options.verbose) as cluster, quiet_tune(options.verbose):
            return _execute(store, manifest, table, options, cluster, interrupted=interrupted)
