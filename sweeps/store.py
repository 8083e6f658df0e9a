"""The results store of one sweep: ``STORAGE/NAME/`` (DESIGN §7; the files: :mod:`qmoe.layout`).

The folder, its manifest and its lock are a :class:`~qmoe.sweeps.folder.SweepFolder`'s; this
adds the sweep's own files. Every file is written atomically (a killed process leaves the
previous complete version, never half a file). Rows are merged by ``trial_key``: a trial
appears once; an error row never replaces an ok row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qmoe import layout
from qmoe.errors import ConfigError, one_line
from qmoe.record import TrialRecord
from qmoe.spec import TrialSpec

from qmoe.sweeps.folder import SweepFolder, atomic_write_parquet


def _dtype(annotation: str) -> str:
    # TrialRecord's annotations are strings ("float | None"); a fixed dtype per column keeps
    # the Parquet schema the same whether a column holds values or only errors' nulls.
    if "float" in annotation:
        return "float64"
    if "int" in annotation:
        return "Int64"
    return "object"


SCHEMA: dict[str, str] = {f.name: _dtype(str(f.type)) for f in dataclasses.fields(TrialRecord)}


def as_frame(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with the results schema (record columns first, fixed dtypes)."""
    return conform(pd.DataFrame(list(rows)))


def conform(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with the results schema, as :func:`as_frame` gives for its rows, column
    by column (a table of thousands of rows is not taken apart into dicts on every write)."""
    df = df.reset_index(drop=True)
    out = {}
    for column, dtype in SCHEMA.items():
        values = df[column] if column in df else pd.Series([None] * len(df), dtype=object)
        if dtype != "object":
            out[column] = pd.to_numeric(values, errors="coerce").astype(dtype)
        else:
            out[column] = _objects(values)
    for column in df.columns:
        if column not in SCHEMA:  # a column of another version: numpy dtypes kept, the rest as objects
            values = df[column]
            out[column] = values if isinstance(values.dtype, np.dtype) else _objects(values)
    return pd.DataFrame(out, index=pd.RangeIndex(len(df)))


def _objects(values: pd.Series) -> pd.Series:
    return values.astype(object).where(values.notna(), None)


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One row per ``trial_key``: new rows win, except that an error never replaces an ok row."""
    if old.empty:
        merged = new
    elif new.empty:
        merged = old
    else:
        keep_ok = old[(old["status"] == layout.OK) & old["trial_key"].isin(new["trial_key"])]
        blocked = set(keep_ok["trial_key"]) & set(new.loc[new["status"] != layout.OK, "trial_key"])
        new = new[~new["trial_key"].isin(blocked)]
        merged = pd.concat([old[~old["trial_key"].isin(new["trial_key"])], new], ignore_index=True)
    merged = merged.drop_duplicates("trial_key", keep="last")
    return conform(merged)


class SweepStore(SweepFolder):
    """The folder of one sweep and the small API over its files.

    Args:
        storage: the folder holding every sweep (``--storage``).
        name: the sweep's name (one path component; see :func:`check_sweep_name`).
    """

    def __init__(self, storage: str | Path, name: str) -> None:
        super().__init__(storage, name)
        self.results_path = self.path / layout.RESULTS
        self.routing_dir = self.path / layout.ROUTING
        self.runs_path = self.path / layout.RUNS
        self.models_dir = self.path / layout.MODELS

    def prepare_models_dir(self) -> Path:
        """Create ``models/`` and delete what a killed save left there (``.KEY.*.tmp`` folders,
        which ``qmoe export`` never reads). Call with the lock held: no save of this sweep runs."""
        self.models_dir.mkdir(exist_ok=True)
        for leftover in self.models_dir.glob(".*.tmp*"):
            shutil.rmtree(leftover, ignore_errors=True)
        return self.models_dir

    # -- rows ---------------------------------------------------------------------------
    def read_results(self) -> pd.DataFrame:
        """The results table (empty, with the columns, before the first row)."""
        if not self.results_path.exists():
            return as_frame([])
        try:
            table = pd.read_parquet(self.results_path)
        except Exception as err:  # pyarrow raises several unrelated types for a damaged file
            first = one_line(err, 200)
            raise ConfigError(f"{self.results_path}: damaged results table ({first}); restore it from a "
                              f"backup, or delete it and 'qmoe resume {self.name}' runs every trial again") from None
        return conform(table)

    def upsert(self, rows: list[Mapping[str, Any]]) -> pd.DataFrame:
        """Merge rows into the table (see :func:`merge_rows`) and write it atomically."""
        merged = merge_rows(self.read_results(), as_frame(rows))
        atomic_write_parquet(merged, self.results_path)
        return merged

    def ok_keys(self) -> set[str]:
        df = self.read_results()
        return set(df.loc[df["status"] == layout.OK, "trial_key"])

    def unfinished(self) -> list[TrialSpec]:
        """The manifest's trials without an ok row (what a resume runs), in manifest order.

        Raises:
            ConfigError: no such sweep, or a damaged results table.
        """
        trials = [TrialSpec.from_dict(d) for d in self.read_manifest()["trials"]]
        ok = self.ok_keys()
        return [t for t in trials if t.trial_key not in ok]

    def log_run(self, figures: Mapping[str, Any]) -> None:
        """Append one run's figures (timings, efficiency) to ``runs.jsonl`` in the sweep folder."""
        with open(self.runs_path, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(figures), sort_keys=True) + "\n")

    def read_runs(self) -> list[dict[str, Any]]:
        """The figures of every run and resume of this sweep, oldest first."""
        if not self.runs_path.is_file():
            return []
        runs = []
        for line in self.runs_path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a killed command
                runs.append(json.loads(line))
        return runs

    def write_samples(self, trial_key: str, samples: pd.DataFrame) -> Path:
        """Write one trial's per-sample routing to ``routing/<trial_key>.parquet``."""
        path = self.routing_dir / f"{trial_key}.parquet"
        self.routing_dir.mkdir(exist_ok=True)
        atomic_write_parquet(samples, path)
        return path
