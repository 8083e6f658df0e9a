"""``qmoe tune``: Optuna (TPE, seeded) inside Ray Tune over training hyper-parameters (DESIGN §8).

Typical use::

    from qmoe.sweeps.tune.tune_runner import TuneSpec, run_tune, resume_tune
    outcome = run_tune(TuneSpec(experts=("q4",), folds=(1, 2), trials=40), name="tq4")
    outcome = resume_tune("tq4")                 # after a crash or a kill: finish the budget

How it runs: Ray Tune drives the trials; ``OptunaSearch`` (a seeded ``TPESampler``) suggests
each trial's settings from a define-by-run space and keeps its study in ``study.log``; a
``ConcurrencyLimiter`` lets it suggest only when a slot is free, so each suggestion sees every
finished trial; ASHA stops trials whose running objective falls behind at its rungs. The
objective is the mean validation macro-F1 over the chosen folds (:mod:`qmoe.cross_validation`).
The default settings are the first point evaluated (``points_to_evaluate``), so the best score
is never below theirs: by construction, not by luck.

Resume is a fresh Tune run that continues the same Optuna study (see :mod:`qmoe.sweeps.tune.study`
for why, and how the study is made to agree with our table first); the new run gets the rest of
the budget: requested minus the trials our table counts. Never more. With several trials at a
time the order in which they finish depends on timing, so the sequence of suggestions is
reproducible only with ``--max-concurrent 1``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

import qmoe
from qmoe.errors import ConfigError
from qmoe.layout import COUNTED
from qmoe.record import now_iso

from qmoe.sweeps.cluster import ClusterInfo
from qmoe.sweeps.engine import RunOptions, TuneJob, fit, last_run_name, next_run_name
from qmoe.sweeps.grid import check_experts
from qmoe.sweeps.parse import default_name, parse_folds, parse_names
from qmoe.sweeps.plan import Resolver, TableRef, default_resolver, reload_tables
from qmoe.sweeps.tune.space import SearchSpace, default_space, resolve_space
from qmoe.sweeps.tune.study import open_study, optuna_quiet, reconcile, sampler_seed, startup_trials
from qmoe.sweeps.tune.tune_store import TuneStore
from qmoe.sweeps.tune.tuning_table import best_row, counted, default_row

log = logging.getLogger(__name__)
DEFAULT_TRIALS = 40


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
    trials: int = DEFAULT_TRIALS  # the budget: trials that finish (complete, stopped early, or errored)
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


# -- running ------------------------------------------------------------------------------------

def _trial_name(trial: Any) -> str:
    from qmoe.sweeps.tune.tune_trainable import TRIAL

    return f"trial-{trial.config[TRIAL]}"


def _execute(store: TuneStore, manifest: Mapping[str, Any], table: Any, options: RunOptions,
             cluster: ClusterInfo, interrupted: int) -> TuneOutcome:
    """Run the rest of the budget as one Tune run, recording rows as trials finish."""
    import optuna
    from optuna.trial import TrialState
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler
    from ray.tune.search import ConcurrencyLimiter
    from ray.tune.search.optuna import OptunaSearch

    from qmoe.sweeps.tune.tune_recorder import TuneProgress, TuneRecorder
    from qmoe.sweeps.tune.tune_trainable import OBJECTIVE, TunePayload, TuneTrainable

    space = SearchSpace.from_dict(manifest["space"])
    rows = store.read_rows()
    study = open_study(store)
    waiting = any(t.state == TrialState.WAITING for t in study.get_trials(deepcopy=False))
    default = manifest.get("default_point")
    # The default settings go first, once: not again after they ran, nor while still enqueued.
    points = [default] if default is not None and default_row(rows) is None and not waiting else None
    sampler = optuna.samplers.TPESampler(seed=sampler_seed(int(manifest["seed"]), len(study.trials)),
                                         n_startup_trials=startup_trials(int(manifest["trials"])))
    slots = options.slots(cluster)
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
    run = next_run_name(store)
    progress = options.progress(store.name, TuneProgress)
    best = best_row(rows)
    if isinstance(progress, TuneProgress) and best is not None:
        progress.best = float(best["objective"])
    job = TuneJob(trainable=TuneTrainable, payload=payload, recorder=TuneRecorder(store, manifest, run, progress),
                  progress=progress, total=int(manifest["trials"]), done=counted(rows), trial_name=_trial_name,
                  search_alg=searcher, scheduler=scheduler,
                  num_samples=int(manifest["trials"]) - counted(rows))
    fitted = fit(store, job, options, run=run)
    return _outcome(store, manifest, ran_in=run, interrupted=interrupted, wall=fitted.wall_seconds, slots=slots)


def _outcome(store: TuneStore, manifest: Mapping[str, Any], *, ran_in: str | None, interrupted: int,
             wall: float, slots: int) -> TuneOutcome:
    rows = store.read_rows()
    best_path = store.write_best(manifest, rows)
    ran = int(((rows["run"] == ran_in) & rows["status"].isin(COUNTED)).sum()) if ran_in else 0
    return TuneOutcome(name=store.name, path=store.path, requested=int(manifest["trials"]), finished=counted(rows),
                       ran=ran, interrupted=interrupted, best=best_row(rows), default=default_row(rows),
                       best_path=best_path, wall_seconds=wall, slots=slots, rows=rows)


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
    assert spec.space is not None  # set by TuneSpec.__post_init__
    manifest = {"name": store.name, "kind": "tune", "created_at": now_iso(), "qmoe_version": qmoe.__version__,
                "model": spec.model, "experts": list(spec.experts), "table": ref.to_dict(), "folds": list(folds),
                "trials": spec.trials, "seed": spec.seed, "space": spec.space.to_dict(),
                "default_point": spec.space.default_point(len(spec.experts) > 1)}
    with options.ray() as cluster:
        store.create(manifest)
        with store.lock(), optuna_quiet():
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
    options.check_address()  # fail before the lock file or the study is touched
    with store.lock(), optuna_quiet():
        if trials is not None:
            manifest = store.set_budget(manifest, check_trials(trials))
        interrupted = reconcile(store, manifest, run=last_run_name(store))
        if counted(store.read_rows()) >= int(manifest["trials"]):
            return _outcome(store, manifest, ran_in=None, interrupted=interrupted, wall=0.0, slots=0)
        ref = TableRef(**manifest["table"])
        table = reload_tables([ref], resolve)[ref.name]
        with options.ray() as cluster:
            return _execute(store, manifest, table, options, cluster, interrupted=interrupted)


@dataclass(frozen=True, kw_only=True)
class TuneRequest:
    """A ``qmoe tune`` command line, as typed: a new run (``model`` and its settings), or
    ``resume`` of one (then only ``trials``, a new budget, may be given). Checked when made;
    :attr:`name` is the run's name before anything runs.
    """

    model: str | None = None  # "q4" or "bitnet,q4,q8"
    dataset: str | None = None
    data: Path | None = None
    folds: str | None = None  # "1,3-5"
    trials: int | None = None  # the budget (default 40); with resume, a new budget
    space: str | None = None  # "default" or a SPACE.toml
    seed: int | None = None
    resume: str | None = None  # the run to continue
    name: str | None = None  # a new run's name (default tune-MODEL-DATE-TIME)
    spec: TuneSpec | None = field(init=False, default=None)  # what a new run tunes

    def __post_init__(self) -> None:
        if self.trials is not None:
            check_trials(self.trials)
        if self.resume is not None:
            given = [flag for flag, value in (("--model", self.model), ("--dataset", self.dataset),
                                              ("--data", self.data), ("--folds", self.folds), ("--space", self.space),
                                              ("--seed", self.seed), ("--name", self.name)) if value is not None]
            if given:
                raise ConfigError(f"--resume {self.resume} continues the run with its own settings: leave out "
                                  f"{', '.join(given)} (only --trials and the run options may change)")
            object.__setattr__(self, "name", self.resume)
            return
        if self.model is None:
            raise ConfigError("--model is required: the model to tune, e.g. --model q4 (or --resume NAME)")
        experts = parse_names(self.model, flag="--model", example="bitnet,q4,q8")
        spec = TuneSpec(experts=experts, dataset=self.dataset or "synth", data=self.data,
                        folds=parse_folds(self.folds) if self.folds is not None else None,
                        trials=DEFAULT_TRIALS if self.trials is None else self.trials,
                        space=resolve_space(self.space, len(experts)), seed=0 if self.seed is None else self.seed)
        object.__setattr__(self, "spec", spec)
        object.__setattr__(self, "name", self.name or default_tune_name(spec.experts))

    def run(self, options: RunOptions = RunOptions()) -> TuneOutcome:
        """Start the run (:func:`run_tune`) or continue it (:func:`resume_tune`)."""
        if self.spec is None:
            return resume_tune(self.name, trials=self.trials, options=options)
        return run_tune(self.spec, name=self.name, options=options)
