"""The Optuna side of a tuning run: its study (``study.log``), seeds, and agreeing with our table.

Resume is a fresh Tune run that continues the same Optuna study, not ``Tuner.restore``: Ray's
experiment snapshot lags the trials (it would re-run trials that finished after it), and its
pickled searcher would bring back Optuna trial handles that no longer match the study. Instead
:func:`reconcile` makes the study agree with our table (a trial killed mid-run is failed in the
study and recorded as ``interrupted``; one recorded but not yet told is told).

Seeding: the sampler is seeded with the tuning seed, offset by the study's size on a resume so
that a resumed run does not replay the first run's random start-up points.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from typing import Any

from qmoe.layout import COMPLETE, ERROR, INTERRUPTED, SCORED
from qmoe.record import now_iso

from qmoe.sweeps.tune.space import SearchSpace
from qmoe.sweeps.tune.tune_store import TuneStore


@contextlib.contextmanager
def optuna_quiet() -> Iterator[None]:
    """Optuna's INFO lines ("A new study created...", each trial) off for the block."""
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        optuna.logging.set_verbosity(level)


def open_study(store: TuneStore) -> Any:
    """The run's Optuna study (created if absent); call it while holding the store's lock."""
    import optuna

    return optuna.create_study(study_name=store.name, storage=store.study_storage(), direction="maximize",
                               load_if_exists=True)


def reconcile(store: TuneStore, manifest: Mapping[str, Any], run: str) -> int:
    """Make the study agree with our table after a killed command; returns the trials interrupted.

    - a trial still RUNNING in the study with a counted row (the command died between writing
      the row and telling Optuna) is told its recorded result;
    - a trial RUNNING without a row was cut short: failed in the study, recorded ``interrupted``
      (not counted: another trial takes its place);
    - a trial finished in the study without a row (died between telling Optuna and writing)
      gets its row from the study.
    """
    from optuna.trial import TrialState

    space = SearchSpace.from_dict(manifest["space"])
    default = manifest.get("default_point")
    study = open_study(store)
    rows = store.read_rows()
    by_trial = {int(r["trial"]): r for r in rows.to_dict("records")}
    new_rows: list[dict[str, Any]] = []
    interrupted = 0
    for t in study.get_trials(deepcopy=False):
        row = by_trial.get(t.number)
        base = {"trial": t.number, "params": space.values_json(t.params), "is_default": t.params == default,
                "run": run, "started_at": t.datetime_start.isoformat() if t.datetime_start else None,
                "finished_at": now_iso()}
        if t.state == TrialState.RUNNING:
            if row is not None and row["status"] in SCORED:
                study.tell(t.number, float(row["objective"]))
            else:
                study.tell(t.number, state=TrialState.FAIL)
            if row is None:
                interrupted += 1
                new_rows.append({**base, "status": INTERRUPTED,
                                 "error": "the command stopped while this trial ran; not counted, another "
                                          "trial takes its place"})
        elif t.state in (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED) and row is None:
            ok = t.state == TrialState.COMPLETE
            new_rows.append({**base, "status": COMPLETE if ok else ERROR, "objective": t.value if ok else None,
                             "epochs": len(t.intermediate_values),
                             "error": "" if ok else "failed; the command stopped before recording why"})
    store.upsert(new_rows)
    return interrupted


def startup_trials(budget: int) -> int:
    """Random trials before TPE models the results: Optuna's 10, fewer on small budgets (a
    quarter of the budget, at least 3), so that a 12-trial run is not all random search."""
    return min(10, max(3, budget // 4))


def sampler_seed(seed: int, n_trials: int) -> int:
    """The TPE seed of a run that starts with ``n_trials`` trials in the study."""
    return (seed * 1_000_003 + n_trials) % (2**32)
