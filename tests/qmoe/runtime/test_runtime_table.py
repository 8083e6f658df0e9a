"""``qmoe.runtime.table.read_rows``: the rows ``load_table`` reads, with pyarrow alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from qmoe.data.table import load_table
from qmoe.errors import DataError
from qmoe.runtime.table import COLUMN_GROUP, read_rows

ROOT = Path(__file__).resolve().parents[3]


@pytest.mark.parametrize("row_group_size", [None, 7])
def test_read_rows_equals_load_table(synth_table, tmp_path: Path, row_group_size: int | None) -> None:
    path = tmp_path / "t.parquet"
    pq.write_table(pq.read_table(synth_table.source), path, row_group_size=row_group_size)
    assert synth_table.dim > COLUMN_GROUP  # several column groups
    ref = load_table(path)
    rows = read_rows(path, ref.dim)
    np.testing.assert_array_equal(rows.X, ref.X)
    assert rows.clip_ids.tolist() == ref.clip_ids.tolist() and rows.labels.tolist() == ref.y.tolist()
    some = read_rows(path, ref.dim, folds=(2, 4))
    keep = np.isin(ref.folds, [2, 4])
    np.testing.assert_array_equal(some.X, ref.X[keep])
    assert some.clip_ids.tolist() == ref.clip_ids[keep].tolist()


def write(path: Path, **columns) -> Path:
    pq.write_table(pa.table(columns), path)
    return path


def test_bad_tables(tmp_path: Path) -> None:
    ok = {"clip_id": ["a", "b"], "e0": [0.5, 1.5], "e1": [1.0, 2.0]}
    rows = read_rows(write(tmp_path / "f64.parquet", **ok), 2)  # float64 columns are fine
    assert rows.X.dtype == np.float32 and rows.X.tolist() == [[0.5, 1.0], [1.5, 2.0]] and rows.labels is None
    cases = [
        ({**ok, "e1": [1.0, None]}, 2, "column e1 holds missing values"),
        ({**ok, "e1": ["x", "y"]}, 2, "column e1 is string, not a number"),
        ({**ok, "e1": [1.0, float("nan")]}, 2, "row 1 holds NaN or inf"),
        ({k: v for k, v in ok.items() if k != "clip_id"}, 2, "no clip_id column"),
        (ok, 3, "2 embedding columns .e0..., the model reads 3"),
        ({**ok, "clip_id": [1, 2]}, 2, "clip_id is int64, not strings"),
    ]
    for i, (columns, dim, match) in enumerate(cases):
        with pytest.raises(DataError, match=match):
            read_rows(write(tmp_path / f"bad{i}.parquet", **columns), dim)
    with pytest.raises(DataError, match="no row of fold.s. 9"):
        read_rows(write(tmp_path / "folds.parquet", **ok, fold=[1, 2]), 2, folds=(9,))


def test_reading_imports_no_pandas(synth_table) -> None:
    code = (f"import sys\nfrom qmoe.runtime.table import read_rows\nr = read_rows({str(synth_table.source)!r}, "
            f"{synth_table.dim}, folds=(1,))\nprint(len(r.X), 'pandas' in sys.modules, 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    n, pandas, torch = done.stdout.split()
    assert int(n) == int((synth_table.folds == 1).sum()) and pandas == torch == "False"
