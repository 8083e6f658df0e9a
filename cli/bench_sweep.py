"""The sweep and extraction parts of ``qmoe bench`` (they need Ray, so they live apart).

The sweep benchmark runs the real command in a fresh process, so that "time to the first
trial" includes Python start-up, imports and Ray's start, as a user sees it.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.table import Table

from cli.render import fmt
from qmoe.errors import QmoeError
from sweeps.store import SweepStore

# 8 short single-model trials (q4 + the fp32/bitnet/ptq8 references, folds 1-2) on synth.
SWEEP_ARGS = ["sweep", "bits", "--values", "4", "--folds", "1,2", "--quiet"]


def sweep_bench() -> Table:
    """Run the 8-trial sweep in a subprocess; efficiency and time to the first trial."""
    with tempfile.TemporaryDirectory(prefix="qmoe-bench-") as tmp:
        cmd = [sys.executable, "-m", "cli.main", *SWEEP_ARGS, "--name", "bench", "--storage", tmp]
        t0 = time.time()
        proc = subprocess.run(cmd, capture_output=True, text=True, env=dict(os.environ))
        wall = time.time() - t0
        runs = SweepStore(Path(tmp), "bench").read_runs() if proc.returncode == 0 else []
        if not runs:
            last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
            raise QmoeError(f"the benchmark sweep failed (exit {proc.returncode}): {last}")
    run = runs[-1]
    table = Table(title=f"Sweep on {run['slots']} slots: {run['ran']} trials "
                        f"(`qmoe {' '.join(SWEEP_ARGS)}`), embedded local Ray")
    for col in ("trials", "sum of trial s", "Tune wall s", "command wall s", "efficiency",
                "first trial running after s"):
        table.add_column(col)
    table.add_row(str(run["ran"]), fmt(run["trial_seconds"]), fmt(run["wall_seconds"]), fmt(wall),
                  fmt(run["efficiency"]), fmt(run["first_trial_seconds"]))
    table.caption = ("efficiency = (sum of trial seconds / slots) / Tune wall seconds; "
                     "first trial = from the command's start")
    return table


def extraction_bench() -> Table:
    """Clips per second of feature extraction on Ray (2 actors here)."""
    from sweeps.extract import extraction_throughput

    table = Table(title="Feature extraction on Ray (5 s clips at 44.1 kHz; timm with random weights)")
    table.add_column("backbone", no_wrap=True)
    for col in ("clips", "workers", "seconds", "clips/s", "start-up s", "steady clips/s"):
        table.add_column(col)
    for r in extraction_throughput():
        table.add_row(r.backbone, str(r.clips), str(r.workers), fmt(r.seconds), fmt(r.clips_per_s),
                      fmt(r.startup_s), fmt(r.steady_clips_per_s))
    return table


def memory_bench(n_trials: int = 40) -> Table:
    """Driver RSS of a long sweep (fast stand-in trials): after 5 trials vs at the end."""
    from sweeps.bench_memory import driver_memory_profile

    prof = driver_memory_profile(n_trials)
    table = Table(title=f"Driver memory over a {prof['trials']}-trial sweep (fast stand-in trials)")
    for col in ("RSS after 5 trials MB", "RSS at the end MB", "growth", "seconds"):
        table.add_column(col)
    table.add_row(fmt(prof["rss_after_5_mb"]), fmt(prof["rss_end_mb"]), f"{prof['growth']:+.1%}",
                  fmt(prof["seconds"]))
    return table
