"""The benchmark-sized table: valid, ESC-50-shaped, balanced, fold-safe, seeded, learnable."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score

from qmoe.data.sized import SizedConfig, sized_frame, sized_table, sized_table_path
from qmoe.data.table import load_table

SMALL = SizedConfig(n_clips=300, dim=96, n_classes=6)


@pytest.fixture(scope="module")
def esc50_sized(tmp_path_factory: pytest.TempPathFactory):
    return sized_table(tmp_path_factory.mktemp("sized"))


def test_default_table_has_esc50_shape_and_is_valid(esc50_sized) -> None:
    t = esc50_sized
    assert t.X.shape == (2000, 1536) and t.X.dtype == np.float32
    assert t.n_classes == 50 and t.dim == 1536
    assert np.bincount(t.y).tolist() == [40] * 50  # balanced
    assert sorted(set(t.folds.tolist())) == [1, 2, 3, 4, 5]
    assert t.meta["dataset"] == "esc50-sized" and t.meta["synthetic"] is True
    assert np.isfinite(t.X).all() and (t.X >= 0).all()  # ReLU-pooled, like CNN embeddings


def test_every_fold_holds_every_class_evenly(esc50_sized) -> None:
    t = esc50_sized
    for f in range(1, 6):
        counts = np.bincount(t.y[t.folds == f], minlength=50)
        assert counts.tolist() == [8] * 50  # 40 clips per class / 5 folds


@pytest.mark.parametrize("cfg", [SizedConfig(n_clips=2000, dim=8), SMALL,
                                 SizedConfig(n_clips=105, dim=8, n_classes=5, clips_per_source=2),
                                 SizedConfig(n_clips=150, dim=8, n_classes=5, clips_per_source=3)])
def test_groups_never_span_folds_or_classes(cfg: SizedConfig) -> None:
    df = sized_frame(cfg)
    assert (df.groupby("group")["fold"].nunique() == 1).all()
    assert (df.groupby("group")["label"].nunique() == 1).all()
    assert (df.groupby("group").size() <= cfg.clips_per_source).all()
    assert df["clip_id"].is_unique


def test_path_is_cached_and_loads_valid(tmp_path: Path) -> None:
    path = sized_table_path(tmp_path, SMALL)
    mtime = path.stat().st_mtime_ns
    assert sized_table_path(tmp_path, SMALL) == path and path.stat().st_mtime_ns == mtime  # reused
    table = load_table(path)  # validates
    assert table.X.shape == (300, 96) and table.n_classes == 6
    assert sized_table_path(tmp_path, SizedConfig(n_clips=300, dim=96, n_classes=6, seed=1)) != path


def test_deterministic_per_seed() -> None:
    a, b = sized_frame(SMALL), sized_frame(SMALL)
    assert a.equals(b)
    c = sized_frame(SizedConfig(n_clips=300, dim=96, n_classes=6, seed=1))
    assert not np.array_equal(a.filter(like="e").to_numpy(), c.filter(like="e").to_numpy())
    assert a[["label", "fold", "group"]].equals(c[["label", "fold", "group"]])  # same layout


def test_a_float_model_learns_it_above_chance_but_not_perfectly(esc50_sized) -> None:
    t = esc50_sized
    train, test = t.folds != 1, t.folds == 1
    mean, std = t.X[train].mean(0), t.X[train].std(0) + 1e-6
    clf = LogisticRegression(max_iter=300, C=0.05)
    clf.fit((t.X[train] - mean) / std, t.y[train])
    f1 = f1_score(t.y[test], clf.predict((t.X[test] - mean) / std), average="macro")
    assert 5 * (1 / 50) < f1 < 0.99  # far above chance (0.02), yet not trivially separable
