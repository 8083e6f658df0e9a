"""The embedding table: validation (one case per defect), round trip, atomic save."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from qmoe.data import EmbeddingTable, load_table, save_table, validate_frame
from qmoe.data import table as table_mod
from qmoe.errors import DataError


def _write(df: pd.DataFrame, tmp_path: Path, name: str = "bad.parquet") -> Path:
    path = tmp_path / name
    df.to_parquet(path, index=False)
    return path


def _load_error(df: pd.DataFrame, tmp_path: Path) -> str:
    path = _write(df, tmp_path)
    with pytest.raises(DataError) as info:
        load_table(path)
    msg = str(info.value)
    assert str(path) in msg, msg
    return msg


def _assert_row(msg: str, df: pd.DataFrame, row: int, column: str) -> None:
    assert f"column '{column}'" in msg, msg
    assert f"row {row} " in msg, msg
    assert f"clip_id '{df['clip_id'].iloc[row]}'" in msg, msg


# --- valid tables ---------------------------------------------------------------------------

def test_round_trip_keeps_arrays_and_meta(frame: pd.DataFrame, tmp_path: Path) -> None:
    path = save_table(frame, tmp_path / "a" / "b" / "t.parquet", {"dataset": "toy", "n": 3})
    table = load_table(path)
    assert table.X.dtype == np.float32 and table.X.shape == (len(frame), 4)
    np.testing.assert_array_equal(table.X, frame[[f"e{i}" for i in range(4)]].to_numpy())
    np.testing.assert_array_equal(table.y, frame["label"].to_numpy())
    assert table.y.dtype == np.int64 and table.folds.dtype == np.int64
    assert list(table.clip_ids) == list(frame["clip_id"])
    assert table.label_names == ("class0", "class1", "class2")
    assert table.meta == {"dataset": "toy", "n": 3}
    assert (table.n_classes, table.dim, table.fold_ids) == (3, 4, [1, 2, 3])
    assert table.source == str(path)
    raw = pq.read_schema(path).metadata[b"qmoe"]
    assert b'"dataset": "toy"' in raw


def test_save_accepts_an_embedding_table_and_keeps_its_hash(frame: pd.DataFrame, tmp_path: Path) -> None:
    table = validate_frame(frame, "mem", meta={"x": 1})
    again = load_table(save_table(table, tmp_path / "t.parquet"))
    assert again.meta == {"x": 1}
    assert again.content_hash() == table.content_hash()


def test_content_hash_is_stable_and_content_sensitive(frame: pd.DataFrame) -> None:
    a = validate_frame(frame, "a")
    b = validate_frame(frame.copy(), "b", meta={"other": True})
    assert a.content_hash() == b.content_hash()
    assert re.fullmatch(r"[0-9a-f]{16}", a.content_hash())
    changed = frame.copy()
    changed.loc[0, "e0"] += 1.0
    assert validate_frame(changed, "c").content_hash() != a.content_hash()


def test_check_fold_names_the_folds_and_the_flag(frame: pd.DataFrame) -> None:
    table = validate_frame(frame, "toy.parquet")
    table.check_fold(2)
    with pytest.raises(DataError, match=r"fold 7 does not exist in toy.parquet; its folds are 1..3 .* --fold/--folds"):
        table.check_fold(7)


def test_save_refuses_an_invalid_table(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[3, "e1"] = np.nan
    with pytest.raises(DataError, match="NaN"):
        save_table(frame, tmp_path / "t.parquet")
    assert not (tmp_path / "t.parquet").exists()


def test_save_is_atomic(frame: pd.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = save_table(frame, tmp_path / "t.parquet", {"version": 1})

    def broken_write(table: object, where: str) -> None:
        Path(where).write_bytes(b"half a parquet file")
        raise OSError("disk full")

    monkeypatch.setattr(table_mod.pq, "write_table", broken_write)
    with pytest.raises(OSError, match="disk full"):
        save_table(frame, path, {"version": 2})
    assert load_table(path).meta == {"version": 1}  # the old table is intact
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]  # no temp file left


# --- one case per defect ---------------------------------------------------------------------

def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.parquet"
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: no such embedding table.*--data"):
        load_table(path)


def test_not_parquet(tmp_path: Path) -> None:
    path = tmp_path / "table.parquet"
    path.write_text("clip_id,label\na,1\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: not a readable Parquet"):
        load_table(path)


@pytest.mark.parametrize("column", ["clip_id", "label", "label_name", "fold", "group"])
def test_missing_required_column(frame: pd.DataFrame, tmp_path: Path, column: str) -> None:
    msg = _load_error(frame.drop(columns=[column]), tmp_path)
    assert f"column '{column}'" in msg and "required column is missing" in msg


def test_no_embedding_columns(frame: pd.DataFrame, tmp_path: Path) -> None:
    msg = _load_error(frame.drop(columns=[f"e{i}" for i in range(4)]), tmp_path)
    assert "no embedding columns" in msg and "e0..e{D-1}" in msg


def test_embedding_columns_not_contiguous(frame: pd.DataFrame, tmp_path: Path) -> None:
    msg = _load_error(frame.drop(columns=["e2"]), tmp_path)
    assert "column 'e2'" in msg and "not contiguous" in msg and "one backbone" in msg


def test_mixed_dimensions(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[5, ["e2", "e3"]] = np.nan  # a 2-d row concatenated into a 4-d table
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 5, "e2")
    assert "stops at e1" in msg and "different dimensions" in msg


def test_nan_in_embedding(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[7, "e1"] = np.nan
    frame.loc[9, "e0"] = np.nan
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 7, "e1")
    assert "NaN" in msg and "recompute" in msg


def test_inf_in_embedding(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[4, "e3"] = np.inf
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 4, "e3")
    assert "inf" in msg


def test_non_numeric_embedding(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame["e1"] = frame["e1"].astype(object)
    frame.loc[6, "e1"] = "oops"
    frame["e1"] = frame["e1"].astype(str)
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 6, "e1")
    assert "not a number" in msg


def test_label_not_integer(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame["label"] = frame["label"].astype(float)
    frame.loc[8, "label"] = 1.5
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 8, "label")
    assert "1.5 is not an integer" in msg


def test_label_negative(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[3, "label"] = -1
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 3, "label")
    assert "0..C-1" in msg


def test_label_gap(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[frame["label"] == 2, "label"] = 3  # ids 0, 1, 3: class 2 missing
    first = int(np.flatnonzero(frame["label"] == 3)[0])
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, first, "label")
    assert "no row has label 2" in msg and "renumber" in msg


def test_label_name_inconsistent_with_label(frame: pd.DataFrame, tmp_path: Path) -> None:
    row = int(np.flatnonzero(frame["label"] == 1)[3])
    frame.loc[row, "label_name"] = "dog"
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, row, "label_name")
    assert "'dog'" in msg and "'class1'" in msg


def test_label_name_shared_by_two_labels(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[frame["label"] == 2, "label_name"] = "class0"
    first = int(np.flatnonzero(frame["label"] == 2)[0])
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, first, "label_name")
    assert "used by labels 0 and 2" in msg


def test_duplicate_clip_id(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[10, "clip_id"] = frame.loc[2, "clip_id"]
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 10, "clip_id")
    assert "duplicate clip_id, already used on row 2" in msg


def test_fewer_than_two_classes(tmp_path: Path, make_frame: Callable[..., pd.DataFrame]) -> None:
    df = make_frame(n_classes=1)
    msg = _load_error(df, tmp_path)
    assert "column 'label'" in msg and "at least two" in msg


def test_group_straddles_folds(frame: pd.DataFrame, tmp_path: Path) -> None:
    row = int(np.flatnonzero(frame["fold"] == 2)[0])
    frame.loc[row, "group"] = frame.loc[0, "group"]  # a fold-1 group now also in fold 2
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, row, "group")
    assert f"group '{frame.loc[0, 'group']}' is in fold 2 here but also in fold 1" in msg


def test_class_absent_from_training_folds(tmp_path: Path, make_frame: Callable[..., pd.DataFrame]) -> None:
    df = make_frame()
    df = df[(df["label"] != 1) | (df["fold"] == 3)].reset_index(drop=True)  # class 1 only in fold 3
    first = int(np.flatnonzero(df["label"] == 1)[0])
    msg = _load_error(df, tmp_path)
    _assert_row(msg, df, first, "label")
    assert "class 1 ('class1') only occurs in fold 3" in msg and "no training rows" in msg


def test_single_fold(tmp_path: Path, make_frame: Callable[..., pd.DataFrame]) -> None:
    msg = _load_error(make_frame(n_folds=1), tmp_path)
    assert "column 'fold'" in msg and "only one fold" in msg


def test_fold_not_integer(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame["fold"] = frame["fold"].astype(str)
    frame.loc[2, "fold"] = "two"
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 2, "fold")
    assert "'two' is not an integer" in msg


def test_missing_group_value(frame: pd.DataFrame, tmp_path: Path) -> None:
    frame.loc[11, "group"] = None
    msg = _load_error(frame, tmp_path)
    _assert_row(msg, frame, 11, "group")
    assert "missing" in msg


def test_validate_frame_returns_table_in_file_order(frame: pd.DataFrame) -> None:
    shuffled = frame.sample(frac=1.0, random_state=0)
    table = validate_frame(shuffled, "mem")
    assert isinstance(table, EmbeddingTable)
    assert list(table.clip_ids) == list(shuffled["clip_id"])
