"""Find and read a sweep's results table; split finished from errored trials.

The table is the one the sweeps write (``STORAGE/NAME/results.parquet``, the columns of
:meth:`qmoe.record.TrialRecord.columns`). Errored rows are kept apart, counted and listed, and
never enter an average.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from qmoe.analysis.configs import bit_width, config_label
from qmoe.errors import DataError
from qmoe.layout import RESULTS, ROUTING, list_sweeps
from qmoe.record import TrialRecord
from qmoe.spec import paper_name

log = logging.getLogger(__name__)

REQUIRED = ("trial_key", "dataset", "fold", "model", "alpha", "protocol", "status")
# Columns that tell two configurations of the same model apart (besides model and alpha).
VARIANTS = (("top_k", "k={}"), ("curiosity", "{}"), ("hparams_source", "hp {}"))
# Replicates of one configuration on one fold: the training seed and the seeded fold assignment
# (repeated k-fold). A table without them has one seed and one split; without ``curiosity`` every
# mixture used the KL curiosity (the only one before the column existed).
REPLICATES = ("seed", "split_seed")
DEFAULTS = {"seed": 0, "split_seed": 0, "curiosity": "kl"}


@dataclass(frozen=True, kw_only=True)
class Results:
    """A results table ready for analysis.

    ``ok`` holds the finished trials, one row per (protocol, dataset, config, split_seed, fold,
    seed) cell, with the added columns ``config`` (an identity string), ``label`` (display name),
    ``kind`` (``single`` | ``mixture``) and ``bits`` (k of a ``q{k}`` model, else NA).
    """

    path: Path
    ok: pd.DataFrame
    errors: pd.DataFrame
    n_rows: int
    notes: tuple[str, ...]

    @property
    def routing_dir(self) -> Path:
        """Where the per-sample routing files of this table live."""
        return self.path.parent / ROUTING

    @property
    def protocols(self) -> list[str]:
        return sorted(self.ok["protocol"].unique())

    @property
    def datasets(self) -> list[str]:
        return sorted(self.ok["dataset"].unique())


def resolve_source(target: str | Path, storage: str | Path) -> Path:
    """The results file meant by ``target``: a sweep NAME under ``storage``, a folder, or a file.

    Raises:
        DataError: nothing there; the message names the path and what to give instead.
    """
    storage = Path(storage).expanduser()
    text = str(target)
    path = Path(text).expanduser()
    bare = "/" not in text and "\\" not in text and path.suffix != ".parquet" and text not in (".", "..")
    if path.is_file():
        return path
    if bare and (storage / text).is_dir():
        sweep = storage / text
        if (sweep / RESULTS).is_file():
            return sweep / RESULTS
        raise DataError(f"sweep {text!r} has no results yet ({sweep / RESULTS} is missing): "
                        f"finish it with 'qmoe resume {text}'")
    if path.is_dir():
        if (path / RESULTS).is_file():
            return path / RESULTS
        raise DataError(f"{path} holds no {RESULTS}: give a sweep folder or the results file itself")
    if bare:
        known = list_sweeps(storage)
        hint = f" (sweeps there: {', '.join(known)})" if known else " (it holds no sweeps)"
        raise DataError(f"no sweep {text!r} in {storage}{hint}: give a sweep name, set --storage "
                        f"(env QMOE_STORAGE), or give the path of a {RESULTS}")
    raise DataError(f"no results table at {path}: give the path of a sweep's {RESULTS} "
                    f"or a sweep name under --storage")


def read_table(path: Path) -> pd.DataFrame:
    """The Parquet file as a DataFrame, checked to be a non-empty results table.

    Raises:
        DataError: not Parquet, required columns missing, or no rows.
    """
    try:
        df = pd.read_parquet(path)
    except Exception as err:  # pyarrow raises several unrelated types for a bad file
        first = (str(err).splitlines() or [type(err).__name__])[0][:160]
        raise DataError(f"{path} is not a Parquet results table ({first}): give the {RESULTS} "
                        f"a sweep wrote") from None
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"{path} is not a results table: column(s) {', '.join(missing)} missing "
                        f"(a sweep's {RESULTS} has the columns of qmoe.record.TrialRecord)")
    if df.empty:
        raise DataError(f"{path} has no rows: run the sweep (or 'qmoe resume NAME') before reporting")
    return df


def load_results(path: str | Path) -> Results:
    """Read, validate and label a results table.

    Raises:
        DataError: see :func:`read_table`.
    """
    path = Path(path)
    df = read_table(path)
    n_rows = len(df)
    notes: list[str] = []
    absent = [c for c in TrialRecord.columns() if c not in df.columns]
    if absent:
        notes.append(f"columns absent from the table (treated as empty): {', '.join(absent)}")
    df = df.reindex(columns=list(dict.fromkeys([*TrialRecord.columns(), *df.columns])))
    df = df.reset_index(drop=True)
    status = df["status"].astype("string").fillna("").str.strip().str.lower()
    bad_fold = (status == "ok") & pd.to_numeric(df["fold"], errors="coerce").isna()
    if bad_fold.any():
        notes.append(f"{int(bad_fold.sum())} finished row(s) without a fold number left out")
    df = _label(df[~bad_fold].assign(status=status[~bad_fold]))
    errors = df[df["status"] != "ok"].copy()
    ok = df[df["status"] == "ok"].copy()
    ok, dup_note = _dedupe(ok)
    if dup_note:
        notes.append(dup_note)
    if len(ok["protocol"].unique()) > 1:
        notes.append("both protocols are present (" + ", ".join(sorted(ok["protocol"].unique()))
                     + "): every table and test is computed per protocol, never across them")
    log.info("read %d rows (%d ok, %d errored) from %s", n_rows, len(ok), len(errors), path)
    return Results(path=path, ok=ok.reset_index(drop=True), errors=errors.reset_index(drop=True),
                   n_rows=n_rows, notes=tuple(notes))


def _label(ok: pd.DataFrame) -> pd.DataFrame:
    """Add config / label / kind / bits; fill identity fields the table may lack."""
    ok = ok.copy()
    ok["fold"] = pd.to_numeric(ok["fold"], errors="coerce").fillna(0).astype(int)
    for column in REPLICATES:
        values = ok[column] if column in ok.columns else pd.Series(DEFAULTS[column], index=ok.index)
        ok[column] = pd.to_numeric(values, errors="coerce").fillna(DEFAULTS[column]).astype(int)
    curiosity = ok["curiosity"] if "curiosity" in ok.columns else pd.Series(None, index=ok.index, dtype="string")
    ok["curiosity"] = curiosity.astype("string").fillna(DEFAULTS["curiosity"]).astype(str)
    ok["alpha"] = pd.to_numeric(ok["alpha"], errors="coerce").fillna(0.0).astype(float)
    ok["model"] = ok["model"].astype(str).str.strip()
    ok["dataset"] = ok["dataset"].astype(str)
    ok["protocol"] = ok["protocol"].astype("string").fillna("clean").astype(str)
    counted = ok["model"].str.count(",") + 1
    ok["n_experts"] = pd.to_numeric(ok["n_experts"], errors="coerce").fillna(counted).astype(int)
    names = [p if isinstance(p, str) and p else paper_name(tuple(m.split(",")), a)
             for p, m, a in zip(ok["paper_name"], ok["model"], ok["alpha"])]
    ok["paper_name"] = names
    ok["kind"] = ["mixture" if n > 1 else "single" for n in ok["n_experts"]]
    ok["bits"] = pd.array([bit_width(m) if n == 1 else None for m, n in zip(ok["model"], ok["n_experts"])],
                          dtype="Int64")
    base = [f"{m}|a={a:g}" for m, a in zip(ok["model"], ok["alpha"])]
    labels = [config_label(p, a, n) for p, a, n in zip(ok["paper_name"], ok["alpha"], ok["n_experts"])]
    ok["config"] = base
    for column, fmt in VARIANTS:
        values = ok[column].astype("string").fillna("-")
        varies = values.groupby(pd.Series(base, index=ok.index)).transform("nunique") > 1
        ok["config"] = ok["config"] + "|" + column + "=" + values
        labels = [f"{lab} [{fmt.format(v)}]" if vary else lab
                  for lab, v, vary in zip(labels, values, varies)]
    ok["label"] = labels
    return ok


def _dedupe(ok: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """One row per (protocol, dataset, config, split_seed, fold, seed): the latest finished one."""
    key = ["protocol", "dataset", "config", "split_seed", "fold", "seed"]
    order = ok["finished_at"].astype("string").fillna("")
    ok = ok.assign(_order=order).sort_values("_order", kind="stable")
    dup = ok.duplicated(key, keep="last")
    note = ""
    if dup.any():
        which = sorted({f"{r.label} ({r.dataset}, fold {r.fold})" for r in ok[dup].itertuples()})
        note = (f"{int(dup.sum())} duplicate finished row(s) for the same trial: kept the latest of "
                + "; ".join(which[:5]) + (" ..." if len(which) > 5 else ""))
    return ok[~dup].drop(columns="_order"), note
