"""The tuning objective: validation F1 from the training folds only; folds in lockstep."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from qmoe.measure import torch_threads
from qmoe.optim import optimizer_for
from qmoe.spec import TrainConfig, TrialSpec
from qmoe.train import fit
from qmoe.trial import build_model, standardise
from qmoe.cross_validation import CrossValidation, fold_rows, fold_seed

# Small and quick: a narrow MLP, a few epochs.
CFG = TrainConfig.single().replace(hidden=(64,), max_epochs=3, patience=2)


@pytest.fixture(autouse=True)
def one_thread():
    """One torch thread, as in a trial: two threads on a busy 2-core machine are 20x slower."""
    with torch_threads(1):
        yield


def test_objective_never_reads_the_test_fold(synth_table) -> None:
    cv = CrossValidation(synth_table, ("q4",), CFG, (1, 3), seed=0)
    for rows in cv.rows:
        used = np.concatenate([rows.train, rows.val])
        assert not np.isin(used, np.flatnonzero(synth_table.folds == rows.fold)).any()
        assert set(synth_table.folds[used]) == set(synth_table.fold_ids) - {rows.fold}
        assert not np.intersect1d(rows.train, rows.val).size
    # Stronger: garbage in the test fold (NaN features, shuffled labels) changes nothing.
    test = synth_table.folds == 1
    X, y = synth_table.X.copy(), synth_table.y.copy()
    X[test] = np.nan
    y[test] = np.random.default_rng(0).permutation(y[test])
    spoiled = dataclasses.replace(synth_table, X=X, y=y)
    clean = CrossValidation(synth_table, ("q4",), CFG, (1,), seed=0).run()
    dirty = CrossValidation(spoiled, ("q4",), CFG, (1,), seed=0).run()
    assert clean.fold_f1 == dirty.fold_f1 and clean.objective == dirty.objective
    assert np.array_equal(fold_rows(synth_table, 1, 5).val, fold_rows(spoiled, 1, 5).val)


def test_lockstep_folds_give_what_each_fold_gives_alone(synth_table) -> None:
    report = CrossValidation(synth_table, ("q4",), CFG, (1, 2), seed=7).run()
    for fold in (1, 2):
        s = fold_seed(7, fold)
        rows = fold_rows(synth_table, fold, s)
        x = standardise(synth_table, rows.train)
        torch.manual_seed(s)
        model = build_model(TrialSpec(dataset="synth", fold=fold, experts=("q4",), train=CFG),
                            synth_table.dim, synth_table.n_classes)
        alone = fit(model, x[rows.train], synth_table.y[rows.train], x[rows.val], synth_table.y[rows.val], CFG,
                    n_classes=synth_table.n_classes, seed=s)
        assert report.fold_f1[fold] == alone.best_val_f1
        assert report.fold_epochs[fold] == alone.epochs


def test_running_objective_never_decreases_and_ends_at_the_folds_mean(synth_table) -> None:
    cv = CrossValidation(synth_table, ("q4",), CFG.replace(max_epochs=5, patience=1), (1, 2), seed=0)
    seen = []
    while not cv.done:
        seen.append(cv.step())
    objectives = [r.objective for r in seen]
    assert objectives == sorted(objectives) and len(seen) <= 5
    last = seen[-1]
    assert last.done and last.objective == pytest.approx(np.mean(list(last.fold_f1.values())))
    assert last.objective == pytest.approx(np.mean([t.best_f1 for t in cv.trainings]))


def test_router_lr_is_optional_and_keeps_default_keys() -> None:
    mixture = TrainConfig.mixture()
    assert "router_lr" not in mixture.to_dict()  # so trial keys of default settings did not change
    tuned = mixture.replace(router_lr=3e-3)
    assert tuned.to_dict()["router_lr"] == 3e-3 and TrainConfig(**tuned.to_dict()) == tuned
    model = build_model(TrialSpec(dataset="synth", fold=1, experts=("q4", "q8"), train=tuned), 16, 3)
    groups = optimizer_for(model, tuned).param_groups
    assert [g["lr"] for g in groups] == [mixture.lr, 3e-3]
    assert sum(p.numel() for p in groups[1]["params"]) == sum(p.numel() for p in model.router.parameters())
    assert len(optimizer_for(model, mixture).param_groups) == 1
    with pytest.raises(Exception, match="router_lr"):
        mixture.replace(router_lr=-1.0)
