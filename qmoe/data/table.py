"""The embedding table (DESIGN §2.1): one row per clip, stored as Parquet.

Columns: ``clip_id`` (str), ``label`` (int 0..C-1), ``label_name`` (str), ``fold`` (int),
``group`` (str) and ``e0..e{D-1}`` (float32). Table-level metadata (dataset, backbone,
front-end settings, versions) is a JSON dict in the Parquet schema metadata under
``b"qmoe"``. Loading validates everything a trial relies on and raises one
:class:`~qmoe.errors.DataError` per defect, naming the file, the column, the first bad
row and the fix.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from qmoe.errors import DataError

log = logging.getLogger(__name__)

META_KEY = b"qmoe"


@dataclass(frozen=True, kw_only=True, eq=False)
class EmbeddingTable:
    """A validated embedding table held as arrays (rows in file order).

    Attributes:
        X: embeddings, float32, shape (N, D).
        y: class ids, int64, shape (N,).
        folds: fold of each row, int64, shape (N,).
        groups: recording/source id of each row, str objects, shape (N,).
        clip_ids: unique id of each row, str objects, shape (N,).
        label_names: class names; index = class id.
        meta: table-level metadata (dataset, backbone, settings, versions).
        source: where the table came from (a path or a name), for messages.
    """

    X: np.ndarray
    y: np.ndarray
    folds: np.ndarray
    groups: np.ndarray
    clip_ids: np.ndarray
    label_names: tuple[str, ...]
    meta: dict[str, Any] = field(default_factory=dict)
    source: str = "<memory>"

    @property
    def n_classes(self) -> int:
        """Number of classes C."""
        return len(self.label_names)

    @property
    def dim(self) -> int:
        """Embedding dimension D."""
        return int(self.X.shape[1])

    @property
    def fold_ids(self) -> list[int]:
        """The folds present, sorted."""
        return sorted(int(f) for f in np.unique(self.folds))

    def __len__(self) -> int:
        return int(self.X.shape[0])

    def check_fold(self, fold: int) -> None:
        """Raise :class:`DataError` unless ``fold`` is one of the table's folds."""
        ids = self.fold_ids
        if fold not in ids:
            shown = f"{ids[0]}..{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ids
            raise DataError(
                f"fold {fold} does not exist in {self.source}; its folds are {shown}"
                " — pass one of them with --fold/--folds"
            )

    def content_hash(self) -> str:
        """A short, stable sha256 of the arrays and class names (not of ``meta``).

        Two tables with the same rows in the same order hash alike wherever they are
        stored; used as a cache key and inside trial keys.
        """
        h = hashlib.sha256()
        for arr in (self.X.astype("<f4"), self.y.astype("<i8"), self.folds.astype("<i8")):
            h.update(np.ascontiguousarray(arr).tobytes())
            h.update(b"|")
        for strings in (self.groups, self.clip_ids, self.label_names):
            h.update("\x1f".join(map(str, strings)).encode())
            h.update(b"|")
        return h.hexdigest()[:16]

    def to_frame(self) -> pd.DataFrame:
        """The table as a DataFrame with the §2.1 columns."""
        return table_from_arrays(self.X, self.y, self.label_names, self.folds, self.groups, self.clip_ids)


def table_from_arrays(
    X: np.ndarray,
    y: np.ndarray,
    label_names: tuple[str, ...] | list[str],
    folds: np.ndarray,
    groups: np.ndarray | list[str],
    clip_ids: np.ndarray | list[str],
    meta: dict[str, Any] | None = None,
) -> pd.DataFrame:
    """A DataFrame in the §2.1 layout from per-row arrays (N rows; not validated).

    ``X`` is (N, D); ``y`` indexes ``label_names``; ``meta`` is kept in
    ``df.attrs["qmoe"]``, where :func:`save_table` finds it.
    """
    X = np.asarray(X, dtype=np.float32)
    y = np.asarray(y, dtype=np.int64)
    names = np.asarray(list(label_names), dtype=object)
    cols: dict[str, Any] = {
        "clip_id": np.asarray(clip_ids, dtype=object).astype(str),
        "label": y,
        "label_name": names[y],
        "fold": np.asarray(folds, dtype=np.int64),
        "group": np.asarray(groups, dtype=object).astype(str),
    }
    emb = pd.DataFrame(X, columns=[f"e{i}" for i in range(X.shape[1])])
    df = pd.concat([pd.DataFrame(cols), emb], axis=1)
    if meta is not None:
        df.attrs["qmoe"] = dict(meta)
    return df


def save_table(
    table: pd.DataFrame | EmbeddingTable,
    path: str | Path,
    meta: dict[str, Any] | None = None,
    *,
    validate: bool = True,
) -> Path:
    """Write an embedding table to Parquet atomically (temp file + ``os.replace``).

    Args:
        table: a frame in the §2.1 layout or an :class:`EmbeddingTable`.
        path: destination; parent folders are created.
        meta: table-level metadata; defaults to the table's own (``EmbeddingTable.meta``
            or ``df.attrs["qmoe"]``).
        validate: check the table first, so no invalid table is ever written.

    Returns:
        The destination path.

    Raises:
        DataError: if ``validate`` and the table is invalid.
    """
    path = Path(path)
    if isinstance(table, EmbeddingTable):
        meta = table.meta if meta is None else meta
        df = table.to_frame()
    else:
        df = table
        meta = df.attrs.get("qmoe", {}) if meta is None else meta
    if validate:
        from qmoe.data.validate import validate_frame

        validate_frame(df, str(path))
    arrow = pa.Table.from_pandas(df, preserve_index=False)
    schema_meta = dict(arrow.schema.metadata or {})
    schema_meta[META_KEY] = json.dumps(meta or {}, sort_keys=True, default=str).encode()
    arrow = arrow.replace_schema_metadata(schema_meta)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A unique sibling name (not mkstemp, whose 0600 mode would survive the rename and hide
    # the table from other users of a shared cache); same folder, so os.replace is atomic.
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        pq.write_table(arrow, tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    log.debug("wrote %d rows to %s", len(df), path)
    return path


def load_table(path: str | Path) -> EmbeddingTable:
    """Read and validate an embedding table from a Parquet file.

    Raises:
        DataError: if the file is missing, unreadable or fails validation.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"{path}: no such embedding table; pass an existing .parquet file with --data, "
            "or build one with `qmoe data prepare NAME --root DIR`"
        )
    try:
        arrow = pq.read_table(path)
    except (pa.ArrowException, OSError) as err:
        raise DataError(
            f"{path}: not a readable Parquet embedding table ({err}); "
            "pass a .parquet file written by `qmoe data prepare` or `qmoe.data.save_table`"
        ) from None
    raw = (arrow.schema.metadata or {}).get(META_KEY)
    try:
        meta = json.loads(raw) if raw else {}
    except json.JSONDecodeError:
        log.warning("%s: ignoring unreadable qmoe metadata", path)
        meta = {}
    from qmoe.data.validate import validate_frame  # validate imports this module

    return validate_frame(arrow.to_pandas(), str(path), meta=meta)
