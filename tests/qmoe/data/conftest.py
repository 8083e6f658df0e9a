"""Shared fixtures for the data tests: a private cache and small valid tables."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from qmoe.data import EmbeddingTable, SynthConfig, load_table, synth_table_path, table_from_arrays


@pytest.fixture(autouse=True)
def _private_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Never write to the home folder: every test gets its own QMOE_CACHE."""
    cache = tmp_path / "qmoe-cache"
    monkeypatch.setenv("QMOE_CACHE", str(cache))
    return cache


def _make_frame(n_classes: int = 3, n_folds: int = 3, groups_per: int = 2, clips_per: int = 2,
               dim: int = 4, seed: int = 0) -> pd.DataFrame:
    """A small valid table: every class in every fold, groups nested in folds."""
    rng = np.random.default_rng(seed)
    y, folds, groups, ids = [], [], [], []
    for c in range(n_classes):
        for f in range(1, n_folds + 1):
            for g in range(groups_per):
                for k in range(clips_per):
                    y.append(c)
                    folds.append(f)
                    groups.append(f"c{c}-f{f}-g{g}")
                    ids.append(f"clip-c{c}-f{f}-g{g}-k{k}")
    X = rng.standard_normal((len(y), dim)).astype(np.float32)
    names = [f"class{c}" for c in range(n_classes)]
    return table_from_arrays(X, np.array(y), names, np.array(folds), groups, ids)


@pytest.fixture
def make_frame() -> Callable[..., pd.DataFrame]:
    """The builder of small valid tables, for tests that need a variant."""
    return _make_frame


@pytest.fixture
def frame() -> pd.DataFrame:
    return _make_frame()


SMALL_SYNTH = SynthConfig(n_classes=12, sources_per_class_per_fold=2, variants_per_source=2)


@pytest.fixture(scope="session")
def synth_small(tmp_path_factory: pytest.TempPathFactory) -> EmbeddingTable:
    """A reduced synth table (12 classes x 5 folds x 2 sources x 2 variants), built once."""
    cache = tmp_path_factory.mktemp("synth-cache")
    return load_table(synth_table_path(cache, SMALL_SYNTH))
