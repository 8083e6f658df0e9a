"""The results folders: what ``STORAGE/NAME/`` holds for a sweep and for a tuning run.

One place names the files, the statuses written in them, and which folders under a storage
are sweeps or tuning runs; the writers (:mod:`qmoe.sweeps`) and the readers
(:mod:`qmoe.analysis`, ``qmoe status``) both import it. It imports nothing heavy.

A sweep (``qmoe sweep ...``)::

    STORAGE/NAME/sweep.json              the manifest: spec, tables, every trial of the grid
    STORAGE/NAME/results.parquet         one row per trial_key (qmoe.record.TrialRecord columns)
    STORAGE/NAME/routing/<key>.parquet   per-sample routing of mixture trials
    STORAGE/NAME/models/<key>/           each trial's trained model (--save-models; qmoe export KEY)
    STORAGE/NAME/runs.jsonl              one line of figures per run or resume
    STORAGE/NAME/.lock                   held (flock) by the one command working on the folder
    STORAGE/NAME/ray/                    Ray Tune's own experiment folders

A tuning run (``qmoe tune``)::

    STORAGE/NAME/tune.json               the manifest: model, table, folds, budget, space, seed
    STORAGE/NAME/study.log               the Optuna study (JournalStorage: an append-only file)
    STORAGE/NAME/tuning.parquet          one row per Optuna trial: params, objective, status
    STORAGE/NAME/best.toml               the best settings so far (what ``--hparams`` reads)
    STORAGE/NAME/.lock, ray/             as a sweep's

A folder is a tuning run by its manifest, a sweep by its manifest or its results table (a
results folder copied without its manifest can still be reported); names starting with ``.``
are never either (a folder being created is built under a hidden name first).
"""

from __future__ import annotations

from pathlib import Path

# -- files of a sweep -------------------------------------------------------------------------
SWEEP_MANIFEST = "sweep.json"
RESULTS = "results.parquet"
ROUTING = "routing"
MODELS = "models"
RUNS = "runs.jsonl"
# -- files of a tuning run --------------------------------------------------------------------
TUNE_MANIFEST = "tune.json"
TUNING = "tuning.parquet"
STUDY = "study.log"
BEST = "best.toml"
# -- both -------------------------------------------------------------------------------------
LOCK = ".lock"
RAY = "ray"
MANIFEST_VERSION = 1  # written in every manifest; another value was written by another qmoe

# -- statuses ---------------------------------------------------------------------------------
#: A results row (``status``): the trial finished, or failed (``error`` holds why).
OK = "ok"
ERROR = "error"
#: A tuning row: ran to its own end, stopped early by ASHA, failed, or cut short by a killed
#: command (not counted against the budget: another trial takes its place).
COMPLETE, STOPPED, INTERRUPTED = "complete", "stopped", "interrupted"
#: Tuning statuses that used up the budget.
COUNTED = (COMPLETE, STOPPED, ERROR)
#: Tuning statuses whose objective is a real score (stopped: a lower bound).
SCORED = (COMPLETE, STOPPED)

#: A results row's ``latency_mode``: timed inside the trial (as a sweep runs it, beside the other
#: trials), or after the sweep from the saved model, alone (``--latency isolated``).
IN_SWEEP, ISOLATED = "in-sweep", "isolated"
LATENCY_MODES = (IN_SWEEP, ISOLATED)

#: The kinds of folder.
SWEEP, TUNING_RUN = "sweep", "tuning run"


def kind_of(folder: str | Path) -> str | None:
    """:data:`TUNING_RUN` (a ``tune.json``), :data:`SWEEP` (a ``sweep.json`` or a
    ``results.parquet``), or None for any other path."""
    folder = Path(folder)
    if folder.name.startswith("."):
        return None
    if (folder / TUNE_MANIFEST).is_file():
        return TUNING_RUN
    if (folder / SWEEP_MANIFEST).is_file() or (folder / RESULTS).is_file():
        return SWEEP
    return None


def _list(storage: str | Path, kind: str) -> list[str]:
    root = Path(storage).expanduser()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if kind_of(p) == kind)


def list_sweeps(storage: str | Path) -> list[str]:
    """Names of the sweeps under ``storage`` (see :func:`kind_of`), sorted."""
    return _list(storage, SWEEP)


def list_tuning_runs(storage: str | Path) -> list[str]:
    """Names of the tuning runs under ``storage`` (folders with a ``tune.json``), sorted."""
    return _list(storage, TUNING_RUN)
