"""The Ray Tune trainable of ``qmoe tune``: one step = one epoch of every fold (in lockstep).

A class trainable with ``reuse_actors=True`` for the reason the sweeps use one (DESIGN §12:
a fresh worker per trial costs seconds; OptunaSearch with actor reuse is ~7x faster). The
table and the settings every trial shares ship once through the object store
(``tune.with_parameters``); Tune's config holds the suggested values and ``study_trial``.

Every step reports ``objective`` = the running mean over folds of the best validation
macro-F1 so far (see :mod:`qmoe.cross_validation`), so ASHA compares trials at the same epoch.
A trial whose training diverges (a qmoe error) ends with objective 0.0, the value a useless
model gets, so that Optuna moves away from such settings; our table records it as an error.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ray import tune

from qmoe.cross_validation import CrossValidation
from qmoe.errors import ConfigError, QmoeError, one_line
from qmoe.measure import torch_threads
from qmoe.record import now_iso

from qmoe.sweeps.tune.space import SearchSpace
from qmoe.sweeps.worker import node_label, start_worker

OBJECTIVE = "objective"  # the metric Optuna and ASHA see
TRIAL = "study_trial"  # Optuna's trial number, in Tune's config
# Further keys of every result (read by the driver's recorder).
FINISHED = "qmoe_finished"  # the trial ended by itself (all folds stopped), not by ASHA
ERROR = "qmoe_error"
FOLD_F1 = "qmoe_fold_f1"
FOLD_EPOCHS = "qmoe_fold_epochs"
HPARAMS = "qmoe_hparams"
NODE = "qmoe_node"
STARTED = "qmoe_started_at"


@dataclass(frozen=True)
class TunePayload:
    """What every tuning worker needs, shipped once through the object store."""

    table: Any  # the EmbeddingTable
    experts: tuple[str, ...]
    folds: tuple[int, ...]
    seed: int  # the tuning seed (each fold's seed derives from it)
    space: SearchSpace
    threads: int  # torch threads per trial (= CPUs per trial)


class TuneTrainable(tune.Trainable):
    """Cross-validates the settings in ``config`` one epoch per :meth:`step`."""

    def setup(self, config: dict[str, Any], payload: TunePayload | None = None) -> None:
        if payload is None:
            raise ConfigError("TuneTrainable needs its payload: wrap it with tune.with_parameters")
        self._payload = payload
        start_worker()
        self._begin(config)

    def reset_config(self, new_config: dict[str, Any]) -> bool:
        self._begin(new_config)  # a reused actor: a new trial starts from scratch
        return True

    def _begin(self, config: dict[str, Any]) -> None:
        p = self._payload
        self._node, self._started = node_label(), now_iso()
        self._error: str | None = None
        self._cv: CrossValidation | None = None
        suggested = {k: v for k, v in config.items() if k != TRIAL}
        self._hparams = ""
        try:
            cfg = p.space.config(len(p.experts) > 1, suggested)
            self._hparams = json.dumps(cfg.to_dict(), sort_keys=True)
            with torch_threads(p.threads):
                self._cv = CrossValidation(p.table, p.experts, cfg, p.folds, seed=p.seed)
        except QmoeError as err:  # deterministic (invalid combination): no retry
            self._error = one_line(err)

    def step(self) -> dict[str, Any]:
        base = {HPARAMS: self._hparams, NODE: self._node, STARTED: self._started}
        if self._cv is not None and self._error is None:
            try:
                with torch_threads(self._payload.threads):
                    report = self._cv.step()
            except QmoeError as err:  # diverged: no retry, the same settings would diverge again
                self._error = one_line(err)
            else:
                return {**base, OBJECTIVE: report.objective, "done": report.done, FINISHED: report.done,
                        FOLD_F1: json.dumps(report.fold_f1), FOLD_EPOCHS: json.dumps(report.fold_epochs)}
        return {**base, OBJECTIVE: 0.0, "done": True, FINISHED: True, ERROR: self._error,
                FOLD_F1: "{}", FOLD_EPOCHS: "{}"}
