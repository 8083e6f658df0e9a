"""Real trials timed at ESC-50 size (``qmoe bench``; issue 8: a single-model trial <= 60 s on
one core).

Each model runs one complete :func:`~qmoe.trial.run_trial` (train with early stopping, deploy,
latency, throughput, energy when asked, record) on the benchmark-sized table of
:mod:`qmoe.data.sized` -- 2,000 x 1,536, 50 classes -- one after another in this process, on one
thread. A row splits the trial's wall time into training (the loop's own clock) and the rest
(split, standardisation, deployment and the measurements). The first trial of a process also
pays one-time costs (numba kernels loaded from their cache, CodeCarbon's first start), as the
first trial of a sweep worker does. :func:`fresh_trial_memory` runs one trial alone in a fresh
process instead, for the memory a trial itself needs over a worker's imports.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from qmoe.bench_targets import SINGLE_TRIAL_TARGET_S
from qmoe.data.sized import SizedConfig, sized_table
from qmoe.errors import QmoeError
from qmoe.measure import rss_mb, torch_threads
from qmoe.spec import TrialSpec
from qmoe.trial import run_trial

log = logging.getLogger(__name__)

#: Every single-model quantizer, then the paper's BitNet-Q4/8 mixture (curious, alpha 0.3).
DEFAULT_MODELS = ("fp32", "q1", "q2", "q4", "q8", "q16", "bitnet", "ptq8", "binary", "bitnet,q4,q8")
MIXTURE_ALPHA = 0.3  # curiosity strength of the mixtures in the list


@dataclass(frozen=True)
class TrialTimingRow:
    """One trial of one model on the sized table, timed end to end."""

    model: str  # quantizer name, or the experts of a mixture joined by commas
    seconds: float  # wall time of the whole run_trial call
    train_seconds: float  # the training loop's own wall time (every epoch, validation included)
    epochs: int  # epochs run before early stopping (or the cap)
    steps: int  # optimizer steps: epochs x batches per epoch
    batch: int  # training batch size
    seconds_per_epoch: float  # train_seconds / epochs
    measure_seconds: float  # seconds - train_seconds: split, deploy, latency, throughput, energy
    f1_macro: float  # test-fold macro-F1 of the deployed model
    peak_rss_mb: float  # peak resident memory during the trial (the record's figure)
    rss_before_mb: float = float("nan")  # resident memory as the trial started (imports, table, earlier trials)

    @property
    def peak_increment_mb(self) -> float:
        """What the trial itself added at its peak, over what the process held as it started."""
        return self.peak_rss_mb - self.rss_before_mb

    @property
    def is_mixture(self) -> bool:
        return "," in self.model

    @property
    def meets_target(self) -> bool | None:
        """Single models: whether the trial took at most :data:`SINGLE_TRIAL_TARGET_S`;
        None for mixtures (the target names single models)."""
        return None if self.is_mixture else self.seconds <= SINGLE_TRIAL_TARGET_S


def trial_spec(model: str, *, fold: int = 1, measure_energy: bool = True,
               latency_runs: int = 200) -> TrialSpec:
    """The spec of one timed trial: the default settings of the model's kind, on the sized table."""
    experts = tuple(model.split(","))
    return TrialSpec(dataset="esc50-sized", fold=fold, experts=experts,
                     alpha=MIXTURE_ALPHA if len(experts) > 1 else 0.0,
                     measure_energy=measure_energy, latency_runs=latency_runs)


def bench_trials(cache_dir: str | Path, models: Sequence[str] = DEFAULT_MODELS, *,
                 config: SizedConfig = SizedConfig(), fold: int = 1, measure_energy: bool = True,
                 latency_runs: int = 200, between: Callable[[], object] | None = None) -> list[TrialTimingRow]:
    """Run one real trial per model on the benchmark-sized table, one thread, and time each.

    Args:
        cache_dir: where the sized table is written (built on first use, then reused), e.g. a
            temporary folder.
        models: quantizer names (``"q4"``) or mixtures (``"bitnet,q4,q8"``; curiosity
            :data:`MIXTURE_ALPHA`).
        config: shape of the table (default: ESC-50 with EfficientNet-B3 embeddings).
        fold: the test fold of every trial.
        measure_energy: run CodeCarbon around training and inference, as sweeps do.
        latency_runs: timed batch-1 runs per trial (>= 200 for a reported figure).
        between: called before each trial, outside its timing (e.g.
            :meth:`qmoe.bench_seeds.RateProbe.sample`: rates measured among the trials).

    Returns:
        One :class:`TrialTimingRow` per model, in the order given.

    Raises:
        QmoeError: an unknown quantizer name or an unusable table configuration.
    """
    start = time.perf_counter()
    table = sized_table(cache_dir, config)
    log.info("sized table %d x %d ready in %.1f s", len(table.y), table.dim, time.perf_counter() - start)
    rows = []
    with torch_threads(1):
        for model in models:
            spec = trial_spec(model, fold=fold, measure_energy=measure_energy, latency_runs=latency_runs)
            if between is not None:
                between()
            before = rss_mb()
            start = time.perf_counter()
            record = run_trial(spec, table, threads=1).record
            seconds = time.perf_counter() - start
            train = float(record.train_seconds)
            epochs = int(record.epochs)
            batch = spec.train.batch_size
            rows.append(TrialTimingRow(
                model=model, seconds=seconds, train_seconds=train, epochs=epochs,
                steps=epochs * math.ceil(int(record.n_train) / batch), batch=batch,
                seconds_per_epoch=train / max(epochs, 1), measure_seconds=seconds - train,
                f1_macro=float(record.f1_macro), peak_rss_mb=float(record.peak_rss_mb),
                rss_before_mb=before))
            log.info("%s: %.1f s (%d epochs)", model, seconds, epochs)
    return rows


#: What a sweep worker has imported when its first trial starts (Ray Tune's trainable, the trial
#: and its kernels).
WORKER_IMPORTS = ("ray.tune", "qmoe.trial", "qmoe.native.kernels.drivers")
#: Epochs of a memory probe: a trial's buffers are all allocated in its first epoch (training
#: keeps one best-model copy, not a history), so its peak does not grow with more.
MEMORY_EPOCHS = 3


@dataclass(frozen=True)
class TrialMemoryRow:
    """Resident memory of one trial run alone in a fresh process, as in a sweep worker (MB)."""

    model: str
    imports_mb: float  # after importing :data:`WORKER_IMPORTS`
    table_mb: float  # what loading the table added
    peak_mb: float  # peak during the trial (training, deployment, measurements)
    epochs: int  # epochs the trial ran
    imported: tuple[str, ...] = WORKER_IMPORTS  # what the process imported first

    @property
    def increment_mb(self) -> float:
        """The trial's own peak over what the process held as it started (imports and table)."""
        return self.peak_mb - self.imports_mb - self.table_mb


def fresh_trial_memory(cache_dir: str | Path, model: str, *, config: SizedConfig = SizedConfig(),
                       epochs: int = MEMORY_EPOCHS) -> TrialMemoryRow:
    """Run one trial of ``model`` (``epochs`` epochs) on the sized table in a fresh Python process
    that first imports what a sweep worker does, and read its memory there.

    In-process trials (:func:`bench_trials`) run in a heap that earlier work already grew, so
    their peak over start hides what a trial needs; a fresh process shows it.

    Raises:
        QmoeError: the probe failed.
    """
    args = json.dumps({"cache_dir": str(cache_dir), "model": model, "epochs": epochs,
                       "config": dataclasses.asdict(config)})
    code = f"from qmoe.bench_trial import _memory_probe; _memory_probe({args!r})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise QmoeError(f"the memory probe of {model} failed (exit {proc.returncode}): {last}")
    figures = json.loads(proc.stdout.strip().splitlines()[-1])
    return TrialMemoryRow(model=model, **figures)


def _memory_probe(raw: str) -> None:
    """The child of :func:`fresh_trial_memory`: prints its figures as one JSON line."""
    import importlib

    args = json.loads(raw)
    for module in WORKER_IMPORTS:
        importlib.import_module(module)
    imports = rss_mb()
    table = sized_table(args["cache_dir"], SizedConfig(**args["config"]))
    loaded = rss_mb()
    spec = trial_spec(args["model"])
    assert spec.train is not None
    spec = dataclasses.replace(spec, train=dataclasses.replace(spec.train, max_epochs=args["epochs"]))
    with torch_threads(1):
        # the record's peak: from after the split and standardisation to the end of the trial
        record = run_trial(spec, table, threads=1).record
    peak = max(float(record.peak_rss_mb), loaded)
    print(json.dumps({"imports_mb": imports, "table_mb": loaded - imports, "peak_mb": peak,
                      "epochs": int(record.epochs)}))
