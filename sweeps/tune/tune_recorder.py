"""The driver-side Tune callback of ``qmoe tune``: one tuning-table row per finished trial.

A row (and a fresh ``best.toml``) is written on the trial's final result: its own end, or ASHA's
stop. Tune hands that result to callbacks before it tells the searcher (Optuna) the trial is
complete, so a command killed in between leaves a row the study has not heard of, which
:func:`qmoe.sweeps.tune.study.reconcile` tells it on resume.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import pandas as pd
from ray import tune

from qmoe.layout import COMPLETE, ERROR, STOPPED
from qmoe.record import now_iso

from qmoe.sweeps.progress import LineProgress, NullProgress
from qmoe.sweeps.tune import tune_trainable as tt
from qmoe.sweeps.tune.space import SearchSpace
from qmoe.sweeps.tune.tune_store import TuneStore
from qmoe.sweeps.tune.tuning_table import best_row
from qmoe.sweeps.worker import describe_failure

log = logging.getLogger(__name__)


class TuneProgress(LineProgress):
    """The progress line, with the best objective so far."""

    best: float | None = None

    def line(self) -> str:
        text = super().line()
        return text if self.best is None else f"{text} · best {self.best:.4f}"


class TuneRecorder(tune.Callback):
    """Writes the tuning table and ``best.toml``, and drives the progress line.

    Args:
        store: the tuning run's folder.
        manifest: its manifest (space, default point, budget).
        run: the label of this Tune run (``run-1``, ``run-2`` after a resume...).
        progress: the progress display (:class:`NullProgress` for none).
    """

    def __init__(self, store: TuneStore, manifest: Mapping[str, Any], run: str,
                 progress: NullProgress | None = None) -> None:
        self.store, self.manifest, self.run = store, dict(manifest), run
        self.space = SearchSpace.from_dict(manifest["space"])
        self.default = manifest.get("default_point")
        self.progress = progress or NullProgress()
        self.started_at: dict[int, str] = {}
        self.recorded: set[int] = set()

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "progress": NullProgress()}  # Tune pickles its callbacks

    @staticmethod
    def number(trial: Any) -> int:
        """Optuna's trial number of a Tune trial."""
        return int(trial.config[tt.TRIAL])

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.started_at[self.number(trial)] = now_iso()
        self.progress.started(str(self.number(trial)))

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.progress.retried(str(self.number(trial)))

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        if not result.get("done"):  # set by the trial's own end and by ASHA's stop alike
            return
        number = self.number(trial)
        error = result.get(tt.ERROR)
        status = ERROR if error else COMPLETE if result.get(tt.FINISHED) else STOPPED
        self._write(trial, {"trial": number, "status": status,
                            "objective": None if error else result[tt.OBJECTIVE],
                            "fold_f1": result.get(tt.FOLD_F1), "fold_epochs": result.get(tt.FOLD_EPOCHS),
                            "epochs": result.get("training_iteration"), "hparams": result.get(tt.HPARAMS),
                            "error": error or "", "node": result.get(tt.NODE),
                            "started_at": result.get(tt.STARTED) or self.started_at.get(number)})

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        number = self.number(trial)
        if number in self.recorded:
            return
        error, node, started = describe_failure(trial)
        log.warning("tuning trial %d failed after %d attempt(s): %s", number, trial.num_failures, error)
        self._write(trial, {"trial": number, "status": ERROR, "error": error, "node": node or "unknown",
                            "started_at": started or self.started_at.get(number)})

    def _write(self, trial: Any, row: dict[str, Any]) -> None:
        suggested = {k: v for k, v in trial.config.items() if k != tt.TRIAL}
        finished = now_iso()
        seconds = None
        if row.get("started_at"):
            seconds = (pd.Timestamp(finished) - pd.Timestamp(row["started_at"])).total_seconds()
        rows = self.store.upsert([{**row, "params": self.space.values_json(suggested),
                                   "is_default": suggested == self.default, "run": self.run,
                                   "finished_at": finished, "seconds": seconds}])
        self.store.write_best(self.manifest, rows)
        self.recorded.add(row["trial"])
        best = best_row(rows)
        if isinstance(self.progress, TuneProgress) and best is not None:
            self.progress.best = float(best["objective"])
        self.progress.finished(str(row["trial"]), ok=row["status"] != ERROR)
