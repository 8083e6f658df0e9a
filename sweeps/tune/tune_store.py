"""The folder of one tuning run (``qmoe tune``): ``STORAGE/NAME/``.

Layout::

    STORAGE/NAME/tune.json        the manifest: model, table, folds, budget, space, seed
    STORAGE/NAME/study.log        the Optuna study (JournalStorage: an append-only file)
    STORAGE/NAME/tuning.parquet   one row per Optuna trial: params, objective, per-fold F1, status
    STORAGE/NAME/best.toml        the best settings so far, their score, and where they came from
    STORAGE/NAME/.lock            held (flock) by the one command working on the run
    STORAGE/NAME/ray/             Ray Tune's own experiment folders

Our table is the truth of what ran (the study is Optuna's memory for its sampler): the budget
counts its rows with a finished status, and :func:`reconcile` makes the study agree with it
after a killed command. Files are written atomically, like a sweep's.
"""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd

from qmoe.errors import ConfigError

from sweeps.parse import check_sweep_name
from sweeps.space import SearchSpace
from sweeps.store import (atomic_write_bytes, create_folder, atomic_write_parquet, check_writable, hold_lock,
                          is_locked, now_iso)

MANIFEST = "tune.json"
TUNING = "tuning.parquet"
STUDY = "study.log"
BEST = "best.toml"
LOCK = ".lock"
MANIFEST_VERSION = 1

#: Statuses of trials that used up the budget; "interrupted" ones (the command was killed
#: while they ran) do not, and another trial takes their place.
COUNTED = ("complete", "stopped", "error")
#: Statuses whose objective is a real score (stopped = ended early by ASHA: a lower bound).
SCORED = ("complete", "stopped")
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


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps({"version": MANIFEST_VERSION, **manifest}, indent=1).encode()


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


class TuneStore:
    """The folder of one tuning run and the small API over its files.

    Args:
        storage: the folder holding every sweep and tuning run (``--storage``).
        name: the run's name (one path component).
    """

    def __init__(self, storage: str | Path, name: str) -> None:
        self.name = check_sweep_name(name)
        self.storage = Path(storage).expanduser().resolve()
        self.path = self.storage / self.name
        self.manifest_path = self.path / MANIFEST
        self.rows_path = self.path / TUNING
        self.study_path = self.path / STUDY
        self.best_path = self.path / BEST
        self.lock_path = self.path / LOCK
        self.ray_dir = self.path / "ray"

    # -- creation and manifest ----------------------------------------------------------------
    def check_new(self) -> None:
        """Refuse a name in use, and a storage folder that cannot be written."""
        if self.path.exists():
            raise ConfigError(f"{self.name!r} already exists in {self.storage}: continue it with "
                              f"'qmoe tune --resume {self.name}' or choose another --name")
        check_writable(self.storage)

    def create(self, manifest: Mapping[str, Any]) -> None:
        """Make the folder with its manifest in one rename (as a sweep's: a killed command never
        leaves a folder without a manifest, and a concurrent start with the name fails)."""
        self.check_new()
        create_folder(self.path, {MANIFEST: _manifest_bytes(manifest)},
                      taken=f"{self.name!r} was just created by another command: "
                            f"use 'qmoe tune --resume {self.name}' or another --name")

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.manifest_path, _manifest_bytes(manifest))

    def read_manifest(self) -> dict[str, Any]:
        """The manifest; ConfigError naming the tuning runs there when there is none."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            if (self.path / "sweep.json").is_file():
                raise ConfigError(f"{self.name!r} is a sweep, not a tuning run: continue it with "
                                  f"'qmoe resume {self.name}'") from None
            known = list_tunes(self.storage)
            hint = f"; tuning runs there: {', '.join(known)}" if known else "; there are none (check --storage)"
            raise ConfigError(f"no tuning run {self.name!r} in {self.storage}{hint}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{self.manifest_path}: damaged manifest ({err})") from None
        if manifest.get("version") != MANIFEST_VERSION:
            raise ConfigError(f"{self.manifest_path}: manifest version {manifest.get('version')!r} "
                              f"is not {MANIFEST_VERSION}; it was written by another qmoe version")
        return manifest

    # -- lock -------------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the run's lock (ConfigError naming the holder otherwise); temporary files of a
        writer killed mid-write are removed then: only the lock holder writes."""
        with hold_lock(self.lock_path, f"tuning run {self.name!r}"):
            for tmp in self.path.glob(".*.tmp"):
                with contextlib.suppress(OSError):
                    tmp.unlink()
            yield

    def is_locked(self) -> bool:
        return is_locked(self.lock_path)

    # -- rows -------------------------------------------------------------------------------
    def read_rows(self) -> pd.DataFrame:
        """The tuning table (empty, with the columns, before the first row)."""
        if not self.rows_path.exists():
            return as_rows([])
        return as_rows(pd.read_parquet(self.rows_path).to_dict("records"))

    def upsert(self, rows: list[Mapping[str, Any]]) -> pd.DataFrame:
        """Merge rows by trial number (a new row for a trial replaces the old) and write atomically."""
        if not rows:
            return self.read_rows()
        old, new = self.read_rows(), as_rows(rows)
        merged = pd.concat([old[~old["trial"].isin(new["trial"])], new], ignore_index=True) if len(old) else new
        merged = as_rows(merged.to_dict("records"))
        atomic_write_parquet(merged, self.rows_path)
        return merged

    # -- the Optuna study -------------------------------------------------------------------
    def study_storage(self) -> Any:
        """The study's Optuna storage (a journal file). Call it while holding :meth:`lock`.

        Optuna's own file lock (``study.log.lock``) can outlive a killed command; under our
        lock no other command writes the study, so a leftover one is stale and removed.
        """
        import optuna
        from optuna.storages.journal import JournalFileBackend

        with contextlib.suppress(FileNotFoundError):
            Path(f"{self.study_path}.lock").unlink()
        return optuna.storages.JournalStorage(JournalFileBackend(str(self.study_path)))

    # -- best.toml --------------------------------------------------------------------------
    def write_best(self, manifest: Mapping[str, Any], rows: pd.DataFrame) -> Path | None:
        """Write ``best.toml`` from the table (nothing before the first scored trial)."""
        text = best_toml(self, manifest, rows)
        if text is None:
            return None
        atomic_write_bytes(self.best_path, text.encode())
        return self.best_path


def list_tunes(storage: str | Path) -> list[str]:
    """Names of the tuning runs under ``storage``, sorted."""
    root = Path(storage).expanduser()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if (p / MANIFEST).is_file())


# -- best.toml -------------------------------------------------------------------------------

def toml_value(value: Any) -> str:
    """A TOML value for a str, bool, int, float, list or flat dict."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isnan(value):
            return "nan"
        if math.isinf(value):
            return "inf" if value > 0 else "-inf"
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)  # a JSON string is a valid TOML basic string
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    if isinstance(value, Mapping):
        return "{ " + ", ".join(f"{json.dumps(str(k))} = {toml_value(v)}" for k, v in value.items()) + " }"
    raise TypeError(f"no TOML form for {type(value).__name__}")


def _version(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


def best_toml(store: TuneStore, manifest: Mapping[str, Any], rows: pd.DataFrame) -> str | None:
    """The text of ``best.toml``: ``[hparams]`` (what ``qmoe sweep --hparams`` reads) and ``[tune]``.

    ``[hparams]`` holds the space's fixed settings and the best trial's searched values: every
    setting that differs from the defaults when that score was obtained.
    """
    best = best_row(rows)
    if best is None:
        return None
    default = default_row(rows)
    space = SearchSpace.from_dict(manifest["space"])
    hparams = {**space.fixed, **json.loads(best["params"])}
    folds = manifest["folds"]
    tune: dict[str, Any] = {
        "name": store.name,
        "objective": f"mean validation macro-F1 over folds {','.join(map(str, folds))} (clean protocol: "
                     "each fold's validation split carved from its training folds; its test fold never read)",
        "score": float(best["objective"]),
        "trial": int(best["trial"]),
        "status": best["status"],
        "fold_f1": {str(k): v for k, v in json.loads(best["fold_f1"] or "{}").items()},
    }
    if default is not None:
        tune.update(default_score=float(default["objective"]), default_trial=int(default["trial"]))
    tune.update(trials_finished=counted(rows), trials_requested=int(manifest["trials"]),
                model=manifest["model"], dataset=manifest["table"]["name"],
                table_hash=manifest["table"]["content_hash"], folds=list(folds), seed=int(manifest["seed"]),
                space=space.source, study=str(store.study_path), tuning_table=str(store.rows_path),
                written_at=now_iso(), qmoe_version=manifest.get("qmoe_version", ""),
                optuna_version=_version("optuna"), ray_version=_version("ray"),
                caveat="settings tuned on these folds have seen each fold's rows through the other folds' "
                       "training/validation splits; for a strictly nested estimate tune once per test fold")
    lines = [f"# The best settings of tuning run {store.name!r} (qmoe tune).",
             f"# Use them with: qmoe sweep ... --hparams {store.best_path}",
             "", "[hparams]"]
    lines += [f"{k} = {toml_value(list(v) if isinstance(v, tuple) else v)}" for k, v in hparams.items()]
    lines += ["", "[tune]"] + [f"{k} = {toml_value(v)}" for k, v in tune.items()]
    return "\n".join(lines) + "\n"
