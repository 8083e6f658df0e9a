"""The results store: atomic writes, one row per trial_key, the lock, names, storage checks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from qmoe.errors import ConfigError
from qmoe.record import TrialRecord
from qmoe.spec import TrialSpec
from qmoe.layout import list_sweeps
from qmoe.sweeps.store import SCHEMA, SweepStore, merge_rows


def row(fold: int, status: str = "ok", f1: float | None = 0.8, **extra) -> dict:
    spec = TrialSpec(dataset="synth", fold=fold, experts=("q4",))
    if status == "error":
        return TrialRecord.failed(spec, "boom", **extra).to_row()
    return TrialRecord(**TrialRecord.identity(spec), f1_macro=f1, **extra).to_row()


@pytest.fixture
def store(tmp_path) -> SweepStore:
    s = SweepStore(tmp_path / "runs", "s1")
    s.create({"name": "s1", "trials": []})
    return s


def test_create_refuses_existing_name(store) -> None:
    with pytest.raises(ConfigError, match="already exists.*qmoe resume s1"):
        SweepStore(store.storage, "s1").create({})
    assert list_sweeps(store.storage) == ["s1"]


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", "x/../../y", "~", "~/x", ".hidden", "-rf",
                                  "$HOME", "x;rm -rf y", "$(touch y)", "a b", "a\\b", "a\x00b", "a\nb", "a" * 101, ""])
def test_names_cannot_escape(tmp_path, name) -> None:
    with pytest.raises(ConfigError, match="--name"):
        SweepStore(tmp_path, name)
    with pytest.raises(ConfigError, match="--name"):
        SweepStore(tmp_path / "runs", name).create({})
    assert not any(tmp_path.iterdir())


def test_upsert_dedups_and_never_downgrades_ok(store) -> None:
    store.upsert([row(1), row(2, "error")])
    store.upsert([row(1, f1=0.9), row(2, "error")])  # ok re-written, error re-written
    df = store.read_results()
    assert len(df) == 2 and df["trial_key"].is_unique
    assert df.set_index("fold").loc[1, "f1_macro"] == 0.9
    store.upsert([row(1, "error"), row(2)])  # an error never replaces ok; ok replaces an error
    df = store.read_results().set_index("fold")
    assert list(df["status"].sort_index()) == ["ok", "ok"] and df.loc[1, "f1_macro"] == 0.9
    assert store.ok_keys() == set(df["trial_key"])


def test_merge_rows_is_pure() -> None:
    old = pd.DataFrame([row(1), row(2)])
    new = pd.DataFrame([row(2, f1=0.1), row(3)])
    merged = merge_rows(old, new)
    assert sorted(merged["fold"]) == [1, 2, 3]
    assert merged.set_index("fold").loc[2, "f1_macro"] == 0.1


def test_schema_is_stable_for_error_only_tables(store) -> None:
    store.upsert([row(1, "error")])
    df = pd.read_parquet(store.results_path)
    assert list(df.columns)[: len(SCHEMA)] == list(SCHEMA)
    assert str(df["f1_macro"].dtype) == "float64" and str(df["n_test"].dtype) == "Int64"


def test_atomic_write_keeps_previous_file_on_failure(store, monkeypatch) -> None:
    store.upsert([row(1)])
    before = store.results_path.read_bytes()

    def crash(self, path, **kw):  # dies half-way through writing the temporary file
        Path(path).write_bytes(b"PAR1 half a file")
        raise KeyboardInterrupt

    monkeypatch.setattr(pd.DataFrame, "to_parquet", crash)
    with pytest.raises(KeyboardInterrupt):
        store.upsert([row(2)])
    monkeypatch.undo()
    assert store.results_path.read_bytes() == before
    assert [p.name for p in store.path.iterdir() if p.name.endswith(".tmp")] == []
    assert len(store.read_results()) == 1


def test_files_are_readable_by_others(store) -> None:
    store.upsert([row(1)])
    assert store.results_path.stat().st_mode & 0o044  # not 0600 like a bare mkstemp file


def test_lock_refuses_a_second_command(store) -> None:
    with store.lock():
        assert store.is_locked()
        with pytest.raises(ConfigError, match=f"in use by pid {os.getpid()}"):
            with SweepStore(store.storage, "s1").lock():
                pass
    assert not store.is_locked()
    with store.lock():  # released: can be taken again
        pass


def test_lock_dies_with_a_killed_process(store) -> None:
    code = ("import sys, time; from qmoe.sweeps.store import SweepStore; "
            f"s = SweepStore({str(store.storage)!r}, 's1'); cm = s.lock(); cm.__enter__(); "
            "print('locked', flush=True); time.sleep(60)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        assert store.is_locked()
        with pytest.raises(ConfigError, match="in use by pid"):
            with store.lock():
                pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    time.sleep(0.1)
    with store.lock():  # the kernel released the dead process's lock: no stale lock
        pass


def test_unwritable_storage_is_refused(tmp_path) -> None:
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(ConfigError, match="not a folder"):
        SweepStore(a_file / "runs", "s").check_new()
    with pytest.raises(ConfigError, match="--storage"):
        SweepStore("/proc/qmoe-runs", "s").check_new()


def test_manifest_errors(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no sweep 'nope'.*none"):
        SweepStore(tmp_path, "nope").read_manifest()
    s = SweepStore(tmp_path, "s")
    s.create({})
    s.manifest_path.write_text("{not json")
    with pytest.raises(ConfigError, match="damaged"):
        s.read_manifest()
    with pytest.raises(ConfigError, match="sweeps there: s"):
        SweepStore(tmp_path, "other").read_manifest()


def test_samples_file(store) -> None:
    path = store.write_samples("abc", pd.DataFrame({"clip_id": ["c1"], "expert": ["q4"]}))
    assert path == store.routing_dir / "abc.parquet"
    assert pd.read_parquet(path)["expert"].tolist() == ["q4"]


def test_create_is_all_or_nothing(tmp_path, monkeypatch) -> None:
    import qmoe.sweeps.folder as folder_module

    def killed(path, data):  # dies while writing the manifest
        raise KeyboardInterrupt

    monkeypatch.setattr(folder_module, "atomic_write_bytes", killed)
    with pytest.raises(KeyboardInterrupt):
        SweepStore(tmp_path / "runs", "s1").create({"name": "s1"})
    monkeypatch.undo()
    assert list((tmp_path / "runs").iterdir()) == []  # no half-made sweep folder, no staging folder
    SweepStore(tmp_path / "runs", "s1").create({"name": "s1"})  # the name is still free
    assert list_sweeps(tmp_path / "runs") == ["s1"]


def test_create_loses_a_race_with_one_line(store, monkeypatch) -> None:
    late = SweepStore(store.storage, "s1")
    monkeypatch.setattr(late, "check_new", lambda: None)  # as if checked before the other created it
    with pytest.raises(ConfigError, match="just created by another command"):
        late.create({"name": "s1", "trials": [1]})
    assert store.read_manifest()["trials"] == []  # the winner's sweep is untouched
    assert [p.name for p in store.storage.iterdir()] == ["s1"]


def test_staging_folders_are_not_sweeps(tmp_path) -> None:
    (tmp_path / ".s1.abc.new").mkdir()
    (tmp_path / ".s1.abc.new" / "sweep.json").write_text("{}")
    assert list_sweeps(tmp_path) == []


def test_runs_log_survives_a_torn_last_line(store) -> None:
    store.log_run({"ran": 1})
    with open(store.path / "runs.jsonl", "a") as fh:
        fh.write('{"ran": 2, "wal')  # the command was killed mid-line
    assert store.read_runs() == [{"ran": 1}]


def test_damaged_results_table_is_one_clear_error(store) -> None:
    store.results_path.write_bytes(b"PAR1 torn")
    with pytest.raises(ConfigError, match="damaged results table.*qmoe resume s1"):
        store.read_results()


def test_conform_equals_the_schema_applied_row_by_row(store) -> None:
    # conform() takes a table column by column; as_frame() over its rows is the definition
    from qmoe.sweeps.store import as_frame, conform

    rows = [row(1), row(2, status="error"), row(3, f1=None), dict(row(4), extra_note="x", extra_count=3)]
    store.upsert(rows)
    on_disk = pd.read_parquet(store.results_path)
    expected = as_frame(on_disk.to_dict("records"))
    pd.testing.assert_frame_equal(conform(on_disk), expected)
    pd.testing.assert_frame_equal(store.read_results(), expected)
    assert list(expected.columns[-2:]) == ["extra_note", "extra_count"] and expected["extra_note"].tolist()[-1] == "x"
    shuffled = on_disk.iloc[::-1].set_index(on_disk.index + 10)  # any index, any order: a fresh RangeIndex
    pd.testing.assert_frame_equal(conform(shuffled), as_frame(shuffled.to_dict("records")))
    empty = conform(pd.DataFrame())
    pd.testing.assert_frame_equal(empty, as_frame([]))
    assert list(empty.columns) == list(SCHEMA) and all(str(empty[c].dtype) == d for c, d in SCHEMA.items())
