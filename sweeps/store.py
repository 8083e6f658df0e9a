"""The results store of one sweep: ``STORAGE/NAME/`` (DESIGN §7).

Layout::

    STORAGE/NAME/sweep.json              the manifest: spec, tables, every trial of the grid
    STORAGE/NAME/results.parquet         one row per trial_key (TrialRecord columns)
    STORAGE/NAME/routing/<key>.parquet   per-sample routing of mixture trials
    STORAGE/NAME/.lock                   held (flock) by the one command working on the sweep
    STORAGE/NAME/ray/                    Ray Tune's own experiment folders

Every file is written to a temporary name and moved into place (``os.replace``), so a killed
process leaves the previous complete version, never half a file; the folder itself appears
with its manifest in one rename. Rows are merged by ``trial_key``: a trial appears once; an
error row never replaces an ok row.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from qmoe.errors import ConfigError
from qmoe.record import TrialRecord

from sweeps.parse import check_sweep_name

MANIFEST = "sweep.json"
RESULTS = "results.parquet"
ROUTING = "routing"
RUNS = "runs.jsonl"  # one line of figures per run or resume
LOCK = ".lock"
MANIFEST_VERSION = 1


def _dtype(annotation: str) -> str:
    # TrialRecord's annotations are strings ("float | None"); a fixed dtype per column keeps
    # the Parquet schema the same whether a column holds values or only errors' nulls.
    if "float" in annotation:
        return "float64"
    if "int" in annotation:
        return "Int64"
    return "object"


SCHEMA: dict[str, str] = {f.name: _dtype(str(f.type)) for f in dataclasses.fields(TrialRecord)}


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, at import, before any thread
    os.umask(umask)
    return umask


#: mkstemp/mkdtemp make 0600 files and 0700 folders; results on shared storage must be
#: readable like any other file.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()


def now_iso() -> str:
    """UTC time to the millisecond, the format of ``started_at`` / ``finished_at``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    return json.dumps({"version": MANIFEST_VERSION, **manifest}, indent=1).encode()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and an atomic rename."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_parquet(df: pd.DataFrame, path: Path) -> None:
    """``df.to_parquet`` to a temporary file in the same folder, then ``os.replace``."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        os.close(fd)
        df.to_parquet(tmp, index=False)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def as_frame(rows: list[Mapping[str, Any]]) -> pd.DataFrame:
    """Rows -> a DataFrame with the results schema (record columns first, fixed dtypes)."""
    df = pd.DataFrame(list(rows))
    for column, dtype in SCHEMA.items():
        if column not in df:
            df[column] = None
        if dtype != "object":
            df[column] = pd.to_numeric(df[column], errors="coerce").astype(dtype)
        else:
            df[column] = df[column].astype(object).where(df[column].notna(), None)
    extra = [c for c in df.columns if c not in SCHEMA]
    return df[list(SCHEMA) + extra]


def merge_rows(old: pd.DataFrame, new: pd.DataFrame) -> pd.DataFrame:
    """One row per ``trial_key``: new rows win, except that an error never replaces an ok row."""
    if old.empty:
        merged = new
    elif new.empty:
        merged = old
    else:
        keep_ok = old[(old["status"] == "ok") & old["trial_key"].isin(new["trial_key"])]
        blocked = set(keep_ok["trial_key"]) & set(new.loc[new["status"] != "ok", "trial_key"])
        new = new[~new["trial_key"].isin(blocked)]
        merged = pd.concat([old[~old["trial_key"].isin(new["trial_key"])], new], ignore_index=True)
    merged = merged.drop_duplicates("trial_key", keep="last")
    return as_frame(merged.to_dict("records"))


def create_folder(path: Path, files: Mapping[str, bytes], *, folders: Sequence[str] = (),
                  taken: str) -> None:
    """Make ``path`` with its ``files`` (and empty ``folders``) in one rename.

    Built under a hidden name beside it first, so that a command killed half-way never
    leaves a folder without its manifest, and a concurrent start with the same name fails
    with ``taken`` (rename(2) replaces only an empty folder).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.", suffix=".new"))
    try:
        os.chmod(staging, DIR_MODE)
        for folder in folders:
            (staging / folder).mkdir()
        for name, data in files.items():
            atomic_write_bytes(staging / name, data)
        try:
            os.rename(staging, path)
        except OSError:
            raise ConfigError(taken) from None
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


class SweepStore:
    """The folder of one sweep and the small API over its files.

    Args:
        storage: the folder holding every sweep (``--storage``).
        name: the sweep's name (one path component; see :func:`check_sweep_name`).
    """

    def __init__(self, storage: str | Path, name: str) -> None:
        self.name = check_sweep_name(name)
        self.storage = Path(storage).expanduser().resolve()
        self.path = self.storage / self.name
        self.manifest_path = self.path / MANIFEST
        self.results_path = self.path / RESULTS
        self.routing_dir = self.path / ROUTING
        self.lock_path = self.path / LOCK
        self.ray_dir = self.path / "ray"

    # -- creation and manifest ------------------------------------------------------------
    def exists(self) -> bool:
        return self.path.exists()

    def check_new(self) -> None:
        """Refuse a name in use, and a storage folder that cannot be written."""
        if self.exists():
            raise ConfigError(f"sweep {self.name!r} already exists in {self.storage}: finish it with "
                              f"'qmoe resume {self.name}' or choose another --name")
        check_writable(self.storage)

    def create(self, manifest: Mapping[str, Any]) -> None:
        """Make the sweep's folder with its manifest, atomically.

        The folder is built under a hidden temporary name and renamed into place, so a command
        killed half-way never leaves a folder without a manifest (which neither ``sweep`` nor
        ``resume`` could use), and a concurrent start with the same name fails.
        """
        self.check_new()
        create_folder(self.path, {MANIFEST: _manifest_bytes(manifest)}, folders=(ROUTING,),
                      taken=f"sweep {self.name!r} was just created by another command: "
                            f"use 'qmoe resume {self.name}' or another --name")

    def write_manifest(self, manifest: Mapping[str, Any]) -> None:
        atomic_write_bytes(self.manifest_path, _manifest_bytes(manifest))

    def read_manifest(self) -> dict[str, Any]:
        """The manifest; ConfigError naming the known sweeps when there is none."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            if (self.path / "tune.json").is_file():
                raise ConfigError(f"{self.name!r} is a tuning run, not a sweep: continue it with "
                                  f"'qmoe tune --resume {self.name}'") from None
            known = list_sweeps(self.storage)
            hint = f"; sweeps there: {', '.join(known)}" if known else "; there are none (check --storage)"
            raise ConfigError(f"no sweep {self.name!r} in {self.storage}{hint}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{self.manifest_path}: damaged manifest ({err}); the sweep cannot be read: "
                              "restore the file from a backup, or start the sweep again under another --name") from None
        if manifest.get("version") != MANIFEST_VERSION:
            raise ConfigError(f"{self.manifest_path}: manifest version {manifest.get('version')!r} "
                              f"is not {MANIFEST_VERSION}; it was written by another qmoe version")
        return manifest

    # -- lock ---------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the sweep's lock, or raise ConfigError saying who holds it (see :func:`hold_lock`)."""
        with hold_lock(self.lock_path, f"sweep {self.name!r}"):
            self._remove_stale_temporaries()
            yield

    def _remove_stale_temporaries(self) -> None:
        # Temporary files of a writer killed mid-write: only the lock holder writes, so any
        # found now are orphans.
        for folder in (self.path, self.routing_dir):
            for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                with contextlib.suppress(OSError):
                    tmp.unlink()

    def is_locked(self) -> bool:
        """True when a command holds the sweep's lock right now."""
        return is_locked(self.lock_path)

    # -- rows ---------------------------------------------------------------------------
    def read_results(self) -> pd.DataFrame:
        """The results table (empty, with the columns, before the first row)."""
        if not self.results_path.exists():
            return as_frame([])
        try:
            table = pd.read_parquet(self.results_path)
        except Exception as err:  # pyarrow raises several unrelated types for a damaged file
            first = " ".join(str(err).split())[:200]
            raise ConfigError(f"{self.results_path}: damaged results table ({first}); restore it from a "
                              f"backup, or delete it and 'qmoe resume {self.name}' runs every trial again") from None
        return as_frame(table.to_dict("records"))

    def upsert(self, rows: list[Mapping[str, Any]]) -> pd.DataFrame:
        """Merge rows into the table (see :func:`merge_rows`) and write it atomically."""
        merged = merge_rows(self.read_results(), as_frame(rows))
        atomic_write_parquet(merged, self.results_path)
        return merged

    def ok_keys(self) -> set[str]:
        df = self.read_results()
        return set(df.loc[df["status"] == "ok", "trial_key"])

    def log_run(self, figures: Mapping[str, Any]) -> None:
        """Append one run's figures (timings, efficiency) to ``runs.jsonl`` in the sweep folder."""
        with open(self.path / RUNS, "a", encoding="utf-8") as fh:
            fh.write(json.dumps(dict(figures), sort_keys=True) + "\n")

    def read_runs(self) -> list[dict[str, Any]]:
        """The figures of every run and resume of this sweep, oldest first."""
        path = self.path / RUNS
        if not path.is_file():
            return []
        runs = []
        for line in path.read_text(encoding="utf-8").splitlines():
            with contextlib.suppress(json.JSONDecodeError):  # a line cut short by a killed command
                runs.append(json.loads(line))
        return runs

    def write_samples(self, trial_key: str, samples: pd.DataFrame) -> Path:
        """Write one trial's per-sample routing to ``routing/<trial_key>.parquet``."""
        path = self.routing_dir / f"{trial_key}.parquet"
        self.routing_dir.mkdir(exist_ok=True)
        atomic_write_parquet(samples, path)
        return path


@contextlib.contextmanager
def hold_lock(lock_path: Path, what: str) -> Iterator[None]:
    """Hold an exclusive ``flock`` on ``lock_path`` for the block, or raise ConfigError naming
    the holder (``what`` names the locked thing in the message).

    The kernel releases an ``flock`` when its process dies (even by SIGKILL), so a killed
    command never leaves a stale lock behind.
    """
    fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 512, 0).decode(errors="replace").strip() or "another process"
            raise ConfigError(f"{what} is in use by {holder}: wait for it to finish "
                              "(or stop it) before running another command on it") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {now_iso()}".encode(), 0)
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def is_locked(lock_path: Path) -> bool:
    """True when some process holds the ``flock`` on ``lock_path`` right now."""
    if not lock_path.exists():
        return False
    fd = os.open(lock_path, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        return False
    except BlockingIOError:
        return True
    finally:
        os.close(fd)


def check_writable(folder: Path) -> None:
    """ConfigError unless ``folder`` exists as a writable folder or could be created."""
    probe = folder
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if not probe.is_dir():
        raise ConfigError(f"--storage {folder}: {probe} is not a folder; pick a folder you can write to")
    try:  # os.access says yes to root even on read-only file systems: try for real
        with tempfile.TemporaryFile(dir=probe, prefix=".qmoe-probe-"):
            pass
    except OSError as err:
        raise ConfigError(f"--storage {folder}: cannot write in {probe} ({err.strerror}); "
                          "pick a folder you can write to") from None


def list_sweeps(storage: str | Path) -> list[str]:
    """Names of the sweeps under ``storage`` (folders with a manifest), sorted."""
    root = Path(storage).expanduser()
    if not root.is_dir():
        return []
    return sorted(p.name for p in root.iterdir() if not p.name.startswith(".") and (p / MANIFEST).is_file())
