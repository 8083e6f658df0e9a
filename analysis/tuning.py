"""The report of a tuning run (``qmoe report NAME`` on a ``qmoe tune`` folder).

Reads the run's files only: ``tune.json`` (what was tuned), ``tuning.parquet`` (one row per
trial; the truth of what ran) and ``study.log`` (the Optuna study, for parameter importances).
Sections: the trials with the best objective so far against the trial number, the best
settings against the defaults, and Optuna's parameter importances.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd

from qmoe.analysis.document import Report, Section, Table
from qmoe.errors import DataError
from qmoe.layout import BEST, COUNTED, INTERRUPTED, SCORED, STUDY, TUNING, TUNING_RUN, kind_of
from qmoe.layout import TUNE_MANIFEST as MANIFEST

log = logging.getLogger(__name__)

IMPORTANCE_SEED = 0


def tuning_folder(source: str | Path, storage: str | Path) -> Path | None:
    """The tuning run meant by ``source`` (a NAME under ``storage``, its folder, or its
    tuning.parquet), or None when ``source`` is not a tuning run."""
    text = str(source)
    path = Path(text).expanduser()
    candidates = [path.parent if path.name == TUNING else path]
    if "/" not in text and path.suffix != ".parquet":
        candidates.insert(0, Path(storage).expanduser() / text)
    for folder in candidates:
        if kind_of(folder) == TUNING_RUN:
            return folder
    return None


def load_tuning(folder: Path) -> tuple[dict, pd.DataFrame]:
    """The manifest and the tuning table, rows sorted by trial, with ``best_so_far``.

    Raises:
        DataError: a damaged manifest, or no trial recorded yet.
    """
    try:
        manifest = json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError) as err:
        raise DataError(f"{folder / MANIFEST}: cannot read the tuning manifest ({err})") from None
    if not (folder / TUNING).is_file():
        raise DataError(f"tuning run {folder.name!r} has no trials yet ({folder / TUNING} is missing): "
                        f"continue it with 'qmoe tune --resume {folder.name}'")
    rows = pd.read_parquet(folder / TUNING).sort_values("trial", kind="stable").reset_index(drop=True)
    scored = rows["objective"].where(rows["status"].isin(SCORED))
    rows["best_so_far"] = scored.cummax()
    return manifest, rows


def _short(value: object) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _num(value: float, spec: str = ".4f") -> str:
    return "-" if value is None or pd.isna(value) else format(float(value), spec)


def trials_section(name: str, rows: pd.DataFrame, plots: bool) -> Section:
    """Every trial in order with the best objective so far (and the progress plot)."""
    display = pd.DataFrame({
        "trial": rows["trial"].astype(str) + np.where(rows["is_default"].fillna(False).astype(bool), " (default)", ""),
        "status": rows["status"],
        "objective": [_num(v) for v in rows["objective"]],
        "best so far": [_num(v) for v in rows["best_so_far"]],
        "per fold": [" ".join(f"{v:.3f}" for v in json.loads(f or "{}").values()) for f in rows["fold_f1"]],
        "epochs": rows["epochs"].astype("string").fillna("-"),
        "settings": [" ".join(f"{k}={_short(v)}" for k, v in json.loads(p or "{}").items()) for p in rows["params"]],
    })
    data = rows.drop(columns=["hparams"], errors="ignore")
    default = rows.loc[rows["is_default"].fillna(False).astype(bool) & rows["status"].isin(SCORED), "objective"]
    figures = ()
    if plots and rows["objective"].notna().any():
        from qmoe.analysis import plots as p

        figures = (p.tuning_progress(rows, float(default.iloc[0]) if len(default) else None, name),)
    notes = ["objective = mean over folds of the best validation macro-F1 (each fold's validation split "
             "carved from its training folds; the test fold never read)",
             "stopped = ended early by ASHA: its objective is that of the epochs it ran (a lower bound)"]
    if (rows["status"] == INTERRUPTED).any():
        notes.append("interrupted = cut short by a killed command: not counted against the budget")
    return Section(key="tuning-trials", title="Tuning: best so far vs trial number", notes=tuple(notes),
                   tables=(Table(key="tuning-trials", title="Trials in order", data=data, display=display),),
                   plots=figures)


def best_section(rows: pd.DataFrame) -> Section:
    """The best trial's settings against the default settings, with both scores."""
    title = "Tuning: best settings vs defaults"
    scored = rows[rows["status"].isin(SCORED) & rows["objective"].notna()]
    if scored.empty:
        return Section.skipped("tuning-best", title, "no trial has finished with a score yet")
    best = scored.sort_values(["objective", "trial"], ascending=[False, True], kind="stable").iloc[0]
    default = scored[scored["is_default"].fillna(False).astype(bool)]
    best_params = json.loads(best["params"] or "{}")
    default_params = json.loads(default.iloc[0]["params"]) if len(default) else {}
    records = [{"": "mean validation macro-F1", "best": _num(best["objective"]),
                "default": _num(default.iloc[0]["objective"]) if len(default) else "-"},
               {"": "trial", "best": str(best["trial"]), "default": str(default.iloc[0]["trial"]) if len(default) else "-"}]
    records += [{"": k, "best": _short(v), "default": _short(default_params[k]) if k in default_params else "-"}
                for k, v in best_params.items()]
    display = pd.DataFrame(records)
    notes = () if len(default) else ("the default settings were not evaluated (outside the space, or not finished)",)
    return Section(key="tuning-best", title=title, notes=notes,
                   tables=(Table(key="tuning-best", title="Best vs default", data=display, display=display),))


def importance_section(folder: Path, study_name: str) -> Section:
    """Optuna's parameter importances (fANOVA, seeded) over the study's completed trials."""
    title = "Tuning: parameter importances (Optuna)"
    if not (folder / STUDY).is_file():
        return Section.skipped("tuning-importance", title, f"no Optuna study at {folder / STUDY}")
    import optuna
    from optuna.storages.journal import JournalFileBackend
    from optuna.trial import TrialState

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=study_name,
                                  storage=optuna.storages.JournalStorage(JournalFileBackend(str(folder / STUDY))))
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if len(complete) < 2:
            return Section.skipped("tuning-importance", title,
                                   f"not computable: {len(complete)} completed trial(s), importances need at least 2")
        evaluator = optuna.importance.FanovaImportanceEvaluator(seed=IMPORTANCE_SEED)
        importances = optuna.importance.get_param_importances(study, evaluator=evaluator)
    except (KeyError, ValueError, RuntimeError) as err:
        return Section.skipped("tuning-importance", title, f"not computable: {' '.join(str(err).split())}")
    finally:
        optuna.logging.set_verbosity(level)
    data = pd.DataFrame({"parameter": list(importances), "importance": [float(v) for v in importances.values()]})
    display = data.assign(importance=[f"{v:.3f}" for v in data["importance"]])
    return Section(key="tuning-importance", title=title,
                   intro=(f"fANOVA (seed {IMPORTANCE_SEED}) over the {len(complete)} completed trials of the Optuna "
                          "study, normalised to sum to 1; trials ASHA stopped early enter with the objective they "
                          "reached, errored ones with 0."),
                   tables=(Table(key="tuning-importance", title="Importance of each searched parameter",
                                 data=data, display=display),))


def tuning_report(folder: Path, *, plots: bool = True) -> Report:
    """The report of the tuning run in ``folder``.

    Raises:
        DataError: see :func:`load_tuning`.
    """
    manifest, rows = load_tuning(folder)
    name = manifest.get("name", folder.name)
    counted = int(rows["status"].isin(COUNTED).sum())
    table = manifest.get("table", {})
    header = [f"source: {folder}",
              f"tuning run of {manifest.get('model')} on {table.get('name')} (table {table.get('content_hash')}), "
              f"folds {', '.join(map(str, manifest.get('folds', [])))}, seed {manifest.get('seed')}",
              f"trials: {counted} of {manifest.get('trials')} finished"
              + (f", {int((rows['status'] == INTERRUPTED).sum())} interrupted" if (rows["status"] == INTERRUPTED).any()
                 else ""),
              f"search space: {manifest.get('space', {}).get('source', 'default')}"]
    if (folder / BEST).is_file():
        header.append(f"best settings: {folder / BEST}")
    sections = (trials_section(name, rows, plots), best_section(rows), importance_section(folder, name))
    return Report(title=f"qmoe report: tuning run {name}", source=folder / TUNING, header=tuple(header),
                  sections=sections)
