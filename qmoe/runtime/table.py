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
    columns = ["clip_id", *[f"e{i}" for i in range(dim)]]
    columns += [c for c in ("label", "fold") if c in names]
    try:
        table = pq.read_table(path, columns=columns)
    except (OSError, pa.ArrowException) as err:
        raise DataError(f"--data {path}: cannot read ({' '.join(str(err).split())[:160]})") from None
    keep = None
    if folds is not None:
        fold = table.column("fold").to_numpy(zero_copy_only=False)
        keep = np.isin(fold, np.asarray(folds))
        if not keep.any():
            raise DataError(f"--data {path}: no row of fold(s) {', '.join(map(str, folds))}")
    X = np.empty((table.num_rows, dim), np.float32)  # (N, D), filled column by column
    for i in range(dim):
        X[:, i] = table.column(f"e{i}").to_numpy(zero_copy_only=False)
    bad = ~np.isfinite(X).all(axis=1)
    if bad.any():
        raise DataError(f"--data {path}: row {int(np.argmax(bad))} holds NaN or inf; fix the table")
    ids = np.asarray(table.column("clip_id").to_pylist(), dtype=object)
    labels = table.column("label").to_numpy(zero_copy_only=False).astype(np.int64) if "label" in names else None
    if keep is not None:
        X, ids = X[keep], ids[keep]
        labels = None if labels is None else labels[keep]
    return Rows(clip_ids=ids, X=X, labels=labels)
