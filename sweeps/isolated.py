"""``--latency isolated``: time each finished trial's deployed model alone, after the sweep.

In a sweep, a trial times its model while the other trials train on the other cores (and,
with more trials than cores, on the same one): its latency is partly its neighbours'. This
phase runs once the trials are done and Ray has stopped, in the driver process, pinned to one
core: for each trial with a saved model (``models/<trial_key>/``, see
:mod:`qmoe.export.saved`) it rebuilds the model, deploys it with the trial's own seed (the
same frozen router masks), and times it exactly as the trial did (:func:`qmoe.latency.measure_latency`,
on the trial's test rows standardised with its training statistics), one model at a time.

The row's ``latency_*`` columns then hold the isolated figures and ``latency_mode`` is
``isolated``; the figures the trial measured move to ``latency_insweep_*``, so one table holds
both and the report uses the isolated ones. A trial without a saved model keeps its in-sweep
figures (``latency_mode = in-sweep``) and is listed in the outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from qmoe import layout
from qmoe.errors import QmoeError, one_line

from qmoe.sweeps.store import SweepStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Isolated:
    """What the isolated latency phase did."""

    timed: int  # rows whose latency_* are now isolated figures
    already: int  # rows that had them before this phase
    missing: list[str] = field(default_factory=list)  # ok trials without a saved model
    failed: dict[str, str] = field(default_factory=dict)  # trial_key -> why it could not be timed
    seconds: float = 0.0
    cpu: int | None = None  # the core the phase ran on


def insweep_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's in-sweep latency figures under their ``latency_insweep_*`` names."""
    from qmoe.latency import MEASURES

    return {f"latency_insweep_{m}": row.get(f"latency_{m}") for m in MEASURES}


def _test_rows(saved: Any, table: Any) -> np.ndarray:
    """The trial's test rows, standardised as the trial did (float32, (N, D))."""
    clip_ids = [str(c) for c in saved.info["test"]["clip_id"]]
    where = pd.Index(table.clip_ids.astype(str)).get_indexer(clip_ids)
    if (where < 0).any():
        raise QmoeError(f"{saved.path}: its test clips are not all in table {table.source}")
    return ((table.X[where] - saved.mean) / saved.std).astype(np.float32)


def time_saved(path: Any, table: Any) -> Any:
    """Rebuild, deploy and time one saved trial (:class:`qmoe.latency.LatencyStats`)."""
    import torch

    from qmoe.export.saved import load_saved_trial
    from qmoe.latency import measure_latency
    from qmoe.quant import deploy

    saved = load_saved_trial(path)
    deployed = deploy(saved.build_model(), seed=saved.deploy_seed)
    x = torch.from_numpy(_test_rows(saved, table))
    return measure_latency(lambda z: deployed(z), x, runs=saved.spec.latency_runs)


def time_isolated(store: SweepStore, keys: Sequence[str], tables: Mapping[str, Any]) -> Isolated:
    """Time alone every ok trial of ``keys`` whose row is not isolated yet and whose model is saved.

    Each row is written as soon as it is timed (a killed phase loses nothing timed so far and
    a resume times the rest). Runs pinned to one core for its whole length.
    """
    import time

    from qmoe.latency import pinned_to_one_core

    results = store.read_results()
    rows = results[results["trial_key"].isin(set(keys)) & (results["status"] == layout.OK)]
    done = rows["latency_mode"] == layout.ISOLATED
    todo = rows[~done]
    saved = [k for k in todo["trial_key"] if (store.models_dir / k).is_dir()]
    missing = sorted(set(todo["trial_key"]) - set(saved))
    failed: dict[str, str] = {}
    start, timed = time.perf_counter(), 0
    with pinned_to_one_core() as cpu:
        for record in todo[todo["trial_key"].isin(saved)].to_dict("records"):
            key = record["trial_key"]
            try:
                lat = time_saved(store.models_dir / key, tables[record["dataset"]])
            except (QmoeError, KeyError) as err:
                failed[key] = one_line(err)
                log.warning("isolated latency of %s: %s", key, failed[key])
                continue
            store.upsert([{**record, **insweep_columns(record), **lat.columns(), "latency_mode": layout.ISOLATED}])
            timed += 1
    if missing:
        log.warning("%d trial(s) have no saved model and keep their in-sweep latency", len(missing))
    return Isolated(timed=timed, already=int(done.sum()), missing=missing, failed=failed,
                    seconds=time.perf_counter() - start, cpu=cpu)
