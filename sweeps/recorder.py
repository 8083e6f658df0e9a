"""The driver-side Tune callback that writes each trial's row the moment it finishes.

Rows go to the results store as trials complete (not at the end), each write atomic, so a
driver killed mid-sweep loses nothing already finished. A trial that keeps failing after
Ray's retries (``FailureConfig``) gets an error row with the error text, its node and times.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from ray import tune

from qmoe.layout import OK
from qmoe.record import TrialRecord, now_iso
from qmoe.spec import TrialSpec

from qmoe.sweeps.progress import NullProgress
from qmoe.sweeps.store import SweepStore
from qmoe.sweeps.trainable import ROW, SAMPLES
from qmoe.sweeps.worker import describe_failure

log = logging.getLogger(__name__)


class Recorder(tune.Callback):
    """Writes rows and routing files, and drives the progress line.

    Args:
        store: the sweep's results store.
        trials: the trials of this run by ``trial_key``.
        progress: the progress display (:class:`NullProgress` for none).
    """

    def __init__(self, store: SweepStore, trials: Mapping[str, TrialSpec],
                 progress: NullProgress | None = None) -> None:
        self.store = store
        self.trials = dict(trials)
        self.progress = progress or NullProgress()
        self.started_at: dict[str, str] = {}
        self.first_start: float | None = None  # time.time() when the first trial began
        self.recorded: set[str] = set()
        self.running: set[str] = set()
        self.peak: dict[str, int] = {}  # trial -> most trials running at once while it ran

    def __getstate__(self) -> dict[str, Any]:
        # Tune pickles its callbacks into tuner.pkl; a live display (locks, a terminal) does not
        # pickle and has no meaning in a restored copy.
        return {**self.__dict__, "progress": NullProgress()}

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = trial.config["trial_key"]
        self.started_at[key] = now_iso()
        self.first_start = self.first_start or time.time()
        self.running.add(key)
        for other in self.running:
            self.peak[other] = max(self.peak.get(other, 0), len(self.running))
        self.progress.started(key)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.progress.retried(trial.config["trial_key"])

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        # Tune lets callbacks edit the result in place: the row and the samples are popped so
        # that Ray's own experiment state stays small (our table is the record).
        row, samples = result.pop(ROW, None), result.pop(SAMPLES, None)
        if row is None:
            return
        key = row["trial_key"]
        self.running.discard(key)
        peak = self.peak.pop(key, None)
        # the condition the latency was timed under: only a finished trial has a latency
        if row.get("concurrent_trials") is None and peak is not None and row.get("status") == OK:
            row["concurrent_trials"] = peak
        if samples is not None and len(samples):
            self.store.write_samples(key, samples)
        self.store.upsert([row])
        self.recorded.add(key)
        self.progress.finished(key, ok=row["status"] == OK)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        key = trial.config["trial_key"]
        self.running.discard(key)
        if key in self.recorded:  # already has its row (an error after reporting: keep it)
            return
        error, node, started = describe_failure(trial)
        log.warning("trial %s failed after %d attempt(s): %s", key, trial.num_failures, error)
        record = TrialRecord.failed(self.trials[key], error, node=node or "unknown",
                                    started_at=started or self.started_at.get(key, ""),
                                    finished_at=now_iso())
        self.store.upsert([record.to_row()])
        self.recorded.add(key)
        self.progress.finished(key, ok=False)
