"""What a sweep holds: counts by state, each error, and a summary per configuration.

Reads the sweep's files only (no Ray), so it works while a sweep runs and after it ended.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from qmoe.layout import ERROR, OK
from qmoe.spec import TrialSpec

from qmoe.sweeps.store import SweepStore

SUMMARY_KEYS = ["dataset", "paper_name", "model", "alpha"]


@dataclass(frozen=True, kw_only=True)
class SweepStatus:
    """Counts by state of one sweep, and the errored trials."""

    name: str
    path: Path
    kind: str
    total: int  # trials in the sweep's grid
    ok: int
    error: int
    pending: int  # no row yet: not started, running, or cut short
    running: bool  # a command holds the sweep right now
    errors: pd.DataFrame = field(repr=False)  # trial_key, paper_name, dataset, fold, alpha, error
    results: pd.DataFrame = field(repr=False)


def sweep_status(name: str, storage: str | Path) -> SweepStatus:
    """The state of sweep ``name`` under ``storage``.

    Raises:
        ConfigError: no such sweep (the message lists the sweeps there).
    """
    store = SweepStore(storage, name)
    manifest = store.read_manifest()
    keys = [TrialSpec.from_dict(t).trial_key for t in manifest["trials"]]
    results = store.read_results()
    results = results[results["trial_key"].isin(keys)]
    ok = int((results["status"] == OK).sum())
    error = int((results["status"] == ERROR).sum())
    errors = results.loc[results["status"] == ERROR,
                         ["trial_key", "paper_name", "dataset", "fold", "alpha", "error"]]
    return SweepStatus(name=store.name, path=store.path, kind=manifest.get("kind", ""), total=len(keys),
                       ok=ok, error=error, pending=len(keys) - ok - error, running=store.is_locked(),
                       errors=errors.reset_index(drop=True), results=results.reset_index(drop=True))


def summary_by_config(results: pd.DataFrame) -> pd.DataFrame:
    """One line per dataset x model x alpha: folds ok/error, macro-F1 mean and std, latency, size.

    The std is over folds (ddof 1), as in the paper's tables; NaN with a single fold.
    """
    if results.empty:
        return pd.DataFrame(columns=SUMMARY_KEYS + ["folds_ok", "folds_error", "f1_macro_mean",
                                                    "f1_macro_std", "latency_p50_us", "size_kb"])
    ok = results["status"] == OK
    grouped = results.assign(_ok=ok, _err=~ok).groupby(SUMMARY_KEYS, sort=False, dropna=False)
    out = grouped.agg(folds_ok=("_ok", "sum"), folds_error=("_err", "sum"))
    good = results[ok].groupby(SUMMARY_KEYS, sort=False, dropna=False)
    out = out.join(good.agg(f1_macro_mean=("f1_macro", "mean"), f1_macro_std=("f1_macro", "std"),
                            latency_p50_us=("latency_p50_us", "mean"), size_kb=("size_kb", "mean")))
    return out.reset_index()
