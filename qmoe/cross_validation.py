"""The objective of hyper-parameter tuning (DESIGN §8): mean *validation* macro-F1 over folds.

For each chosen fold k (the test fold of the trials that later report on it), the model trains
on the other folds minus a validation split carved from them (stratified, group-aware, DESIGN
§5) and is scored on that validation split. Fold k's rows are never read: not trained on, not
scored, not even standardised.

The folds train in lockstep, one epoch each per :meth:`CrossValidation.step`, so that after
every epoch there is one number a scheduler (ASHA) can compare across trials at the same
epoch: the **running objective** = the mean over folds of the best validation macro-F1 so far.
Each fold early-stops as a real trial does (a fold that stopped keeps its best), so the
running objective never decreases and ends at the mean of the folds' checkpoint scores.

Every fold has a fixed seed derived from the tuning seed and the fold (model initialisation,
batch order, dropout, the validation split), the same for every setting tried: settings are
compared on the same splits and the same random streams.

Caveat (said in ``best.toml`` too): with several folds, fold k's rows are training or
validation rows of the *other* folds' objectives, so settings tuned on folds F and then
reported on the same folds F have seen each fold's rows indirectly. For a strictly nested
estimate, tune once per test fold (``--folds k``) and run that fold with its own settings.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from qmoe.data.splits import train_val_test_indices
from qmoe.data.table import EmbeddingTable
from qmoe.errors import ConfigError
from qmoe.spec import TrainConfig, TrialSpec
from qmoe.train import Training
from qmoe.trial import build_model, standardise


@dataclass(frozen=True, kw_only=True, eq=False)
class FoldRows:
    """The rows one fold's objective uses (sorted indices into the table)."""

    fold: int  # the test fold: none of its rows is in train or val
    train: np.ndarray  # rows the model is fitted on
    val: np.ndarray  # rows it is scored on


@dataclass(frozen=True, kw_only=True)
class EpochReport:
    """The state of a cross-validation after an epoch."""

    epoch: int  # epochs run by the longest-running fold
    objective: float  # mean over folds of the best validation macro-F1 so far
    fold_f1: dict[int, float]  # best validation macro-F1 so far, per fold
    fold_epochs: dict[int, int]  # epochs run, per fold
    done: bool  # every fold stopped early or reached max_epochs


def fold_seed(seed: int, fold: int) -> int:
    """The seed of fold ``fold`` in a tuning run seeded ``seed`` (31 bits)."""
    digest = hashlib.sha256(f"tune:{seed}:{fold}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def fold_rows(table: EmbeddingTable, fold: int, seed: int) -> FoldRows:
    """Training and validation rows of fold ``fold``: the clean protocol's split (DESIGN §5)."""
    split = train_val_test_indices(table, fold, protocol="clean", seed=seed)
    return FoldRows(fold=fold, train=split.train, val=split.val)


class CrossValidation:
    """One setting trained on several folds in lockstep: the objective of one tuning trial.

    Args:
        table: the embedding table.
        experts: quantizer names (one = a single model, several = a mixture).
        cfg: the training settings under test.
        folds: the test folds (at least one).
        seed: the tuning seed; each fold's seed derives from it (:func:`fold_seed`).

    Raises:
        ConfigError: no folds; DataError: a fold the table lacks; UnknownNameError: a quantizer.
    """

    def __init__(self, table: EmbeddingTable, experts: Sequence[str], cfg: TrainConfig,
                 folds: Sequence[int], *, seed: int) -> None:
        if not folds:
            raise ConfigError("tuning needs at least one fold")
        self.rows: list[FoldRows] = []
        self.trainings: list[Training] = []
        for fold in folds:
            s = fold_seed(seed, fold)
            rows = fold_rows(table, fold, s)
            x = standardise(table, rows.train, np.concatenate([rows.train, rows.val]))  # (n_train + n_val, D)
            x_train, x_val = x[:len(rows.train)], x[len(rows.train):]
            torch.manual_seed(s)  # model initialisation; the training keeps this stream
            spec = TrialSpec(dataset=table.source, fold=fold, experts=tuple(experts), train=cfg)
            model = build_model(spec, table.dim, table.n_classes)
            self.rows.append(rows)
            self.trainings.append(Training(model, x_train, table.y[rows.train], x_val, table.y[rows.val], cfg,
                                           n_classes=table.n_classes, seed=s))

    @property
    def done(self) -> bool:
        return all(t.done for t in self.trainings)

    def report(self) -> EpochReport:
        """The running objective now (folds that have not run an epoch count as 0)."""
        best = {r.fold: max(t.best_f1, 0.0) for r, t in zip(self.rows, self.trainings)}
        return EpochReport(epoch=max(t.epoch for t in self.trainings), objective=float(np.mean(list(best.values()))),
                           fold_f1=best, fold_epochs={r.fold: t.epoch for r, t in zip(self.rows, self.trainings)},
                           done=self.done)

    def step(self) -> EpochReport:
        """One more epoch for every fold that is still training.

        Raises:
            TrainingError: a fold's loss diverged.
        """
        for training in self.trainings:
            if not training.done:
                training.step()
        return self.report()

    def run(self) -> EpochReport:
        """Train every fold to its end; the final report."""
        report = self.report()
        while not self.done:
            report = self.step()
        return report
