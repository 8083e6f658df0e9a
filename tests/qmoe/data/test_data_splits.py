"""Train/val/test splits: disjoint, group-aware, stratified, seeded; the paper protocol."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.data import EmbeddingTable, stratified_group_folds, train_val_test_indices
from qmoe.errors import ConfigError, DataError


@pytest.mark.parametrize("fold", [1, 3, 5])
def test_clean_split_is_disjoint_and_covers_everything(synth_small: EmbeddingTable, fold: int) -> None:
    s = train_val_test_indices(synth_small, fold, protocol="clean", seed=0)
    parts = [set(s.train), set(s.val), set(s.test)]
    assert not (parts[0] & parts[1] or parts[0] & parts[2] or parts[1] & parts[2])
    assert sum(map(len, parts)) == len(synth_small)
    assert (synth_small.folds[s.test] == fold).all()
    assert (synth_small.folds[s.train] != fold).all() and (synth_small.folds[s.val] != fold).all()
    assert (s.fold, s.protocol) == (fold, "clean")


def test_groups_never_straddle_train_and_val(synth_small: EmbeddingTable) -> None:
    for seed in range(3):
        s = train_val_test_indices(synth_small, 2, protocol="clean", seed=seed)
        assert not set(synth_small.groups[s.train]) & set(synth_small.groups[s.val])


def test_val_is_about_ten_percent_and_roughly_stratified(synth_small: EmbeddingTable) -> None:
    s = train_val_test_indices(synth_small, 1, protocol="clean", seed=0)
    n_rest = len(s.train) + len(s.val)
    assert 0.05 <= len(s.val) / n_rest <= 0.15
    # 12 classes x 8 groups of 2 in the training folds: a 10% val holds ~1 group per class
    counts = np.bincount(synth_small.y[s.val], minlength=synth_small.n_classes)
    assert (counts > 0).sum() >= synth_small.n_classes - 2
    assert counts.max() <= 4


def test_clean_split_is_deterministic_by_seed(synth_small: EmbeddingTable) -> None:
    a = train_val_test_indices(synth_small, 4, protocol="clean", seed=7)
    b = train_val_test_indices(synth_small, 4, protocol="clean", seed=7)
    c = train_val_test_indices(synth_small, 4, protocol="clean", seed=8)
    np.testing.assert_array_equal(a.val, b.val)
    np.testing.assert_array_equal(a.train, b.train)
    assert not np.array_equal(a.val, c.val)
    np.testing.assert_array_equal(a.test, c.test)  # the test fold never depends on the seed


def test_paper_protocol_validates_on_the_test_fold(synth_small: EmbeddingTable) -> None:
    s = train_val_test_indices(synth_small, 3, protocol="paper", seed=0)
    np.testing.assert_array_equal(s.val, s.test)
    np.testing.assert_array_equal(s.train, np.flatnonzero(synth_small.folds != 3))
    assert s.protocol == "paper"


def test_unknown_protocol_lists_the_known_ones(synth_small: EmbeddingTable) -> None:
    with pytest.raises(ConfigError, match="unknown protocol 'fast'; known: clean, paper"):
        train_val_test_indices(synth_small, 1, protocol="fast", seed=0)


def test_unknown_fold(synth_small: EmbeddingTable) -> None:
    with pytest.raises(DataError, match="fold 9 does not exist"):
        train_val_test_indices(synth_small, 9, protocol="clean", seed=0)


def test_bad_val_fraction(synth_small: EmbeddingTable) -> None:
    with pytest.raises(ConfigError, match="val_fraction"):
        train_val_test_indices(synth_small, 1, protocol="clean", seed=0, val_fraction=0.0)


def test_stratified_group_folds() -> None:
    rng = np.random.default_rng(0)
    groups = np.repeat(np.arange(60), 3).astype(str)  # 60 groups of 3 rows
    labels = np.repeat(rng.integers(0, 4, 60), 3)
    folds = stratified_group_folds(labels, groups, k=5, seed=1)
    assert folds.dtype == np.int64 and set(folds) == {1, 2, 3, 4, 5}
    for g in np.unique(groups):
        assert len(set(folds[groups == g])) == 1
    for c in range(4):  # every class spread over the folds
        assert len(set(folds[labels == c])) >= 4
    np.testing.assert_array_equal(folds, stratified_group_folds(labels, groups, k=5, seed=1))
    assert not np.array_equal(folds, stratified_group_folds(labels, groups, k=5, seed=2))


def test_stratified_group_folds_needs_enough_groups() -> None:
    with pytest.raises(DataError, match="from 3 groups"):
        stratified_group_folds(np.array([0, 1, 0]), np.array(["a", "b", "c"]), k=5, seed=0)
    with pytest.raises(ConfigError, match="k must be >= 2"):
        stratified_group_folds(np.array([0, 1]), np.array(["a", "b"]), k=1, seed=0)


def test_tiny_tables_get_fewer_validation_splits_instead_of_a_crash(make_frame) -> None:
    from qmoe.data import validate_frame

    # 3 classes x 5 folds x 1 group x 2 clips: 8 rows per class outside the test fold (< 10 splits)
    table = validate_frame(make_frame(n_classes=3, n_folds=5, groups_per=1, clips_per=2), "tiny")
    split = train_val_test_indices(table, fold=1, seed=0)
    assert len(split.val) > 0 and not set(table.groups[split.val]) & set(table.groups[split.train])


def test_stratified_group_folds_needs_enough_rows_per_class() -> None:
    with pytest.raises(DataError, match="largest class has 3 rows; use k <= 3"):
        stratified_group_folds(np.array([0, 0, 0, 1, 1, 1]), np.array(list("abcdef")), k=5, seed=0)


def test_refold_is_stratified_group_aware_and_keeps_everything_else(synth_small: EmbeddingTable) -> None:
    from qmoe.data.splits import refold

    table = refold(synth_small, 3)
    assert table.meta["split_seed"] == 3 and "split_seed" not in synth_small.meta
    assert sorted(set(table.folds.tolist())) == synth_small.fold_ids  # the same fold numbers
    np.testing.assert_array_equal(table.X, synth_small.X)
    np.testing.assert_array_equal(table.y, synth_small.y)
    assert not np.array_equal(table.folds, synth_small.folds)  # really reassigned
    for g in np.unique(table.groups):  # no group straddles two folds
        assert len(set(table.folds[table.groups == g].tolist())) == 1
    # stratified: every class in every fold, in shares that differ by at most one group's rows
    group_rows = max(np.unique(table.groups, return_counts=True)[1])
    for c in np.unique(table.y):
        per_fold = np.bincount(table.folds[table.y == c], minlength=max(table.fold_ids) + 1)[1:]
        assert per_fold.min() > 0 and per_fold.max() - per_fold.min() <= group_rows


def test_refold_is_a_pure_function_of_table_and_split_seed(synth_small: EmbeddingTable) -> None:
    from qmoe.data.splits import folds_digest, refold

    first, again, other = refold(synth_small, 3), refold(synth_small, 3), refold(synth_small, 4)
    np.testing.assert_array_equal(first.folds, again.folds)
    assert folds_digest(first.folds) == folds_digest(again.folds) != folds_digest(other.folds)
    # the reassignment depends on the table's content, not on how often it was refolded
    np.testing.assert_array_equal(refold(refold(synth_small, 4), 3).folds, first.folds)
