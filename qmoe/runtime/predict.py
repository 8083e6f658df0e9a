"""``qmoe predict``: an exported model over a table's rows, and what that costs the process.

Torch-free, as the rest of :mod:`qmoe.runtime`: numpy, pyarrow and the compiled kernels.
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from qmoe.errors import ConfigError
from qmoe.runtime.format import read_model_file
from qmoe.runtime.model import ready
from qmoe.runtime.table import read_rows

#: Timed batch-1 calls of ``--stats`` (after warm-up), as the trials time them (DESIGN §6).
LATENCY_RUNS = 200
WARMUP_RUNS = 20


@dataclass(frozen=True, kw_only=True)
class PredictStats:
    """What running the model cost this process.

    Attributes:
        file_bytes: size of the ``.qmoe`` file.
        startup_s: process start -> model loaded and ready (interpreter, imports, load, and
            reading the table, which comes first so that a bad table fails at once).
        load_s: reading, validating and lowering the file, and the kernels' first call (which
            loads their machine code from numba's cache): part of ``startup_s``.
        latency_p50_us, latency_p99_us, latency_mean_us: one row per call, one thread.
        peak_rss_mb: the process's peak resident memory (MiB), after predicting every row.
        private_mb, shared_mb: the resident memory at the end, split into the process's own
            pages and file-backed ones (shared libraries, mostly LLVM and Arrow: shared with
            every other process mapping them); None where ``/proc`` does not say.
        torch_imported: whether torch was in ``sys.modules`` (it must not be).
        numba_imported: whether numba was (not with the ahead-of-time kernels).
        kernels: which compiled drivers ran (:attr:`qmoe.runtime.Model.kernels`).
    """

    file_bytes: int
    startup_s: float | None
    load_s: float
    latency_p50_us: float
    latency_p99_us: float
    latency_mean_us: float
    peak_rss_mb: float
    private_mb: float | None
    shared_mb: float | None
    torch_imported: bool
    numba_imported: bool
    kernels: str

    def render(self) -> str:
        start = "-" if self.startup_s is None else f"{self.startup_s:.2f} s"
        split = "" if self.private_mb is None else f" (now {self.private_mb:.0f} private + {self.shared_mb:.0f} shared-library)"
        return (f"file {self.file_bytes / 1000:.1f} KB | start-up {start} (load {self.load_s * 1e3:.0f} ms) | "
                f"batch-1 latency p50 {self.latency_p50_us:.1f} us, p99 {self.latency_p99_us:.1f} us | "
                f"peak RSS {self.peak_rss_mb:.0f} MB{split} | torch imported: {'yes' if self.torch_imported else 'no'}, "
                f"numba: {'yes' if self.numba_imported else 'no'} | kernels: {self.kernels}")


@dataclass(frozen=True, kw_only=True, eq=False)
class PredictResult:
    """The predictions (a pyarrow table: clip_id, pred, label_name[, expert]), accuracy when
    the table has labels, and the stats when asked for."""

    table: Any  # pyarrow.Table
    accuracy: float | None
    stats: PredictStats | None


def process_age_s() -> float | None:
    """Seconds since this process started (Linux ``/proc``; None elsewhere)."""
    try:
        with open("/proc/self/stat") as fh:
            start_ticks = int(fh.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as fh:
            uptime = float(fh.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - start_ticks / os.sysconf("SC_CLK_TCK")


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def rss_split_mib() -> tuple[float | None, float | None]:
    """Resident memory now: (anonymous, file-backed) MiB from ``/proc/self/status`` (Linux)."""
    found: dict[str, float] = {}
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                key, _, rest = line.partition(":")
                if key in ("RssAnon", "RssFile"):
                    found[key] = int(rest.split()[0]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return found.get("RssAnon"), found.get("RssFile")


def batch1_latency_us(model: Any, X: np.ndarray, runs: int = LATENCY_RUNS) -> np.ndarray:
    """Microseconds of ``runs`` one-row predictions (rows cycled), after a warm-up."""
    rows = [np.ascontiguousarray(X[i: i + 1]) for i in range(min(len(X), runs))]  # (1, D) each
    for i in range(WARMUP_RUNS):
        model.predict(rows[i % len(rows)])
    times = np.empty(runs)
    for i in range(runs):
        t0 = time.perf_counter_ns()
        model.predict(rows[i % len(rows)])
        times[i] = (time.perf_counter_ns() - t0) / 1e3
    return times


def predict_file(model_path: str | Path, data: str | Path, *, folds: tuple[int, ...] | None = None,
                 stats: bool = False, kernels: str = "auto",
                 announce: Callable[[str], None] | None = None) -> PredictResult:
    """Load ``model_path`` (with ``kernels``, see :func:`qmoe.runtime.load`), predict every row
    of ``data`` (of ``folds``), optionally measure.

    Raises:
        QmoeError: a bad model file or table (one line).
    """
    import pyarrow as pa

    t0 = time.perf_counter()
    contents = read_model_file(model_path)
    load_s = time.perf_counter() - t0
    rows = read_rows(data, contents.in_dim, folds=folds)  # a bad table fails before any compiling
    t0 = time.perf_counter()
    model = ready(contents, model_path, kernels, announce)
    load_s += time.perf_counter() - t0
    startup = process_age_s()
    pred = model.predict(rows.X)
    columns = {"clip_id": _strings(rows.clip_ids.tolist()), "pred": _int64s(pred.labels),
               "label_name": _strings([model.class_names[i] for i in pred.labels])}
    if pred.experts is not None:
        columns["expert"] = _strings([model.expert_names[i] for i in pred.experts])
    accuracy = None if rows.labels is None else float((rows.labels == pred.labels).mean())
    measured = None
    if stats:
        lat = batch1_latency_us(model, rows.X)
        private, shared = rss_split_mib()
        measured = PredictStats(
            file_bytes=Path(model_path).expanduser().stat().st_size, startup_s=startup, load_s=load_s,
            latency_p50_us=float(np.percentile(lat, 50)), latency_p99_us=float(np.percentile(lat, 99)),
            latency_mean_us=float(lat.mean()), peak_rss_mb=peak_rss_mib(), private_mb=private, shared_mb=shared,
            torch_imported="torch" in sys.modules, numba_imported="numba" in sys.modules,
            kernels=model.kernels)
    return PredictResult(table=pa.Table.from_arrays(list(columns.values()), names=list(columns)),
                         accuracy=accuracy, stats=measured)


# Arrow arrays built from their buffers: ``pyarrow.array`` imports pandas when it is installed
# (~40 MB, ~0.5 s), which ``qmoe predict`` avoids.
def _int64s(values: np.ndarray) -> Any:
    import pyarrow as pa

    data = np.ascontiguousarray(values, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(data), [None, pa.py_buffer(data)])


def _strings(values: list[str]) -> Any:
    import pyarrow as pa

    encoded = [v.encode() for v in values]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    offsets[1:] = np.cumsum([len(e) for e in encoded])
    return pa.LargeStringArray.from_buffers(len(encoded), pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded)))


def check_out(out: str | Path) -> Path:
    """``--out`` as a predictions file, refused before any work if its suffix is unknown.

    Raises:
        ConfigError: not ``.csv`` or ``.parquet``.
    """
    out = Path(out).expanduser()
    if out.suffix.lower() not in (".csv", ".parquet"):
        raise ConfigError(f"--out {out}: give a .csv or .parquet file")
    return out


def write_predictions(table: Any, out: str | Path) -> Path:
    """Write the predictions as CSV or Parquet (by ``out``'s suffix), atomically.

    Raises:
        ConfigError: another suffix, or an unwritable location.
    """
    import uuid

    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    out = check_out(out)
    suffix = out.suffix.lower()
    tmp = out.parent / f".{out.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".csv":
            pcsv.write_csv(table, tmp)
        else:
            pq.write_table(table, tmp)
        os.replace(tmp, out)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ConfigError(f"--out {out}: cannot write ({err.strerror or err}); pick a writable location") from None
    return out
