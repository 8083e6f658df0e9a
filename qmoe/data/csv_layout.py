"""Checks shared by the CSV-described dataset layouts (ESC-50, UrbanSound8K): the root's
layout, the CSV's columns and values, class tables and the files it names. Each problem is
one :class:`~qmoe.errors.DataError` naming the file, the line or column, and the fix."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from qmoe.errors import ConfigError, DataError


def require_layout(root: Path, parts: Sequence[str], dataset: str, layout: str) -> None:
    missing = [p for p in parts if not (root / p).exists()]
    if missing:
        nested = [d for d in sorted(root.iterdir()) if d.is_dir() and all((d / p).exists() for p in parts)]
        hint = f"; did you mean --root {nested[0]}?" if nested else ""
        raise DataError(
            f"--root {root} is not a {dataset} folder: {missing[0]} not found (expected {layout})"
            f"{hint or '; point --root at the folder as unpacked from the download'}"
        )


def read_csv(path: Path, required: Sequence[str]) -> pd.DataFrame:
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError) as err:
        raise DataError(f"{path}: not a readable CSV ({' '.join(str(err).split())})") from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise DataError(f"{path}: column {missing[0]!r} is missing; the CSV needs "
                        f"{', '.join(required)} (as published)")
    if len(df) == 0:
        raise DataError(f"{path}: the CSV has no rows")
    return df


def int_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    num = pd.to_numeric(df[col].str.strip(), errors="coerce").to_numpy(dtype=np.float64, na_value=np.nan)
    bad = ~np.isfinite(num) | (num != np.round(num))
    if bad.any():
        r = int(np.flatnonzero(bad)[0])
        raise DataError(f"{path}: line {r + 2}, column {col!r}: {df[col].iloc[r]!r} is not a whole number")
    return num.astype(np.int64)


def str_column(df: pd.DataFrame, col: str, path: Path) -> np.ndarray:
    values = df[col].str.strip().to_numpy(dtype=object)
    empty = values == ""
    if empty.any():
        r = int(np.flatnonzero(empty)[0])
        raise DataError(f"{path}: line {r + 2}, column {col!r}: value is empty")
    return values


def class_table(ids: np.ndarray, names: np.ndarray, path: Path, id_col: str, name_col: str
                 ) -> dict[int, str]:
    """Original class id -> name, checking each id has one name and each name one id."""
    table: dict[int, str] = {}
    for r, (i, n) in enumerate(zip(ids.tolist(), names.tolist())):
        if table.setdefault(i, n) != n:
            raise DataError(f"{path}: line {r + 2}: {id_col} {i} is named {n!r} here but "
                            f"{table[i]!r} above; each {id_col} needs one {name_col}")
    by_name: dict[str, int] = {}
    for i, n in sorted(table.items()):
        if by_name.setdefault(n, i) != i:
            raise DataError(f"{path}: {name_col} {n!r} is used by {id_col} {by_name[n]} and {i}")
    return table


def select_classes(keep_rows: np.ndarray, ids: np.ndarray, table: dict[int, str],
                    classes: tuple[str, ...] | None, dataset: str) -> np.ndarray:
    """Rows to keep after the ``classes`` filter (names, case-sensitive)."""
    if classes is None:
        return keep_rows
    wanted = [c.strip() for c in classes if c.strip()]
    known = set(table.values())
    unknown = [c for c in wanted if c not in known]
    if unknown:
        raise ConfigError(f"--classes: {dataset} has no class {unknown[0]!r}; known: "
                          f"{', '.join(sorted(known))}")
    wanted_ids = [i for i, n in table.items() if n in wanted]
    return keep_rows & np.isin(ids, wanted_ids)


def renumber(ids: np.ndarray, table: dict[int, str]) -> tuple[np.ndarray, tuple[str, ...]]:
    """Labels 0..C-1 in the order of the original ids present; names kept."""
    present = sorted(set(ids.tolist()))
    new = {old: i for i, old in enumerate(present)}
    return np.array([new[i] for i in ids.tolist()], dtype=np.int64), tuple(table[i] for i in present)


def check_files(paths: Sequence[Path], csv: Path, col: str, audio_dir: Path) -> None:
    missing = [p for p in paths if not p.is_file()]
    if missing:
        first = missing[0].relative_to(audio_dir) if missing[0].is_relative_to(audio_dir) else missing[0]
        raise DataError(
            f"{csv}: {len(missing)} of {len(paths)} files named in column {col!r} are missing under "
            f"{audio_dir} (first: {first}); restore them from the download, or delete their rows"
        )
