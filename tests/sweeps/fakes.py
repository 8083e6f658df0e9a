"""Stand-ins for the trial function and the embedding table, for fast sweeps under real Ray.

The trainable loads a trial function by reference (``tests.sweeps.fakes:fast_trial``) or gets
a picklable callable (``functools.partial(fast_trial, seconds=0.1)``); Ray runs either
exactly like ``qmoe.trial.run_trial``. Settings come from keyword arguments or, for sweeps
started in a subprocess, from ``QMOE_FAKE_*`` variables (the runner forwards ``QMOE_*`` to
the workers):

- ``QMOE_FAKE_SECONDS``: how long a trial takes (busy CPU, like training);
- ``QMOE_FAKE_LOG``: a file that gets one line ``<trial_key> <event>`` per start/ok/fail;
- ``QMOE_FAKE_FAIL_FOLD``: trials of this fold raise (``flaky_trial``).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from qmoe.errors import DataError
from qmoe.record import TrialRecord
from qmoe.spec import TrialSpec


@dataclass(frozen=True)
class FakeResult:
    record: TrialRecord
    samples: pd.DataFrame | None


class FakeTable:
    """The parts of an EmbeddingTable a sweep uses: folds, a content hash, a name."""

    def __init__(self, n_folds: int = 5, source: str = "fake", n: int = 40, dim: int = 4) -> None:
        rng = np.random.default_rng(0)
        self.X = rng.normal(size=(n, dim)).astype(np.float32)
        self.y = np.arange(n) % 2
        self.folds = np.arange(n) % n_folds + 1
        self.clip_ids = np.array([f"c{i}" for i in range(n)])
        self.source = source

    @property
    def fold_ids(self) -> list[int]:
        return sorted(set(int(f) for f in self.folds))

    def check_fold(self, fold: int) -> None:
        if fold not in self.fold_ids:
            raise DataError(f"{self.source} has no fold {fold}; its folds: {self.fold_ids}")

    def content_hash(self) -> str:
        return hashlib.sha256(self.X.tobytes() + self.source.encode()).hexdigest()[:16]


def fake_resolver(tables: dict[str, FakeTable]):
    """A ``(dataset, data) -> table`` resolver over fixed fake tables."""

    def resolve(dataset, data):
        name = dataset if dataset is not None else Path(data).stem
        if name not in tables:
            raise DataError(f"dataset {name!r} is not prepared")
        return tables[name]

    return resolve


def _log(log: str | None, key: str, event: str) -> None:
    log = log or os.environ.get("QMOE_FAKE_LOG")
    if log:
        with open(log, "a") as fh:
            fh.write(f"{key} {event}\n")


def _busy(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def fast_trial(spec: TrialSpec, table, *, threads: int = 1, seconds: float | None = None,
               log: str | None = None) -> FakeResult:
    """A trial that burns ``seconds`` of CPU and returns a plausible record (and routing)."""
    _log(log, spec.trial_key, "start")
    _busy(float(os.environ.get("QMOE_FAKE_SECONDS", "0.05")) if seconds is None else seconds)
    rng = np.random.default_rng(spec.trial_seed)
    samples, routing = None, {}
    if spec.is_mixture:
        # Curiosity (alpha > 0) moves samples to the last expert: shares differ with alpha.
        p_last = min(0.9, 0.2 + spec.alpha)
        probs = [(1 - p_last) / (len(spec.experts) - 1)] * (len(spec.experts) - 1) + [p_last]
        experts = rng.choice(list(spec.experts), size=20, p=probs)
        samples = pd.DataFrame({"clip_id": [f"c{i}" for i in range(20)], "expert": experts,
                                "confidence": rng.uniform(0.3, 1.0, 20), "uncertainty": rng.uniform(0, 0.1, 20),
                                "correct": rng.uniform(size=20) > 0.3})
        shares = samples["expert"].value_counts(normalize=True)
        routing = {"routing": json.dumps({e: {"share": float(shares.get(e, 0.0))} for e in spec.experts})}
    record = TrialRecord(**TrialRecord.identity(spec), f1_macro=float(rng.uniform(0.6, 0.9)),
                         accuracy=float(rng.uniform(0.6, 0.9)), latency_p50_us=100.0, size_kb=10.0,
                         **routing)
    _log(log, spec.trial_key, "ok")
    return FakeResult(record=record, samples=samples)


def flaky_trial(spec: TrialSpec, table, *, threads: int = 1, fail_fold: int | None = None,
                seconds: float | None = None, log: str | None = None) -> FakeResult:
    """Like :func:`fast_trial`, but every trial of ``fail_fold`` raises RuntimeError."""
    fold = fail_fold if fail_fold is not None else int(os.environ.get("QMOE_FAKE_FAIL_FOLD", "0"))
    if spec.fold == fold:
        _log(log, spec.trial_key, "fail")
        raise RuntimeError(f"injected fault in fold {fold}")
    return fast_trial(spec, table, threads=threads, seconds=seconds, log=log)


def config_error_trial(spec: TrialSpec, table, *, threads: int = 1) -> FakeResult:
    """A trial that fails with a qmoe error (deterministic: recorded without retries)."""
    from qmoe.errors import TrainingError

    raise TrainingError("loss diverged to NaN at epoch 3")
