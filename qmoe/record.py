"""The immutable record one trial produces: one row of the results table (DESIGN §7)."""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from datetime import datetime, timezone
from importlib import metadata
from typing import Any

import qmoe
from qmoe.spec import TrialSpec, paper_name


def now_iso() -> str:
    """UTC time to the millisecond: the format of ``started_at`` / ``finished_at``."""
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def package_version(name: str) -> str:
    """Installed version of a distribution, without importing it ('' when absent)."""
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return ""


@dataclass(frozen=True, kw_only=True)
class TrialRecord:
    """One results-table row. Measurements are ``None`` on an errored trial."""

    # -- identity and configuration
    trial_key: str
    dataset: str
    fold: int
    model: str  # "q4" or "bitnet,q4,q8"
    paper_name: str  # "Q4-Base", "BitNet-Q4/8-QMoE-C"
    n_experts: int
    alpha: float
    top_k: int
    protocol: str
    seed: int  # sweep seed
    trial_seed: int  # seed actually used, derived from seed and trial_key
    split_seed: int | None = None  # seeded fold reassignment (repeated k-fold); None = the table's folds
    curiosity: str = "kl"  # kl | entropy (the curiosity variant; kl where alpha = 0)
    hparams: str  # JSON of the TrainConfig used
    hparams_source: str
    # -- data
    n_classes: int | None = None
    embedding_dim: int | None = None
    n_train: int | None = None
    n_val: int | None = None
    n_test: int | None = None
    # -- quality on the test fold (deployed form)
    f1_macro: float | None = None
    f1_weighted: float | None = None
    accuracy: float | None = None
    val_f1_macro: float | None = None  # best validation macro-F1 (the checkpoint chosen)
    # -- speed (deployed form, batch 1, one thread pinned to one core; qmoe.latency)
    deploy_form: str | None = None
    latency_mode: str | None = None  # in-sweep (timed in the trial) | isolated (after the sweep)
    latency_mean_us: float | None = None
    latency_std_us: float | None = None
    latency_p50_us: float | None = None
    latency_p99_us: float | None = None
    latency_runs: int | None = None  # timed calls (until the median's CI met its precision)
    latency_p50_ci_us: float | None = None  # half-width of the 95% CI of the median
    latency_cpu: int | None = None  # the core the calls were pinned to
    latency_load1: float | None = None  # 1-minute load average after the timing
    latency_others_cores: float | None = None  # other processes' CPU use during the timing (cores)
    latency_core_others: float | None = None  # share of the pinned core used by other processes
    throughput_bs256: float | None = None  # samples per second at batch 256, one thread
    concurrent_trials: int | None = None  # most trials of the sweep running at once during this one
    # -- the in-sweep figures of a row whose latency_* were replaced by an isolated timing
    latency_insweep_mean_us: float | None = None
    latency_insweep_std_us: float | None = None
    latency_insweep_p50_us: float | None = None
    latency_insweep_p99_us: float | None = None
    latency_insweep_runs: int | None = None
    latency_insweep_p50_ci_us: float | None = None
    latency_insweep_cpu: int | None = None
    latency_insweep_load1: float | None = None
    latency_insweep_others_cores: float | None = None
    latency_insweep_core_others: float | None = None
    # -- energy (CodeCarbon offline tracker)
    train_energy_wh: float | None = None
    train_co2_g: float | None = None
    energy_per_inference_mj: float | None = None
    co2_per_inference_ug: float | None = None
    energy_method: str | None = None  # rapl | cpu-load | constant | off
    # -- resources
    peak_rss_mb: float | None = None
    params: int | None = None
    size_kb: float | None = None  # deployed size, 1 KB = 1000 bytes
    compression: float | None = None  # fp32 bytes / deployed bytes
    train_seconds: float | None = None
    epochs: int | None = None
    best_epoch: int | None = None
    # -- routing (mixtures): JSON {expert: {share, confidence, kl, uncertainty, accuracy}}
    routing: str | None = None
    routing_entropy: float | None = None  # entropy (nats) of the expert shares
    # -- bookkeeping
    status: str = "ok"  # ok | error
    error: str = ""
    node: str = ""
    started_at: str = ""
    finished_at: str = ""
    qmoe_version: str = qmoe.__version__
    torch_version: str = dataclasses.field(default_factory=lambda: package_version("torch"))
    ray_version: str = dataclasses.field(default_factory=lambda: package_version("ray"))

    @classmethod
    def columns(cls) -> list[str]:
        """The results-table columns, in order."""
        return [f.name for f in dataclasses.fields(cls)]

    def to_row(self) -> dict[str, Any]:
        """The record as a plain dict (column -> value)."""
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        """One JSON object; non-finite floats become null."""
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v)
               for k, v in self.to_row().items()}
        return json.dumps(row, sort_keys=False)

    @staticmethod
    def identity(spec: TrialSpec) -> dict[str, Any]:
        """The identity/config fields of a spec, shared by ok and error records."""
        assert spec.train is not None
        return {
            "trial_key": spec.trial_key, "dataset": spec.dataset, "fold": int(spec.fold),
            "model": spec.model, "paper_name": paper_name(spec.experts, spec.alpha),
            "n_experts": len(spec.experts), "alpha": float(spec.alpha),
            "top_k": spec.train.top_k if spec.is_mixture else 1, "protocol": spec.protocol,
            "seed": int(spec.seed), "trial_seed": spec.trial_seed,
            "split_seed": None if spec.split_seed is None else int(spec.split_seed),
            "curiosity": spec.curiosity,
            "hparams": json.dumps(spec.train.to_dict(), sort_keys=True),
            "hparams_source": spec.hparams_source,
        }

    @classmethod
    def failed(cls, spec: TrialSpec, error: str, **extra: Any) -> TrialRecord:
        """An error row: the spec's identity, ``status='error'`` and the error text."""
        return cls(**cls.identity(spec), status="error", error=error, **extra)
