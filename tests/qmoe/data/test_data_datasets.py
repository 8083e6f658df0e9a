"""Dataset registry, the cached synth table and resolve_table."""

from __future__ import annotations

from pathlib import Path

import pytest

import qmoe
from qmoe.data import (
    DATASETS,
    SynthConfig,
    build_synth_table,
    default_cache_dir,
    load_table,
    prepared_table_path,
    resolve_table,
    save_table,
    synth_table_path,
)
from qmoe.data import datasets as datasets_mod
from qmoe.errors import DataError, UnknownNameError

TINY = SynthConfig(n_classes=12, sources_per_class_per_fold=1, variants_per_source=2)


def test_registry_knows_synth() -> None:
    assert "synth" in DATASETS and DATASETS.get("synth").builtin
    assert {"esc50", "urbansound8k", "quinn"} <= set(DATASETS.names())


def test_default_cache_dir_follows_env(_private_cache: Path) -> None:
    assert default_cache_dir() == _private_cache


def test_synth_table_is_built_once_then_reused(_private_cache: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = synth_table_path(cfg=TINY)
    assert path.is_file() and path.is_relative_to(_private_cache)
    assert not list(path.parent.glob("*.tmp"))

    def must_not_build(*args: object, **kwargs: object) -> None:
        raise AssertionError("the cached table was rebuilt")

    monkeypatch.setattr(datasets_mod, "build_synth_table", must_not_build)
    assert synth_table_path(cfg=TINY) == path
    other = SynthConfig(n_classes=12, sources_per_class_per_fold=1, variants_per_source=2, seed=1)
    with pytest.raises(AssertionError, match="rebuilt"):
        synth_table_path(cfg=other)  # other settings -> another file, which needs a build


def test_synth_meta_records_settings(_private_cache: Path) -> None:
    t = load_table(synth_table_path(cfg=TINY))
    assert t.meta["dataset"] == "synth" and t.meta["backbone"] == "melstats"
    assert t.meta["sample_rate"] == 16000 and t.meta["mel"]["n_mels"] == 128
    assert SynthConfig.from_dict(t.meta["synth"]) == TINY
    assert t.meta["qmoe_version"] == qmoe.__version__


def test_build_synth_table_forces_a_rebuild(tmp_path: Path) -> None:
    path = tmp_path / "s.parquet"
    a = build_synth_table(path, TINY)
    path.write_bytes(b"corrupt")
    b = build_synth_table(path, TINY)
    assert a.content_hash() == b.content_hash()  # same seed, same table


def test_resolve_default_is_synth(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(datasets_mod, "synth_table_path",
                        lambda cache_dir=None, **kw: synth_table_path(cache_dir, TINY, **kw))
    table = resolve_table(None, None)
    assert table.meta["dataset"] == "synth" and table.n_classes == 12
    assert resolve_table("synth", None).content_hash() == table.content_hash()


def test_resolve_data_wins(frame, tmp_path: Path) -> None:
    path = save_table(frame, tmp_path / "mine.parquet")
    table = resolve_table("no-such-dataset", path)
    assert table.source == str(path) and len(table) == len(frame)


def test_resolve_missing_data_file(tmp_path: Path) -> None:
    path = tmp_path / "missing.parquet"
    with pytest.raises(DataError, match=r"missing\.parquet: no such embedding table; pass .* --data"):
        resolve_table(None, path)


def test_resolve_unknown_dataset_lists_names() -> None:
    with pytest.raises(UnknownNameError, match="unknown dataset 'esc5'; known: esc50, quinn, synth, urbansound8k"):
        resolve_table("esc5", None)


def test_resolve_unprepared_real_dataset() -> None:
    with pytest.raises(DataError, match=r"'esc50' is not prepared yet .* `qmoe data prepare esc50 --root DIR`"):
        resolve_table("esc50", None)


def test_resolve_prepared_real_dataset(frame) -> None:
    save_table(frame, prepared_table_path("quinn"), {"dataset": "quinn"})
    assert resolve_table("quinn", None).meta == {"dataset": "quinn"}
