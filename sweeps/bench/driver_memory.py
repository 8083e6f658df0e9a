"""Does the driver's memory stay flat over a long sweep? (issue 7, a figure of ``qmoe bench``)

:func:`driver_memory_profile` runs a sweep of instant trials (no training: :func:`instant_trial`
returns a fixed record at once, so the driver's own bookkeeping is all that grows: Tune's
trial objects, the recorder, the results table written after each trial) and samples this
process's RSS while it runs.
"""

from __future__ import annotations

import dataclasses
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psutil

from qmoe.layout import RESULTS
from qmoe.record import TrialRecord
from qmoe.spec import TrialSpec

MB = 1024 * 1024
EARLY = 5  # trials finished when the first figure is taken


def instant_trial(spec: TrialSpec, table: Any, *, threads: int = 1) -> Any:
    """A trial function that trains nothing: a plausible ok record, at once."""
    from qmoe.trial import TrialResult

    record = TrialRecord(**TrialRecord.identity(spec), f1_macro=0.5, accuracy=0.5, latency_p50_us=1.0,
                         size_kb=1.0)
    return TrialResult(record=record, samples=None)


def _plan(n_trials: int) -> Any:
    """``n_trials`` distinct trials on synth: the bits grid (40 trials), repeated with new seeds."""
    from qmoe.sweeps.builtin import bits_spec
    from qmoe.sweeps.plan import plan_sweep
    from qmoe.sweeps.overrides import apply_overrides

    plan = plan_sweep(bits_spec())
    trials = list(plan.trials)
    seed = 0
    while len(trials) < n_trials:
        seed += 1
        trials += plan_sweep(apply_overrides(bits_spec(), seed=seed)).trials
    return dataclasses.replace(plan, trials=tuple(trials[:n_trials]))


def _rows(path: Path) -> int:
    """Rows of a results file from its footer (no table is loaded); 0 before the first write."""
    import pyarrow.parquet as pq

    try:
        return pq.read_metadata(path).num_rows
    except (OSError, ValueError):
        return 0


def driver_memory_profile(n_trials: int = 40, *, address: str | None = None,
                          interval: float = 0.02) -> dict[str, float | int]:
    """Run an ``n_trials`` sweep of :func:`instant_trial` and report this driver's RSS.

    Uses the Ray already running in this process if there is one, else ``address``, else an
    embedded local Ray (started and stopped here). Results go to a temporary folder.

    Args:
        n_trials: trials in the sweep (at least 6).
        address: as ``--address`` (None: embedded, or the Ray this process already runs).
        interval: seconds between RSS samples.

    Returns:
        ``trials``; ``rss_after_5_mb`` (driver RSS when the 5th row was written);
        ``rss_end_mb`` (the highest RSS once every row was written); ``growth`` (end / after 5
        - 1, e.g. 0.03 for +3%); ``seconds`` (the sweep's wall time).
    """
    from qmoe.sweeps.engine import RunOptions
    from qmoe.sweeps.runner import run_sweep

    if n_trials <= EARLY:
        raise ValueError(f"n_trials must be more than {EARLY}")
    plan = _plan(n_trials)
    proc = psutil.Process()
    samples: list[tuple[int, int]] = []  # (rows written, rss bytes)
    stop = threading.Event()
    with tempfile.TemporaryDirectory(prefix="qmoe-memory-") as storage:
        results = Path(storage) / "memory" / RESULTS

        def sample() -> None:
            while not stop.is_set():
                rows = _rows(results)
                samples.append((rows, proc.memory_info().rss))
                if rows >= n_trials:
                    return
                stop.wait(interval)

        sampler = threading.Thread(target=sample, name="rss-sampler", daemon=True)
        options = RunOptions(storage=Path(storage), address=address, quiet=True,
                             trial_fn=f"{__name__}:instant_trial")
        t0 = time.perf_counter()
        sampler.start()
        try:
            outcome = run_sweep(plan, name="memory", options=options)
        finally:
            stop.set()
            sampler.join()
        seconds = time.perf_counter() - t0
    if outcome.ok != n_trials:
        raise RuntimeError(f"the memory sweep finished {outcome.ok} of {n_trials} trials")
    early = next(rss for rows, rss in samples if rows >= EARLY)
    end = max((rss for rows, rss in samples if rows >= n_trials), default=proc.memory_info().rss)
    return {"trials": n_trials, "rss_after_5_mb": round(early / MB, 1), "rss_end_mb": round(end / MB, 1),
            "growth": round(end / early - 1, 4), "seconds": round(seconds, 1)}
