"""Train / validation / test indices for one trial, and folds for datasets without them
(including the seeded reassignments of repeated k-fold, :func:`refold`).

DESIGN §5: the test fold is the trial's fold; early stopping and checkpoint choice use a
validation split carved from the *training* folds (stratified, group-aware, 10%). The
``paper`` protocol (validation = the test fold, as published) exists for comparison only.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import warnings
from dataclasses import dataclass
from enum import Enum

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from qmoe.data.table import EmbeddingTable
from qmoe.errors import ConfigError, DataError

log = logging.getLogger(__name__)


class SplitProtocol(str, Enum):
    """How the validation split is chosen."""

    CLEAN = "clean"  # validation carved from the training folds (the default)
    PAPER = "paper"  # validation = the test fold (the published protocol; optimistic)


@dataclass(frozen=True, kw_only=True, eq=False)
class Split:
    """Row indices (into the table) of one trial's three parts, each sorted.

    Attributes:
        train: rows the model is fitted on.
        val: rows used for early stopping / checkpoint choice.
        test: rows of the test fold.
        fold: the test fold.
        protocol: ``"clean"`` or ``"paper"``.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    fold: int
    protocol: str


def parse_protocol(protocol: str | SplitProtocol) -> SplitProtocol:
    """``"clean"``/``"paper"`` -> :class:`SplitProtocol`; anything else is a ConfigError."""
    try:
        return SplitProtocol(protocol)
    except ValueError:
        known = ", ".join(p.value for p in SplitProtocol)
        raise ConfigError(f"unknown protocol {protocol!r}; known: {known}") from None


def train_val_test_indices(
    table: EmbeddingTable,
    fold: int,
    *,
    protocol: str | SplitProtocol = SplitProtocol.CLEAN,
    seed: int = 0,
    val_fraction: float = 0.1,
) -> Split:
    """Split a table for the trial whose test fold is ``fold``.

    Args:
        table: the embedding table.
        fold: the test fold (must exist in the table).
        protocol: ``"clean"``: validation is a stratified, group-aware ``val_fraction`` of
            the training folds (sklearn ``StratifiedGroupKFold`` with
            ``n_splits = round(1 / val_fraction)``, fewer on tables too small for that,
            first split's held-out part), so no group straddles train and validation and
            the test fold is never touched.
            ``"paper"``: validation is the test fold itself, train is every other fold.
        seed: shuffling seed of the clean split.
        val_fraction: share of the training rows held out for validation (clean only).

    Returns:
        The :class:`Split`.

    Raises:
        ConfigError: unknown protocol or ``val_fraction`` outside (0, 0.5].
        DataError: unknown fold, or too few groups to carve a validation split.
    """
    proto = parse_protocol(protocol)
    table.check_fold(fold)
    test = np.flatnonzero(table.folds == fold)
    rest = np.flatnonzero(table.folds != fold)
    if proto is SplitProtocol.PAPER:
        return Split(train=rest, val=test.copy(), test=test, fold=fold, protocol=proto.value)

    if not 0 < val_fraction <= 0.5:
        raise ConfigError(f"val_fraction must be in (0, 0.5], got {val_fraction}")
    n_groups = len(np.unique(table.groups[rest]))
    largest_class = int(np.bincount(table.y[rest]).max())
    # sklearn refuses more splits than groups, or than the largest class has rows (tiny
    # tables): take fewer, larger splits then (validation share 1/n_splits > val_fraction).
    n_splits = min(max(2, round(1 / val_fraction)), n_groups, largest_class)
    if n_splits < 2:
        raise DataError(
            f"{table.source}: with fold {fold} held out only {n_groups} group(s) and at most "
            f"{largest_class} row(s) per class remain; a validation split needs at least two "
            "groups and two rows of some class in the training folds"
        )
    cv = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        # "The least populated class has only k members": expected for rare classes.
        warnings.simplefilter("ignore", UserWarning)
        fit_part, val_part = next(cv.split(np.zeros(len(rest)), table.y[rest], table.groups[rest]))
    train, val = np.sort(rest[fit_part]), np.sort(rest[val_part])
    log.debug("fold %d: %d train, %d val, %d test rows", fold, len(train), len(val), len(test))
    return Split(train=train, val=val, test=test, fold=fold, protocol=proto.value)


def stratified_group_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Assign folds 1..k to a dataset without official ones (stratified, group-aware).

    Args:
        labels: class per row (N,).
        groups: group per row (N,); a group's rows all get the same fold.
        k: number of folds (>= 2, <= number of groups).
        seed: shuffling seed; the same seed gives the same folds.

    Returns:
        int64 array (N,) of fold ids in 1..k.

    Raises:
        ConfigError: if ``k < 2``.
        DataError: if there are fewer groups than folds.
    """
    labels, groups = np.asarray(labels), np.asarray(groups)
    if k < 2:
        raise ConfigError(f"k must be >= 2 folds, got {k}")
    n_groups = len(np.unique(groups))
    if n_groups < k:
        raise DataError(f"cannot make {k} group-aware folds from {n_groups} groups; use k <= {n_groups}")
    largest_class = int(np.unique(labels, return_counts=True)[1].max()) if len(labels) else 0
    if largest_class < k:  # sklearn's own check, as a DataError
        raise DataError(f"cannot make {k} stratified folds: the largest class has {largest_class} rows; "
                        f"use k <= {largest_class}")
    folds = np.zeros(len(labels), dtype=np.int64)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        for i, (_, held) in enumerate(cv.split(np.zeros(len(labels)), labels, groups), start=1):
            folds[held] = i
    return folds


def refold(table: EmbeddingTable, split_seed: int) -> EmbeddingTable:
    """The table with its folds reassigned by ``split_seed`` (one repeat of repeated k-fold).

    A pure function of (table, split_seed): stratified, group-aware folds
    (:func:`stratified_group_folds`, k = the table's number of folds, ``split_seed`` as the
    shuffling seed) that take the table's own fold ids in order, so ``--folds`` and the trial's
    ``fold`` mean the same numbers. Rows, groups and everything else are unchanged. For
    datasets whose folds are not official only (Quinn, synth, a table of one's own): official
    folds are the unit results are compared on, and reassigning them breaks that comparison.

    Raises:
        DataError: the table has too few groups or rows per class for its number of folds.
    """
    ids = np.asarray(table.fold_ids, dtype=np.int64)
    assigned = stratified_group_folds(table.y, table.groups, len(ids), int(split_seed))
    meta = {**table.meta, "split_seed": int(split_seed)}
    return dataclasses.replace(table, folds=ids[assigned - 1], meta=meta)


def folds_digest(folds: np.ndarray) -> str:
    """A short sha256 of a fold assignment (recorded in a sweep's manifest, so that a resume can
    check it rebuilds the same folds, e.g. after an upgrade of scikit-learn's shuffling)."""
    return hashlib.sha256(np.ascontiguousarray(np.asarray(folds, dtype="<i8")).tobytes()).hexdigest()[:16]
