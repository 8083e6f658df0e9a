"""The folder of one run -- a sweep or a tuning run -- under the storage: ``STORAGE/NAME/``.

What both kinds share, written once: the name (one path component), the folder created with
its manifest in one rename, the manifest read back, the lock held by the one command working
on the folder, and atomic writes. :class:`~qmoe.sweeps.store.SweepStore` and
:class:`~qmoe.sweeps.tune.tune_store.TuneStore` add their own files (see :mod:`qmoe.layout`).

Every file is written to a temporary name and moved into place (``os.replace``), so a killed
process leaves the previous complete version, never half a file; the folder itself appears
with its manifest in one rename.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from qmoe import layout
from qmoe.errors import ConfigError
from qmoe.record import now_iso

from qmoe.sweeps.parse import check_sweep_name


def _umask() -> int:
    umask = os.umask(0)  # the only way to read it; done once, at import, before any thread
    os.umask(umask)
    return umask


#: mkstemp/mkdtemp make 0600 files and 0700 folders; results on shared storage must be
#: readable like any other file.
FILE_MODE = 0o666 & ~_umask()
DIR_MODE = 0o777 & ~_umask()

#: How to continue each kind of folder (named in messages).
CONTINUE = {layout.SWEEP: "qmoe resume {name}", layout.TUNING_RUN: "qmoe tune --resume {name}"}


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[tuple[int, str]]:
    """A temporary file beside ``path`` (its descriptor and name) that the block fills; then
    synced and moved onto ``path``. On any error (or a kill signal) the temporary file goes."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, FILE_MODE)
        yield fd, tmp
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a synced temporary file and an atomic rename."""
    with _replacing(path) as (fd, _), os.fdopen(fd, "wb") as fh:
        fh.write(data)


def atomic_write_parquet(df: Any, path: Path) -> None:
    """``df.to_parquet`` to a temporary file in the same folder, then ``os.replace``."""
    with _replacing(path) as (fd, tmp):
        os.close(fd)
        df.to_parquet(tmp, index=False)


def manifest_bytes(manifest: Mapping[str, Any]) -> bytes:
    """A manifest as written: JSON with the layout's ``version`` first."""
    return json.dumps({"version": layout.MANIFEST_VERSION, **manifest}, indent=1).encode()


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


class RunFolder:
    """``STORAGE/NAME/`` of one run, and what every kind does with it.

    A subclass says what it is (:attr:`KIND`, one of :mod:`qmoe.layout`'s kinds), its manifest
    file and the empty folders it starts with.

    Args:
        storage: the folder holding every sweep and tuning run (``--storage``).
        name: the run's name (one path component; see :func:`check_sweep_name`).
    """

    KIND: ClassVar[str]
    MANIFEST: ClassVar[str]
    FOLDERS: ClassVar[tuple[str, ...]] = ()  # made empty with the folder; stale temporaries removed there too
    LIST: ClassVar[Callable[[str | Path], list[str]]]  # the names of this kind under a storage (a staticmethod)

    def __init__(self, storage: str | Path, name: str) -> None:
        self.name = check_sweep_name(name)
        self.storage = Path(storage).expanduser().resolve()
        self.path = self.storage / self.name
        self.manifest_path = self.path / self.MANIFEST
        self.lock_path = self.path / layout.LOCK
        self.ray_dir = self.path / layout.RAY

    def _continue(self) -> str:
        return CONTINUE[self.KIND].format(name=self.name)

    # -- creation and manifest ------------------------------------------------------------
    def check_new(self) -> None:
        """Refuse a name in use, and a storage folder that cannot be written."""
        if self.path.exists():
            raise ConfigError(f"{self.KIND} {self.name!r} already exists in {self.storage}: continue it with "
                              f"'{self._continue()}' or choose another --name")
        check_writable(self.storage)

    def create(self, manifest: Mapping[str, Any]) -> None:
        """Make the folder with its manifest, atomically (see :func:`create_folder`): a command
        killed half-way never leaves a folder without a manifest (which no command could use),
        and a concurrent start with the same name fails."""
        self.check_new()
        create_folder(self.path, {self.MANIFEST: manifest_bytes(manifest)}, folders=self.FOLDERS,
                      taken=f"{self.KIND} {self.name!r} was just created by another command: "
                            f"use '{self._continue()}' or another --name")

    def read_manifest(self) -> dict[str, Any]:
        """The manifest; ConfigError naming the runs of this kind there when there is none."""
        try:
            manifest = json.loads(self.manifest_path.read_text())
        except FileNotFoundError:
            other = layout.kind_of(self.path)
            if other is not None and other != self.KIND:
                raise ConfigError(f"{self.name!r} is a {other}, not a {self.KIND}: continue it with "
                                  f"'{CONTINUE[other].format(name=self.name)}'") from None
            known = self.LIST(self.storage)
            hint = f"; {self.KIND}s there: {', '.join(known)}" if known else "; there are none (check --storage)"
            raise ConfigError(f"no {self.KIND} {self.name!r} in {self.storage}{hint}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{self.manifest_path}: damaged manifest ({err}); the {self.KIND} cannot be read: "
                              "restore the file from a backup, or start again under another --name") from None
        if manifest.get("version") != layout.MANIFEST_VERSION:
            raise ConfigError(f"{self.manifest_path}: manifest version {manifest.get('version')!r} "
                              f"is not {layout.MANIFEST_VERSION}; it was written by another qmoe version")
        return manifest

    # -- lock -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def lock(self) -> Iterator[None]:
        """Hold the folder's lock, or raise ConfigError saying who holds it (see :func:`hold_lock`).

        Temporary files of a writer killed mid-write are removed then: only the lock holder
        writes, so any found now are orphans.
        """
        with hold_lock(self.lock_path, f"{self.KIND} {self.name!r}"):
            for folder in (self.path, *(self.path / f for f in self.FOLDERS)):
                for tmp in folder.glob(".*.tmp") if folder.is_dir() else ():
                    with contextlib.suppress(OSError):
                        tmp.unlink()
            yield

    def is_locked(self) -> bool:
        """True when a command holds the folder's lock right now."""
        return is_locked(self.lock_path)


class SweepFolder(RunFolder):
    """What a sweep's folder is (its kind, manifest and empty folders), without its tables:
    :class:`~qmoe.sweeps.store.SweepStore` adds those; a command checks a new sweep's name
    and storage with this class before pandas or Ray load."""

    KIND = layout.SWEEP
    MANIFEST = layout.SWEEP_MANIFEST
    FOLDERS = (layout.ROUTING,)
    LIST = staticmethod(layout.list_sweeps)
