"""The tuning table (``tuning.parquet``): one row per Optuna trial, and what is read from it.

Statuses (:mod:`qmoe.layout`): ``complete`` (ran to its own end), ``stopped`` (by ASHA; its
objective is that of the epochs it ran, a lower bound), ``error``, and ``interrupted`` (cut
short by a killed command: not counted against the budget, another trial takes its place).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pandas as pd

from qmoe.layout import COUNTED, SCORED

COLUMNS: dict[str, str] = {
    "trial": "Int64",  # Optuna's trial number
    "status": "object",  # complete | stopped | error | interrupted
    "objective": "float64",  # mean over folds of the best validation macro-F1
    "is_default": "boolean",  # the default settings (the first point evaluated)
    "params": "object",  # JSON: searched parameter -> value
    "fold_f1": "object",  # JSON: fold -> best validation macro-F1
    "fold_epochs": "object",  # JSON: fold -> epochs run
    "epochs": "Int64",  # epochs reported (Tune iterations)
    "hparams": "object",  # JSON: the whole TrainConfig of the trial
    "error": "object",
    "node": "object",
    "run": "object",  # the command (Tune run) that ran it: run-1, run-2 after a resume, ...
    "started_at": "object",
    "finished_at": "object",
    "seconds": "float64",
}


def as_rows(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with the tuning table's columns and dtypes, sorted by trial."""
    df = pd.DataFrame(list(rows))
    for column, dtype in COLUMNS.items():
        if column not in df:
            df[column] = None
        if dtype == "boolean":
            df[column] = df[column].astype("boolean")
        elif dtype != "object":
            df[column] = pd.to_numeric(df[column], errors="coerce").astype(dtype)
        else:
            df[column] = df[column].astype(object).where(df[column].notna(), None)
    return df[list(COLUMNS)].sort_values("trial", kind="stable").reset_index(drop=True)


def counted(rows: pd.DataFrame) -> int:
    """Trials that used up the budget."""
    return int(rows["status"].isin(COUNTED).sum())


def best_row(rows: pd.DataFrame) -> dict[str, Any] | None:
    """The scored row with the highest objective (the earliest trial on a tie), or None."""
    scored = rows[rows["status"].isin(SCORED) & rows["objective"].notna()]
    if scored.empty:
        return None
    return scored.sort_values(["objective", "trial"], ascending=[False, True], kind="stable").iloc[0].to_dict()


def default_row(rows: pd.DataFrame) -> dict[str, Any] | None:
    """The scored row of the default settings, or None."""
    scored = rows[rows["status"].isin(SCORED) & rows["is_default"].fillna(False).astype(bool)]
    return scored.iloc[0].to_dict() if len(scored) else None
