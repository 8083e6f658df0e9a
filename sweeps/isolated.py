"""``--latency isolated``: time each finished trial's deployed model alone, after the sweep.

In a sweep, a trial times its model while the other trials train on the other cores (and,
with more trials than cores, on the same one): its latency is partly its neighbours'. This
phase runs once the trials are done and Ray has stopped, in the driver process, pinned to one
core: for each ok trial with a saved model (``models/<trial_key>/``, :mod:`qmoe.export.saved`)
it rebuilds the model, deploys it with the trial's own seed (the same frozen router masks, as
:mod:`qmoe.export.lower` does), and times it as the trial did (:func:`qmoe.latency.measure_latency`
to its stated precision, on the trial's test rows standardised with its training statistics),
one model at a time.

The row's ``latency_*`` columns then hold the isolated figures and ``latency_mode`` is
``isolated``; the figures the trial measured move to ``latency_insweep_*``. Each row is written
as soon as it is timed, so a killed phase loses nothing timed so far and ``qmoe resume`` times
the rest (rows already isolated are never timed again). A trial that cannot be timed keeps its
in-sweep figures (``latency_mode = in-sweep``) and is named in the outcome.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qmoe import layout
from qmoe.errors import QmoeError, one_line

from qmoe.sweeps.store import SweepStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class Isolated:
    """What the isolated latency phase did."""

    timed: int  # rows whose latency_* became isolated figures in this phase
    already: int  # ok rows that were isolated before this phase
    missing: list[str] = field(default_factory=list)  # ok trials without a saved model
    failed: dict[str, str] = field(default_factory=dict)  # trial_key -> why it could not be timed
    seconds: float = 0.0
    cpu: int | None = None  # the core the phase ran on (None: not pinned)


def insweep_columns(row: Mapping[str, Any]) -> dict[str, Any]:
    """The row's in-sweep latency figures under their ``latency_insweep_*`` names."""
    from qmoe.latency import MEASURES

    return {f"latency_insweep_{m}": row.get(f"latency_{m}") for m in MEASURES}


def standardised_test_rows(saved: Any, table: Any) -> np.ndarray:
    """The saved trial's test rows of ``table``, standardised as the trial did: float32 (N, D)."""
    where = {str(c): i for i, c in enumerate(table.clip_ids)}
    try:
        rows = np.array([where[str(c)] for c in saved.info["test"]["clip_id"]], dtype=np.int64)
    except KeyError as err:
        raise QmoeError(f"{saved.path}: test clip {err.args[0]} is not in table {table.source}") from None
    return ((table.X[rows] - saved.mean) / saved.std).astype(np.float32)  # (N, D)


def time_saved(path: Path, table: Any) -> Any:
    """Rebuild, deploy and time one saved trial (a :class:`qmoe.latency.LatencyStats`).

    Raises:
        QmoeError: not a saved trial, weights that do not fit, test clips missing from ``table``.
    """
    import torch

    from qmoe.export.saved import load_saved_trial
    from qmoe.latency import measure_latency
    from qmoe.quant import deploy

    saved = load_saved_trial(path)
    deployed = deploy(saved.build_model(), seed=saved.deploy_seed)  # as run_trial and qmoe export deploy it
    x = torch.from_numpy(standardised_test_rows(saved, table))  # (N, D)
    return measure_latency(lambda z: deployed(z), x, runs=saved.spec.latency_runs)


def time_isolated(store: SweepStore, keys: Sequence[str], tables: Mapping[str, Any]) -> Isolated:
    """Time alone every ok trial of ``keys`` whose row is not isolated yet and whose model is saved.

    Call with the sweep's lock held and no trial running. The whole phase runs pinned to one
    core; ``tables`` maps dataset name -> the embedding table its trials ran on.
    """
    from qmoe.latency import pinned_to_one_core

    results = store.read_results()
    rows = results[results["trial_key"].isin(set(keys)) & (results["status"] == layout.OK)]
    done = rows["latency_mode"] == layout.ISOLATED
    todo = rows[~done]
    saved = {k for k in todo["trial_key"] if (store.models_dir / k).is_dir()}
    missing = sorted(set(todo["trial_key"]) - saved)
    failed: dict[str, str] = {}
    start, timed = time.perf_counter(), 0
    with pinned_to_one_core() as cpu:
        for record in todo[todo["trial_key"].isin(saved)].to_dict("records"):
            key = record["trial_key"]
            try:
                table = tables[record["dataset"]]
                lat = time_saved(store.models_dir / key, table)
            except (QmoeError, KeyError, ValueError, OSError) as err:
                failed[key] = one_line(err)
                log.warning("isolated latency of %s: %s", key, failed[key])
                continue
            store.upsert([{**record, **insweep_columns(record), **lat.columns(), "latency_mode": layout.ISOLATED}])
            timed += 1
    if missing:
        log.warning("%d trial(s) have no saved model and keep their in-sweep latency", len(missing))
    return Isolated(timed=timed, already=int(done.sum()), missing=missing, failed=failed,
                    seconds=time.perf_counter() - start, cpu=cpu)
