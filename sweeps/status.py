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

SUMMARY_KEYS = ["dataset", "paper_name", "model", "alpha", "curiosity"]
FOLD_UNIT = ["split_seed", "fold"]  # a test fold of one fold assignment


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
    # seed, split_seed, trials, ok, error, pending: one line per replicate (empty with one replicate)
    by_replicate: pd.DataFrame = field(repr=False, default_factory=pd.DataFrame)


def sweep_status(name: str, storage: str | Path) -> SweepStatus:
    """The state of sweep ``name`` under ``storage``.

    Raises:
        ConfigError: no such sweep (the message lists the sweeps there).
    """
    store = SweepStore(storage, name)
    manifest = store.read_manifest()
    trials = [TrialSpec.from_dict(t) for t in manifest["trials"]]
    keys = [t.trial_key for t in trials]
    results = store.read_results()
    results = results[results["trial_key"].isin(keys)]
    ok = int((results["status"] == OK).sum())
    error = int((results["status"] == ERROR).sum())
    errors = results.loc[results["status"] == ERROR,
                         ["trial_key", "paper_name", "dataset", "fold", "alpha", "error"]]
    return SweepStatus(name=store.name, path=store.path, kind=manifest.get("kind", ""), total=len(keys),
                       ok=ok, error=error, pending=len(keys) - ok - error, running=store.is_locked(),
                       errors=errors.reset_index(drop=True), results=results.reset_index(drop=True),
                       by_replicate=_by_replicate(trials, results))


def _by_replicate(trials: list[TrialSpec], results: pd.DataFrame) -> pd.DataFrame:
    """Counts by state per (seed, split seed), when the sweep has more than one of them."""
    plan = pd.DataFrame({"trial_key": [t.trial_key for t in trials], "seed": [t.seed for t in trials],
                         "split_seed": [t.split_seed for t in trials]})
    if len(plan.drop_duplicates(["seed", "split_seed"])) < 2:
        return pd.DataFrame()
    status = plan["trial_key"].map(results.set_index("trial_key")["status"]).fillna("pending")
    counts = (plan.assign(ok=status == OK, error=status == ERROR, pending=status == "pending", trials=1)
              .groupby(["seed", "split_seed"], dropna=False, sort=True)[["trials", "ok", "error", "pending"]].sum())
    return counts.reset_index()


def summary_by_config(results: pd.DataFrame) -> pd.DataFrame:
    """One line per dataset x model x alpha x curiosity: trials ok/error, seeds, macro-F1 mean and
    std, latency, size.

    The std is over folds (ddof 1), as in the paper's tables: over one value per test fold (of
    each fold assignment), the mean over its seeds; NaN with a single fold.
    """
    columns = SUMMARY_KEYS + ["trials_ok", "trials_error", "seeds", "f1_macro_mean", "f1_macro_std",
                              "latency_p50_us", "size_kb"]
    if results.empty:
        return pd.DataFrame(columns=columns)
    results = results.assign(curiosity=results["curiosity"].fillna("kl"),
                             split_seed=results["split_seed"].astype("Int64").fillna(-1))
    ok = results["status"] == OK
    grouped = results.assign(_ok=ok, _err=~ok).groupby(SUMMARY_KEYS, sort=False, dropna=False)
    out = grouped.agg(trials_ok=("_ok", "sum"), trials_error=("_err", "sum"))
    good = results[ok]
    units = good.groupby(SUMMARY_KEYS + FOLD_UNIT, sort=False, dropna=False)["f1_macro"].mean()
    f1 = units.groupby(level=list(range(len(SUMMARY_KEYS))), sort=False, dropna=False).agg(["mean", "std"])
    out = out.join(f1.rename(columns={"mean": "f1_macro_mean", "std": "f1_macro_std"}))
    out = out.join(good.groupby(SUMMARY_KEYS, sort=False, dropna=False).agg(
        seeds=("seed", "nunique"), latency_p50_us=("latency_p50_us", "mean"), size_kb=("size_kb", "mean")))
    return out.reset_index()[columns]
