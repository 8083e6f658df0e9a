"""The folder of one tuning run (``qmoe tune``): ``STORAGE/NAME/`` (the files: :mod:`qmoe.layout`).

Our table is the truth of what ran (the study is Optuna's memory for its sampler): the budget
counts its rows with a finished status, and :func:`~qmoe.sweeps.tune.study.reconcile` makes
the study agree with it after a killed command. The folder, its manifest and its lock are a
:class:`~qmoe.sweeps.folder.RunFolder`'s; files are written atomically, like a sweep's.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pandas as pd

from qmoe import layout

from qmoe.sweeps.folder import RunFolder, atomic_write_bytes, atomic_write_parquet, manifest_bytes
from qmoe.sweeps.tune.best_toml import best_toml
from qmoe.sweeps.tune.tuning_table import as_rows

class TuneStore(RunFolder):
    """The folder of one tuning run and the small API over its files.

    Args:
        storage: the folder holding every sweep and tuning run (``--storage``).
        name: the run's name (one path component).
    """

    KIND = layout.TUNING_RUN
    MANIFEST = layout.TUNE_MANIFEST
    LIST = staticmethod(layout.list_tuning_runs)

    def __init__(self, storage: str | Path, name: str) -> None:
        super().__init__(storage, name)
        self.rows_path = self.path / layout.TUNING
        self.study_path = self.path / layout.STUDY
        self.best_path = self.path / layout.BEST

    def set_budget(self, manifest: Mapping[str, Any], trials: int) -> dict[str, Any]:
        """The manifest with a new budget, written (``qmoe tune --resume NAME --trials N``)."""
        manifest = {**manifest, "trials": trials}
        atomic_write_bytes(self.manifest_path, manifest_bytes(manifest))
        return manifest

    # -- rows -------------------------------------------------------------------------------
    def read_rows(self) -> pd.DataFrame:
        """The tuning table (empty, with the columns, before the first row)."""
        if not self.rows_path.exists():
            return as_rows([])
        return as_rows(pd.read_parquet(self.rows_path).to_dict("records"))

    def upsert(self, rows: list[Mapping[str, Any]]) -> pd.DataFrame:
        """Merge rows by trial number (a new row for a trial replaces the old) and write atomically."""
        if not rows:
            return self.read_rows()
        old, new = self.read_rows(), as_rows(rows)
        merged = pd.concat([old[~old["trial"].isin(new["trial"])], new], ignore_index=True) if len(old) else new
        merged = as_rows(merged.to_dict("records"))
        atomic_write_parquet(merged, self.rows_path)
        return merged

    # -- the Optuna study -------------------------------------------------------------------
    def study_storage(self) -> Any:
        """The study's Optuna storage (a journal file). Call it while holding :meth:`lock`.

        Optuna's own file lock (``study.log.lock``) can outlive a killed command; under our
        lock no other command writes the study, so a leftover one is stale and removed.
        """
        import optuna
        from optuna.storages.journal import JournalFileBackend

        with contextlib.suppress(FileNotFoundError):
            Path(f"{self.study_path}.lock").unlink()
        return optuna.storages.JournalStorage(JournalFileBackend(str(self.study_path)))

    # -- best.toml --------------------------------------------------------------------------
    def write_best(self, manifest: Mapping[str, Any], rows: pd.DataFrame) -> Path | None:
        """Write ``best.toml`` from the table (nothing before the first scored trial)."""
        text = best_toml(manifest, rows, name=self.name, study=self.study_path, tuning_table=self.rows_path,
                         best_path=self.best_path)
        if text is None:
            return None
        atomic_write_bytes(self.best_path, text.encode())
        return self.best_path
