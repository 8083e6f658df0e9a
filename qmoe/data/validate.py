"""Validation of an embedding table (DESIGN §2.1): one DataError per defect, naming the
file, the column, the first bad row (index and clip_id) and the fix."""

from __future__ import annotations

import re
from typing import Any

import numpy as np
import pandas as pd

from qmoe.data.table import EmbeddingTable
from qmoe.errors import DataError

REQUIRED_COLUMNS: tuple[str, ...] = ("clip_id", "label", "label_name", "fold", "group")
_EMB = re.compile(r"^e(\d+)$")


def _where(source: str, column: str, df: pd.DataFrame | None = None, row: int | None = None) -> str:
    """``'<file>, column 'x', row 17 (clip_id 'a')'``: the location part of a message."""
    loc = f"{source}: column {column!r}"
    if df is not None and row is not None:
        cid = df["clip_id"].iloc[row] if "clip_id" in df.columns else None
        loc += f", row {row}" + (f" (clip_id {str(cid)!r})" if cid is not None else "")
    return loc


def _first(mask: np.ndarray) -> int:
    return int(np.flatnonzero(mask)[0])


def _show(value: Any) -> str:
    """repr of a cell, without numpy's ``np.float64(...)`` wrapper."""
    return repr(value.item() if isinstance(value, np.generic) else value)


def _as_int(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """The column as int64, or a DataError at its first non-integer row."""
    num = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(num) | (num != np.round(num))
    if bad.any():
        r = _first(bad)
        raise DataError(
            f"{_where(source, col, df, r)}: {_show(df[col].iloc[r])} is not an integer; "
            f"{col} must be a whole number on every row"
        )
    return num.astype(np.int64)


def _as_str(df: pd.DataFrame, col: str, source: str) -> np.ndarray:
    """The column as str objects, or a DataError at its first missing value."""
    missing = df[col].isna().to_numpy()
    if missing.any():
        r = _first(missing)
        raise DataError(f"{_where(source, col, df, r)}: value is missing; fill in {col} on every row")
    return df[col].astype(str).to_numpy(dtype=object)


def _embedding_columns(df: pd.DataFrame, source: str) -> list[str]:
    idx = sorted(int(m.group(1)) for c in df.columns if (m := _EMB.match(str(c))))
    if not idx:
        raise DataError(
            f"{source}: no embedding columns; expected float columns e0..e{{D-1}} "
            "next to clip_id, label, label_name, fold, group"
        )
    missing = sorted(set(range(idx[-1] + 1)) - set(idx))
    if missing:
        raise DataError(
            f"{_where(source, f'e{missing[0]}')}: embedding columns are not contiguous "
            f"(found {len(idx)} columns up to e{idx[-1]}, e{missing[0]} is missing) — "
            "tables of different dimensions were mixed; rebuild the table with one backbone"
        )
    return [f"e{i}" for i in range(len(idx))]


def _embedding_matrix(df: pd.DataFrame, cols: list[str], source: str) -> np.ndarray:
    for c in cols:
        if not pd.api.types.is_numeric_dtype(df[c]) or pd.api.types.is_bool_dtype(df[c]):
            bad = pd.to_numeric(df[c], errors="coerce").isna().to_numpy()
            r = _first(bad) if bad.any() else 0
            raise DataError(
                f"{_where(source, c, df, r)}: embedding value {_show(df[c].iloc[r])} is not a number; "
                "embedding columns must be float"
            )
    with np.errstate(over="ignore"):
        X = df[cols].to_numpy(dtype=np.float32, na_value=np.nan)  # (N, D)
    bad = ~np.isfinite(X)
    if bad.any():
        r = _first(bad.any(axis=1))
        c = _first(bad[r])
        what = "NaN" if np.isnan(X[r, c]) else "inf (or too large for float32)"
        hint = "recompute the embedding of that clip or drop the row"
        if c > 0 and bad[r, c:].all():
            hint = (
                f"the row's embedding stops at e{c - 1} while the table has {len(cols)} columns — "
                "tables of different dimensions were mixed; rebuild the table with one backbone"
            )
        raise DataError(f"{_where(source, cols[c], df, r)}: embedding is {what}; {hint}")
    return X


def validate_frame(df: pd.DataFrame, source: str, meta: dict[str, Any] | None = None) -> EmbeddingTable:
    """Check a frame against §2.1 and return it as an :class:`EmbeddingTable`.

    Args:
        df: the table as read.
        source: the file or name it came from, quoted in every message.
        meta: table-level metadata to attach (default: ``df.attrs["qmoe"]`` or ``{}``).

    Raises:
        DataError: on the first defect found, naming the file, the column, the first bad
            row (index and clip_id) and how to fix it.
    """
    meta = dict(df.attrs.get("qmoe", {}) if meta is None else meta)
    df = df.reset_index(drop=True)
    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        raise DataError(
            f"{_where(source, missing[0])}: required column is missing; an embedding table needs "
            f"{', '.join(REQUIRED_COLUMNS)} and e0..e{{D-1}} (missing: {', '.join(missing)})"
        )
    if len(df) == 0:
        raise DataError(f"{source}: the table has no rows; rebuild it from a non-empty dataset")
    X = _embedding_matrix(df, _embedding_columns(df, source), source)
    clip_ids = _as_str(df, "clip_id", source)
    y = _as_int(df, "label", source)
    names = _as_str(df, "label_name", source)
    folds = _as_int(df, "fold", source)
    groups = _as_str(df, "group", source)

    if (y < 0).any():
        r = _first(y < 0)
        raise DataError(f"{_where(source, 'label', df, r)}: label {y[r]} is negative; labels must be 0..C-1")
    n_classes = int(y.max()) + 1
    absent = sorted(set(range(n_classes)) - set(np.unique(y).tolist()))
    if absent:
        r = _first(y > absent[0])
        raise DataError(
            f"{_where(source, 'label', df, r)}: label {y[r]} but no row has label {absent[0]}; "
            f"labels must be exactly 0..C-1 with no gaps — renumber the classes"
        )

    dup = pd.Series(clip_ids).duplicated().to_numpy()
    if dup.any():
        r = _first(dup)
        first = _first(clip_ids == clip_ids[r])
        raise DataError(
            f"{_where(source, 'clip_id', df, r)}: duplicate clip_id, already used on row {first}; "
            "clip ids must be unique — drop the duplicate row or rename it"
        )

    label_names = _label_names(df, y, names, n_classes, source)
    if n_classes < 2:
        raise DataError(
            f"{_where(source, 'label')}: only one class ({label_names[0]!r}); a classifier needs at least two"
        )
    _check_groups(df, folds, groups, source)
    _check_training_classes(df, y, folds, label_names, source)
    return EmbeddingTable(
        X=X, y=y, folds=folds, groups=groups, clip_ids=clip_ids,
        label_names=label_names, meta=meta, source=source,
    )


def _label_names(
    df: pd.DataFrame, y: np.ndarray, names: np.ndarray, n_classes: int, source: str
) -> tuple[str, ...]:
    """One name per label and one label per name, or a DataError at the first clash."""
    first_row = {int(lab): _first(y == lab) for lab in range(n_classes)}
    expected = np.array([names[first_row[c]] for c in range(n_classes)], dtype=object)[y]
    clash = expected != names
    if clash.any():
        r = _first(clash)
        raise DataError(
            f"{_where(source, 'label_name', df, r)}: label {y[r]} is named {names[r]!r} here but "
            f"{expected[r]!r} on row {first_row[int(y[r])]}; each label needs one label_name"
        )
    label_names = tuple(str(names[first_row[c]]) for c in range(n_classes))
    seen: dict[str, int] = {}
    for c, name in enumerate(label_names):
        if name in seen:
            r = first_row[c]
            raise DataError(
                f"{_where(source, 'label_name', df, r)}: name {name!r} is used by labels "
                f"{seen[name]} and {c}; each label_name needs one label"
            )
        seen[name] = c
    return label_names


def _check_groups(df: pd.DataFrame, folds: np.ndarray, groups: np.ndarray, source: str) -> None:
    """A group (recording/source) must sit in exactly one fold."""
    pairs = pd.DataFrame({"g": groups, "f": folds})
    first_fold = pairs.groupby("g", sort=False)["f"].transform("first").to_numpy()
    straddle = first_fold != folds
    if straddle.any():
        r = _first(straddle)
        raise DataError(
            f"{_where(source, 'group', df, r)}: group {groups[r]!r} is in fold {folds[r]} here but "
            f"also in fold {first_fold[r]}; a group must stay in one fold, or its clips leak "
            "from training into test — reassign the group's clips to one fold"
        )


def _check_training_classes(
    df: pd.DataFrame, y: np.ndarray, folds: np.ndarray, label_names: tuple[str, ...], source: str
) -> None:
    """Every class must have training rows whichever fold is held out."""
    fold_ids = sorted(np.unique(folds).tolist())
    if len(fold_ids) < 2:
        raise DataError(
            f"{_where(source, 'fold')}: only one fold ({fold_ids[0]}); cross-validation needs at "
            "least two — assign folds (e.g. qmoe.data.splits.stratified_group_folds)"
        )
    counts = pd.crosstab(y, folds)  # (C, n_folds)
    total = counts.sum(axis=1)
    for f in fold_ids:
        no_train = (total - counts[f]) == 0
        if no_train.any():
            c = int(no_train.to_numpy().nonzero()[0][0])
            r = _first(y == c)
            raise DataError(
                f"{_where(source, 'label', df, r)}: class {c} ({label_names[c]!r}) only occurs in "
                f"fold {f}, so with fold {f} held out it has no training rows — add clips of it "
                "to other folds or drop the class"
            )
