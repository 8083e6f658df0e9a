"""What one trial is: the training hyper-parameters and the trial specification.

A trial = one model (one quantizer) or one mixture (several quantizers) x one dataset x one
test fold. :class:`TrialSpec` is hashed into a stable ``trial_key`` (the results table's key)
and into the trial's own seed, so that the same trial re-run gives the same numbers.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from qmoe.errors import ConfigError
from qmoe.quant_names import bitlinear_bits

PROTOCOLS = ("clean", "paper")
#: Curiosity variants (see :mod:`qmoe.models.moe`): ``kl`` is the paper's Eq. 8, ``entropy`` the
#: published code's later default made per sample and batch-independent.
CURIOSITIES = ("kl", "entropy")
DEFAULT_CURIOSITY = "kl"


class Protocol(str, Enum):
    """How the validation split (early stopping, checkpoint choice) is made."""

    CLEAN = "clean"  # validation carved from the training folds; the test fold is never seen
    PAPER = "paper"  # the published protocol: the test fold doubles as validation (comparison only)


@dataclass(frozen=True, kw_only=True)
class TrainConfig:
    """Training hyper-parameters (DESIGN §5). Defaults: :meth:`single` and :meth:`mixture`."""

    lr: float  # AdamW learning rate
    weight_decay: float  # AdamW decoupled weight decay
    batch_size: int  # samples per optimiser step
    dropout: float  # dropout after each hidden ReLU of an expert
    hidden: tuple[int, ...]  # hidden layer widths of an expert MLP
    patience: int  # epochs without a better validation macro-F1 before stopping
    max_epochs: int = 300  # hard cap on epochs
    grad_clip: float = 1.0  # max global gradient norm
    label_smoothing: float = 0.0  # cross-entropy label smoothing
    lb_weight: float = 1e-3  # weight of the Switch load-balancing loss (mixtures)
    mc_samples: int = 10  # Monte-Carlo dropout passes of the Bayesian router (mixtures)
    router_dropout: float = 0.2  # dropout inside the router (mixtures)
    temperature: float = 1.0  # routing softmax temperature T (mixtures)
    top_k: int = 1  # experts combined per sample (mixtures)
    router_lr: float | None = None  # AdamW learning rate of the router (mixtures); None = lr

    def __post_init__(self) -> None:
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        checks = [
            ("lr", self.lr > 0 and math.isfinite(self.lr), "a positive number, e.g. 1e-3"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("batch_size", self.batch_size >= 1, "a whole number of at least 1"),
            ("dropout", 0 <= self.dropout < 1, "in [0, 1)"),
            ("hidden", len(self.hidden) >= 1 and min(self.hidden) >= 1, "a list of positive widths"),
            ("patience", self.patience >= 1, "at least 1"),
            ("max_epochs", self.max_epochs >= 1, "at least 1"),
            ("grad_clip", self.grad_clip > 0, "a positive number"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("lb_weight", self.lb_weight >= 0, "0 or more"),
            ("mc_samples", self.mc_samples >= 1, "at least 1"),
            ("router_dropout", 0 <= self.router_dropout < 1, "in [0, 1)"),
            ("temperature", self.temperature > 0, "a positive number"),
            ("top_k", self.top_k >= 1, "at least 1"),
            ("router_lr", self.router_lr is None or (self.router_lr > 0 and math.isfinite(self.router_lr)),
             "a positive number, e.g. 1e-3 (or leave it out: the router then uses lr)"),
        ]
        for name, ok, want in checks:
            if not ok:
                raise ConfigError(f"hyper-parameter {name}={getattr(self, name)!r} is invalid: use {want}")

    @classmethod
    def single(cls) -> TrainConfig:
        """The paper's single-model settings (AdamW 5.79e-4, wd 5.13e-3, batch 64, [640, 320])."""
        return cls(lr=5.79e-4, weight_decay=5.13e-3, batch_size=64, dropout=0.195,
                   hidden=(640, 320), patience=19)

    @classmethod
    def mixture(cls) -> TrainConfig:
        """The paper's mixture settings (lr 1e-3, wd 1e-4, batch 256, experts [256, 128, 64])."""
        return cls(lr=1e-3, weight_decay=1e-4, batch_size=256, dropout=0.3,
                   hidden=(256, 128, 64), patience=30)

    @classmethod
    def defaults(cls, is_mixture: bool) -> TrainConfig:
        return cls.mixture() if is_mixture else cls.single()

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with some fields changed; unknown names raise ConfigError listing the known ones."""
        known = {f.name for f in dataclasses.fields(self)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise ConfigError(
                f"unknown hyper-parameter {unknown[0]!r}; known: {', '.join(sorted(known))}")
        return dataclasses.replace(self, **overrides)

    def to_dict(self) -> dict[str, Any]:
        """Plain data; ``router_lr`` only when set, so that settings without it keep the
        trial keys they had before the field existed (``to_dict`` feeds ``trial_key``)."""
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        if d["router_lr"] is None:
            del d["router_lr"]
        return d


@dataclass(frozen=True, kw_only=True)
class TrialSpec:
    """One trial: ``experts`` holds one quantizer name (a single model) or several (a mixture).

    ``train`` defaults to the paper's settings for the kind of model; ``hparams_source`` says
    where non-default settings came from (e.g. a ``best.toml``) and is recorded, not hashed.
    """

    dataset: str  # dataset name ("synth", "esc50", ...) or the table's file stem
    fold: int  # the test fold
    experts: tuple[str, ...]  # quantizer names; one = single model
    alpha: float = 0.0  # curiosity strength; 0 = plain learned routing
    protocol: str = "clean"
    seed: int = 0  # the sweep seed; the trial's own seed derives from it and the key
    split_seed: int | None = None  # seeded fold reassignment (repeated k-fold); None = the table's folds
    curiosity: str = DEFAULT_CURIOSITY  # kl | entropy (mixtures with alpha > 0; else kl)
    train: TrainConfig | None = None
    hparams_source: str = "default"
    latency_runs: int = 200  # timed batch-1 runs (>= 200 for a reported figure)
    measure_energy: bool = True

    def __post_init__(self) -> None:
        experts = tuple(str(e).strip() for e in self.experts)
        object.__setattr__(self, "experts", experts)
        if not experts or any(not e for e in experts):
            raise ConfigError("--model is empty: give a quantizer (e.g. q4) or a list (bitnet,q4,q8)")
        check_alpha(self.alpha, "--alpha")
        if self.alpha > 0 and len(experts) == 1:
            raise ConfigError("--alpha applies to mixtures only: give several experts, e.g. --model bitnet,q4,q8")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"--protocol {self.protocol!r} is unknown; known: {', '.join(PROTOCOLS)}")
        if self.curiosity not in CURIOSITIES:
            raise ConfigError(f"--curiosity {self.curiosity!r} is unknown; known: {', '.join(CURIOSITIES)}")
        if self.curiosity != DEFAULT_CURIOSITY and len(experts) == 1:
            raise ConfigError("--curiosity applies to mixtures only: give several experts, e.g. --model bitnet,q4,q8")
        if self.alpha == 0:
            # alpha = 0 is plain routing whatever the variant: one trial (and one key) for it.
            object.__setattr__(self, "curiosity", DEFAULT_CURIOSITY)
        if self.split_seed is not None and (isinstance(self.split_seed, bool) or int(self.split_seed) < 0):
            raise ConfigError(f"split seed {self.split_seed!r} is invalid: use a whole number >= 0")
        if self.latency_runs < 1:
            raise ConfigError("latency_runs must be at least 1")
        if self.train is None:
            object.__setattr__(self, "train", TrainConfig.defaults(self.is_mixture))

    @property
    def is_mixture(self) -> bool:
        return len(self.experts) > 1

    @property
    def model(self) -> str:
        """The model as written on the command line: ``q4`` or ``bitnet,q4,q8``."""
        return ",".join(self.experts)

    def key_fields(self) -> dict[str, Any]:
        """The fields that identify the trial (DESIGN §7); measurement settings are excluded.

        ``split_seed`` and ``curiosity`` enter only when they differ from their defaults (the
        table's own folds, KL curiosity), so that trials without them keep the keys they had
        before the fields existed and older sweeps still resume.
        """
        assert self.train is not None
        fields = {
            "dataset": self.dataset, "fold": int(self.fold), "experts": list(self.experts),
            "alpha": float(self.alpha), "protocol": self.protocol, "seed": int(self.seed),
            "train": self.train.to_dict(),
        }
        if self.split_seed is not None:
            fields["split_seed"] = int(self.split_seed)
        if self.curiosity != DEFAULT_CURIOSITY:
            fields["curiosity"] = self.curiosity
        return fields

    @property
    def trial_key(self) -> str:
        """A stable 16-hex-digit hash of :meth:`key_fields`."""
        blob = json.dumps(self.key_fields(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    @property
    def trial_seed(self) -> int:
        """The trial's own seed, derived from the sweep seed and the trial key."""
        digest = hashlib.sha256(f"{self.seed}:{self.trial_key}".encode()).digest()
        return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-able data (a sweep's manifest holds its trials so);
        :meth:`from_dict` inverts it."""
        assert self.train is not None  # set by __post_init__
        return {**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)},
                "experts": list(self.experts), "train": self.train.to_dict()}

    @classmethod
    def from_dict(cls, raw: Mapping[str, Any]) -> TrialSpec:
        """Rebuild a spec written by :meth:`to_dict`."""
        raw = dict(raw)
        return cls(**{**raw, "experts": tuple(raw["experts"]), "train": TrainConfig(**raw["train"])})


def check_alpha(alpha: Any, where: str) -> float:
    """``alpha`` as a float if it is a valid curiosity strength (finite, >= 0), else a ConfigError
    naming ``where`` (a flag, or a spec file and group): the one check of alpha."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)):
        problem = "not a number"
    elif not math.isfinite(alpha):
        problem = "not a finite number"
    elif alpha < 0:
        problem = "negative"
    else:
        return float(alpha)
    raise ConfigError(f"{where}: alpha {alpha!r} is {problem}: curiosity strength must be >= 0")


def paper_name(experts: tuple[str, ...], alpha: float) -> str:
    """The paper's display name: ``Q4-Base``, ``BitNet-Q4/8-QMoE``, ``...-QMoE-C`` when alpha > 0."""
    single = {"fp32": "FP32-Base", "ptq8": "Q8-Base-PTQ", "bitnet": "BitNet-Base", "binary": "Binary-PTQ"}
    if len(experts) == 1:
        e = experts[0]
        return single.get(e, f"{e.upper()}-Base")
    parts: list[str] = []
    bits = [str(k) for k in map(bitlinear_bits, experts) if k is not None]
    if "bitnet" in experts:
        parts.append("BitNet")
    if bits:
        parts.append("Q" + "/".join(bits))
    others = [e for e in experts if e != "bitnet" and bitlinear_bits(e) is None]
    label = "-".join(parts + [{"ptq8": "Q8PTQ", "fp32": "FP32"}.get(o, o.upper()) for o in others])
    return f"{label}-QMoE" + ("-C" if alpha > 0 else "")


def unique_names(names: list[str]) -> list[str]:
    """Expert labels, suffixed ``#2``, ``#3`` where a quantizer appears more than once
    (as the routing statistics and the per-sample routing files name them)."""
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}#{seen[n]}")
    return out
