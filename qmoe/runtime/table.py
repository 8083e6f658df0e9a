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

#: Rows per Parquet batch read (bounds the reader's memory, whatever the table's size).
BATCH_ROWS = 256


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
    columns = ["clip_id", *[f"e{i}" for i in range(dim)]]
    columns += [c for c in ("label", "fold") if c in names]
    X, ids, labels, fold = _read_batches(path, columns, dim)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise DataError(f"--data {path}: row {int(np.argmax(bad))} holds NaN or inf; fix the table")
    if folds is not None:
        keep = np.isin(fold, np.asarray(folds))
        if not keep.any():
            raise DataError(f"--data {path}: no row of fold(s) {', '.join(map(str, folds))}")
        X, ids = X[keep], ids[keep]
        labels = None if labels is None else labels[keep]
    return Rows(clip_ids=ids, X=X, labels=labels)


def _read_batches(path: Path, columns: list[str], dim: int
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray | None]:
    """(X, clip ids, labels, folds) read BATCH_ROWS rows at a time, one thread: a wide table read
    whole through ``read_table`` costs ~5x its size in Arrow buffers; this holds one batch."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
        n = pf.metadata.num_rows
        X = np.empty((n, dim), np.float32)  # (N, D), filled batch by batch, column by column
        ids: list[str] = []
        extra: dict[str, list[np.ndarray]] = {c: [] for c in ("label", "fold") if c in columns}
        start = 0
        for batch in pf.iter_batches(batch_size=BATCH_ROWS, columns=columns, use_threads=False):
            rows = batch.num_rows
            for i in range(dim):
                X[start: start + rows, i] = _values(batch.column(i + 1), columns[i + 1], path)
            ids += [str(c) for c in batch.column(0).to_pylist()]
            for c in extra:
                extra[c].append(_values(batch.column(columns.index(c)), c, path))
            start += rows
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"--data {path}: cannot read ({' '.join(str(err).split())[:160]})") from None
    joined = {c: np.concatenate(v).astype(np.int64) if v else np.zeros(0, np.int64) for c, v in extra.items()}
    return X[:start], np.asarray(ids, dtype=object), joined.get("label"), joined.get("fold")


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
