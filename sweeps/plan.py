"""A sweep spec made concrete: its embedding tables and the list of trials (the grid expansion).

``plan_sweep(spec)`` resolves every dataset of the spec to an embedding table, checks the
folds, and expands ``datasets x groups x models x alphas x folds`` into :class:`TrialSpec`\\ s,
one per ``trial_key``, in the order they will run: longest first (:func:`longest_first`).
Nothing here touches Ray or the disk beyond reading the tables.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmoe.errors import ConfigError, DataError
from qmoe.spec import TrialSpec

from qmoe.sweeps.grid import SweepSpec

log = logging.getLogger(__name__)

#: ``(dataset, data) -> EmbeddingTable``; :func:`qmoe.data.datasets.resolve_table` by default.
Resolver = Callable[[str | None, Path | None], Any]


@dataclass(frozen=True, kw_only=True)
class TableRef:
    """How to load one of the sweep's tables again (on resume) and what it must hash to."""

    name: str  # the trials' ``dataset`` field
    dataset: str | None  # a registered dataset name, or None for a file given with --data
    data: str | None  # the table file, or None
    content_hash: str

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class SweepPlan:
    """The trials of a sweep and the tables they train on."""

    spec: SweepSpec
    trials: tuple[TrialSpec, ...]
    tables: Mapping[str, Any]  # table name -> EmbeddingTable
    refs: tuple[TableRef, ...]
    skipped: Mapping[str, str]  # dataset -> why it was left out (not prepared)


def default_resolver() -> Resolver:
    from qmoe.data.datasets import resolve_table

    return resolve_table


def load_tables(spec: SweepSpec, resolve: Resolver | None = None
                ) -> tuple[dict[str, Any], list[TableRef], dict[str, str]]:
    """Resolve the spec's datasets (or its ``data`` file) to tables.

    Returns:
        tables by name, their refs, and the datasets left out (``skip_unprepared``) with why.

    Raises:
        QmoeError: an unknown dataset, an unreadable table, or every dataset unprepared.
    """
    resolve = resolve or default_resolver()
    tables: dict[str, Any] = {}
    refs: list[TableRef] = []
    skipped: dict[str, str] = {}
    if spec.data is not None:
        path = Path(spec.data).expanduser().resolve()
        table = resolve(None, path)
        tables[path.stem] = table
        refs.append(TableRef(name=path.stem, dataset=None, data=str(path), content_hash=table.content_hash()))
        return tables, refs, skipped
    for name in spec.datasets:
        try:
            table = resolve(name, None)
        except DataError as err:
            if not spec.skip_unprepared:
                raise
            skipped[name] = " ".join(str(err).split())
            log.warning("leaving out %s: %s", name, skipped[name])
            continue
        tables[name] = table
        refs.append(TableRef(name=name, dataset=name, data=None, content_hash=table.content_hash()))
    if not tables:
        raise DataError(f"none of the datasets {', '.join(spec.datasets)} is prepared: "
                        "prepare one with 'qmoe data prepare DATASET --root DIR', or pick --dataset synth")
    return tables, refs, skipped


def expand(spec: SweepSpec, tables: Mapping[str, Any]) -> tuple[TrialSpec, ...]:
    """Every trial of the grid on these tables, in a stable order, unique by ``trial_key``.

    Raises:
        DataError: a fold of the spec that a table lacks.
    """
    trials: dict[str, TrialSpec] = {}
    train = {False: spec.train_config(False), True: spec.train_config(True)}
    for name, table in tables.items():
        if spec.folds is None:
            folds = tuple(int(f) for f in table.fold_ids)
        else:
            for fold in spec.folds:
                table.check_fold(fold)
            folds = spec.folds
        for group in spec.grid:
            for experts in group.models:
                mixture = len(experts) > 1
                for alpha in group.alphas:
                    for fold in folds:
                        trial = TrialSpec(dataset=name, fold=fold, experts=experts, alpha=alpha,
                                          protocol=spec.protocol, seed=spec.seed, train=train[mixture],
                                          hparams_source=spec.hparams_source,
                                          latency_runs=spec.latency_runs,
                                          measure_energy=spec.measure_energy)
                        trials.setdefault(trial.trial_key, trial)
    return tuple(trials.values())


def trial_cost(trial: TrialSpec, table: Any) -> int:
    """A trial's relative cost before it runs: rows x features x experts.

    Training dominates a trial and its epochs cost rows x (features x hidden + ...) per expert;
    the number of epochs (early stopping) is not known in advance, so trials of one model on
    one table tie.
    """
    rows, features = table.X.shape
    return int(rows) * int(features) * len(trial.experts)


def longest_first(trials: tuple[TrialSpec, ...], tables: Mapping[str, Any]) -> tuple[TrialSpec, ...]:
    """The trials in the order to run them: costliest first (:func:`trial_cost`), ties in grid order.

    Ray Tune starts trials in the order it is given them. With the long trials (mixtures, large
    tables) first, the short ones fill the slots at the end, so the last slot to finish waits
    for a short trial rather than a long one (longest-processing-time-first scheduling). Table 1's
    15 configurations on an ESC-50-sized fold, 2 cores: in grid order (singles, then mixtures) one
    core sat idle for the last 36 s of the sweep, longest first for 12 s.
    """
    cost = {t.trial_key: trial_cost(t, tables[t.dataset]) for t in trials}
    return tuple(sorted(trials, key=lambda t: -cost[t.trial_key]))  # sorted is stable: ties keep grid order


def plan_sweep(spec: SweepSpec, *, resolve: Resolver | None = None) -> SweepPlan:
    """Resolve the spec's tables and expand its grid, longest trials first (see :func:`load_tables`,
    :func:`expand`, :func:`longest_first`)."""
    tables, refs, skipped = load_tables(spec, resolve)
    trials = longest_first(expand(spec, tables), tables)
    if not trials:
        raise ConfigError(f"{spec.source}: the grid expands to no trials")
    return SweepPlan(spec=spec, trials=trials, tables=tables, refs=tuple(refs), skipped=skipped)


def reload_tables(refs: list[TableRef], resolve: Resolver | None = None) -> dict[str, Any]:
    """Load the tables a sweep started with again, checking that they did not change.

    Raises:
        DataError: a table is gone or its content differs from when the sweep started.
    """
    resolve = resolve or default_resolver()
    tables: dict[str, Any] = {}
    for ref in refs:
        table = resolve(ref.dataset, Path(ref.data) if ref.data else None)
        if table.content_hash() != ref.content_hash:
            raise DataError(
                f"table {ref.name!r} changed since the sweep started (content hash {table.content_hash()} "
                f"!= {ref.content_hash}): its results would mix two tables; start a new sweep instead")
        tables[ref.name] = table
    return tables
