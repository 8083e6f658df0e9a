"""A sweep spec made concrete: its embedding tables and the list of trials (the grid expansion).

``plan_sweep(spec)`` resolves every dataset of the spec to an embedding table, checks the
folds, and expands ``split seeds x seeds x datasets x groups x models x alphas x curiosity
variants x folds`` into :class:`TrialSpec`\\ s, one per ``trial_key``, in the order they will
run: longest first (:func:`longest_first`), and within a cost the replicates outermost, so
that a sweep cut short holds whole replicates of the grid. Nothing here touches Ray or the disk
beyond reading the tables.

Repeated k-fold (``split_seed``): every trial reassigns its table's folds itself
(:func:`qmoe.data.splits.refold`, a pure function of the table and the split seed); the plan
records a digest of each assignment in the table's :class:`TableRef`, and a resume checks that
it rebuilds the same folds.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmoe.errors import ConfigError, DataError
from qmoe.spec import DEFAULT_CURIOSITY, TrialSpec

from qmoe.sweeps.folder import SweepFolder
from qmoe.sweeps.grid import SweepSpec
from qmoe.sweeps.overrides import Overrides
from qmoe.sweeps.parse import default_name

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
    folds: Mapping[str, str] = dataclasses.field(default_factory=dict)  # split seed -> folds_digest

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "folds": dict(self.folds)}


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


def check_repeats(spec: SweepSpec, tables: Mapping[str, Any] | None = None) -> None:
    """Refuse repeated k-fold on a dataset whose folds are official: by the names of the spec's
    datasets (before any table loads) and, given ``tables``, by what each table says it is.

    Raises:
        ConfigError: naming ``--repeats``, the dataset and the fix (training seeds).
    """
    if spec.split_seed_values == (None,):
        return
    from qmoe.data.datasets import DATASETS, official_folds_of

    names = [] if spec.data is not None else [d for d in spec.datasets if d in DATASETS]
    official = [n for n in names if DATASETS.get(n).official_folds]
    official += [o for o in map(official_folds_of, (tables or {}).values()) if o]
    if official:
        raise ConfigError(f"--repeats: {official[0]} has official folds, which are never reassigned (results "
                          f"are compared on them); repeat its trials with training seeds instead: --seeds N")


def fold_digest(table: Any, split_seed: int) -> str:
    """The digest of the folds :func:`~qmoe.data.splits.refold` assigns to ``table``."""
    from qmoe.data.splits import folds_digest, refold

    return folds_digest(refold(table, split_seed).folds)


def fold_digests(spec: SweepSpec, table: Any) -> dict[str, str]:
    """Split seed -> :func:`fold_digest` of each split seed of the spec (empty without repeats)."""
    return {str(s): fold_digest(table, s) for s in spec.split_seed_values if s is not None}


def expand(spec: SweepSpec, tables: Mapping[str, Any]) -> tuple[TrialSpec, ...]:
    """Every trial of the grid on these tables, in a stable order, unique by ``trial_key``.

    The replicates (split seeds, then seeds) are the outer loops: the first replicate of the
    whole grid comes first. ``curiosity`` variants apply to alpha > 0 (alpha = 0 is plain
    routing, one trial).

    Raises:
        DataError: a fold of the spec that a table lacks.
    """
    trials: dict[str, TrialSpec] = {}
    train = {False: spec.train_config(False), True: spec.train_config(True)}
    folds_of: dict[str, tuple[int, ...]] = {}
    for name, table in tables.items():
        if spec.folds is not None:
            for fold in spec.folds:
                table.check_fold(fold)
        folds_of[name] = spec.folds or tuple(int(f) for f in table.fold_ids)
    for split_seed in spec.split_seed_values:
        for seed in spec.seed_values:
            for name in tables:
                for group in spec.grid:
                    for experts in group.models:
                        for alpha in group.alphas:
                            for curiosity in spec.curiosity if alpha > 0 else (DEFAULT_CURIOSITY,):
                                for fold in folds_of[name]:
                                    trial = TrialSpec(
                                        dataset=name, fold=fold, experts=experts, alpha=alpha,
                                        protocol=spec.protocol, seed=seed, split_seed=split_seed,
                                        curiosity=curiosity, train=train[len(experts) > 1],
                                        hparams_source=spec.hparams_source, latency_runs=spec.latency_runs,
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


def check_command(spec: SweepSpec, overrides: Overrides = Overrides(), *, name: str | None = None,
                  storage: Path | str, dry_run: bool = False) -> tuple[SweepSpec, str]:
    """``spec`` with the command line's ``overrides``, and the sweep's name (``name`` or
    ``KIND-DATE-TIME``), checked without loading a table: a ``qmoe sweep`` command runs this
    before it starts Ray. Unless it is a dry run, the name is checked free and the storage
    writable.

    Raises:
        ConfigError: a bad override, a repeated k-fold on official folds (by the datasets'
            names), a name in use, storage that cannot be written.
    """
    spec = overrides.apply(spec)
    check_repeats(spec)
    name = name or default_name(spec.kind)
    if not dry_run:
        SweepFolder(storage, name).check_new()
    return spec, name


def plan_sweep(spec: SweepSpec, *, resolve: Resolver | None = None) -> SweepPlan:
    """Resolve the spec's tables and expand its grid, longest trials first (see :func:`load_tables`,
    :func:`expand`, :func:`longest_first`)."""
    check_repeats(spec)
    tables, refs, skipped = load_tables(spec, resolve)
    check_repeats(spec, tables)
    refs = [dataclasses.replace(r, folds=fold_digests(spec, tables[r.name])) for r in refs]
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
        for split_seed, digest in ref.folds.items():
            rebuilt = fold_digest(table, int(split_seed))
            if rebuilt != digest:
                raise DataError(
                    f"table {ref.name!r}: split seed {split_seed} now assigns other folds than when the sweep started "
                    f"(digest {rebuilt} != {digest}; a changed scikit-learn?): its results would mix two fold "
                    "assignments; finish it with the scikit-learn it started with, or start a new sweep")
        tables[ref.name] = table
    return tables
