"""Embedding rows for ``qmoe predict``, read with pyarrow alone (no pandas, no torch).

Any Parquet file with a ``clip_id`` column and the embedding columns ``e0..e{D-1}`` (the
embedding table of DESIGN §2.1 is one; ``label``, ``label_name``, ``fold`` and ``group`` are
optional here and ``label`` is kept when present, for accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmoe.errors import DataError

#: Embedding columns decoded at a time (bounds the reader's memory, whatever the table's width).
COLUMN_GROUP = 64


@dataclass(frozen=True, kw_only=True, eq=False)
class Rows:
    """Rows to predict: ids, float32 embeddings (N, D), and the labels if the file has them."""

    clip_ids: np.ndarray  # (N,) str objects
    X: np.ndarray  # (N, D) float32
    labels: np.ndarray | None  # (N,) int64


def read_rows(path: str | Path, dim: int, *, folds: tuple[int, ...] | None = None) -> Rows:
    """The rows of a Parquet file, checked against the model's input dimension ``dim``.

    Args:
        path: the Parquet file.
        dim: D, the embedding columns the model reads (``e0..e{D-1}``).
        folds: keep only rows of these folds (needs a ``fold`` column); None: every row.

    Raises:
        DataError: unreadable file, missing columns, another dimension, NaN/inf values.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(path).expanduser()
    if not path.is_file():
        raise DataError(f"--data {path}: no such file; give an embedding table (.parquet)")
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"--data {path}: not a readable Parquet file ({' '.join(str(err).split())[:160]})") from None
    names = set(schema.names)
    emb = [n for n in schema.names if n.startswith("e") and n[1:].isdigit()]
    if "clip_id" not in names:
        raise DataError(f"--data {path}: no clip_id column; give an embedding table (DESIGN §2.1 layout)")
    if len(emb) != dim or any(f"e{i}" not in names for i in range(dim)):
        raise DataError(f"--data {path}: {len(emb)} embedding columns (e0..), the model reads {dim}: "
                        "give a table made with the backbone the model was trained on")
    if folds is not None and "fold" not in names:
        raise DataError(f"--data {path}: no fold column, so --fold cannot select rows")
    if schema.field("clip_id").type != pa.string() and schema.field("clip_id").type != pa.large_string():
        raise DataError(f"--data {path}: clip_id is {schema.field('clip_id').type}, not strings")
    extra = [c for c in ("label", "fold") if c in names]
    try:
        return _read(pq.ParquetFile(path), path, dim, extra, folds)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"--data {path}: cannot read ({' '.join(str(err).split())[:160]})") from None


def _read(pf, path: Path, dim: int, extra: list[str], folds: tuple[int, ...] | None) -> Rows:  # noqa: ANN001
    """The rows, read COLUMN_GROUP embedding columns of one row group at a time, in one thread:
    a wide table decoded whole costs several times its size in Arrow buffers (ESC-50-sized:
    ~60 MB for a 12 MB table); this holds one group's columns."""
    groups = range(pf.num_row_groups)
    small = [pf.read_row_group(g, columns=["clip_id", *extra], use_threads=False) for g in groups]
    ids = [str(c) for t in small for c in t.column("clip_id").to_pylist()]
    cols = {c: np.concatenate([_column(t, c, path) for t in small]).astype(np.int64) for c in extra}
    keep = np.ones(len(ids), bool)
    if folds is not None:
        keep = np.isin(cols["fold"], np.asarray(folds))
        if not keep.any():
            raise DataError(f"--data {path}: no row of fold(s) {', '.join(map(str, folds))}")
    starts = np.cumsum([0] + [t.num_rows for t in small])
    X = np.empty((int(keep.sum()), dim), np.float32)  # (N, D), filled group by group
    out = np.cumsum(keep) - 1  # row of X each kept table row goes to
    for first in range(0, dim, COLUMN_GROUP):
        names = [f"e{i}" for i in range(first, min(dim, first + COLUMN_GROUP))]
        for g in groups:
            part = pf.read_row_group(g, columns=names, use_threads=False)
            mine = keep[starts[g]: starts[g + 1]]
            rows = out[starts[g]: starts[g + 1]][mine]
            for j, name in enumerate(names):
                X[rows, first + j] = _column(part, name, path)[mine]
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise DataError(f"--data {path}: row {int(np.flatnonzero(keep)[np.argmax(bad)])} holds NaN or inf; "
                        "fix the table")
    labels = cols["label"][keep] if "label" in cols else None
    return Rows(clip_ids=np.asarray(ids, dtype=object)[keep], X=X, labels=labels)


def _column(table, name: str, path: Path) -> np.ndarray:  # noqa: ANN001 - a pyarrow Table
    chunks = table.column(name).chunks
    if len(chunks) == 1:
        return _values(chunks[0], name, path)
    return np.concatenate([_values(c, name, path) for c in chunks]) if chunks else np.zeros(0, np.float32)



#: Arrow numeric types read straight from their data buffer.
_NUMPY_TYPES = {"float": np.float32, "double": np.float64, "halffloat": np.float16, "int8": np.int8,
                "int16": np.int16, "int32": np.int32, "int64": np.int64, "uint8": np.uint8,
                "uint16": np.uint16, "uint32": np.uint32, "uint64": np.uint64}


def _values(arr, name: str, path: Path) -> np.ndarray:  # noqa: ANN001 - a pyarrow Array
    """A numeric Arrow array as a numpy view of its data buffer.

    ``Array.to_numpy`` would do, but it imports pandas when pandas is installed (~40 MB and
    ~0.5 s), which ``qmoe predict`` avoids.
    """
    dtype = _NUMPY_TYPES.get(str(arr.type))
    if dtype is None:
        raise DataError(f"--data {path}: column {name} is {arr.type}, not a number")
    if arr.null_count:
        raise DataError(f"--data {path}: column {name} holds missing values; fix the table")
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=len(arr), offset=arr.offset * np.dtype(dtype).itemsize)
