"""The per-batch work of feature extraction: files -> clips -> log-Mel -> backbone -> rows.

Pure functions and one small class, with no notion of where they run: ``prepare_dataset``
calls them in this process, ``qmoe.sweeps.embed_actors`` calls them inside Ray actors (one
:class:`Embedder` per actor, so the network is built once per worker, not per batch).

A batch never fails because of one bad file: each file that cannot be decoded becomes a
*failure* entry of the :class:`BatchResult`, and the caller decides (skip or stop).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch

from qmoe.data.audio import AudioError, load_clip
from qmoe.data.backbones import BACKBONES
from qmoe.data.features import LogMelConfig, log_mel
from qmoe.data.image_backbones import INPUT_SIZES, NEEDS_WEIGHTS, TOP_DB, needs_weights
from qmoe.errors import ConfigError

log = logging.getLogger(__name__)

#: Bump when decoding, the Mel image or pooling change their output: cached embeddings are
#: keyed by it (through :meth:`ExtractSettings.key`), so a bump re-embeds instead of reusing.
EXTRACT_CODE_VERSION = "1"


@dataclass(frozen=True, kw_only=True)
class ExtractSettings:
    """Everything that decides a clip's embedding, besides the file's bytes.

    Attributes:
        backbone: a name in ``BACKBONES``.
        mel: log-Mel settings (its ``sample_rate`` is the rate clips are resampled to).
        clip_seconds: every clip is padded with zeros or cut to this length.
        weights_sha256: sha256 of the weights file (``--weights FILE``, or the hub file timm's
            pretrained loading read), timm backbones only; else None.
        random_init: an untrained, seeded network (tests only).
        init_seed: seed of that network.
    """

    backbone: str = "melstats"
    mel: LogMelConfig = field(default_factory=LogMelConfig)
    clip_seconds: float = 5.0
    weights_sha256: str | None = None
    random_init: bool = False
    init_seed: int = 0

    def __post_init__(self) -> None:
        BACKBONES.get(self.backbone)  # unknown name -> UnknownNameError listing the known ones
        if not self.clip_seconds > 0:
            raise ConfigError(f"clip length must be > 0 s, got {self.clip_seconds}")
        if needs_weights(self.backbone):
            if self.weights_sha256 is None and not self.random_init:
                raise ConfigError(NEEDS_WEIGHTS.format(name=self.backbone))
            if self.weights_sha256 is not None and self.random_init:
                raise ConfigError("--weights and --random-init exclude each other; pass one of them")
        elif self.weights_sha256 is not None or self.random_init:
            raise ConfigError(f"backbone {self.backbone} has no weights; drop --weights/--random-init "
                              "or pick a timm backbone (efficientnet_b3, mobilenetv3_large_100)")

    @property
    def clip_samples(self) -> int:
        """Samples per clip after resampling."""
        return int(round(self.clip_seconds * self.mel.sample_rate))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings."""
        d = asdict(self)
        d["mel"] = self.mel.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExtractSettings:
        """Inverse of :meth:`to_dict`."""
        return cls(**{**d, "mel": LogMelConfig.from_dict(d["mel"])})

    def image(self) -> dict[str, Any] | None:
        """How the Mel image is made, for timm backbones (recorded in the table metadata)."""
        if self.backbone not in INPUT_SIZES:
            return None
        return {"size": list(INPUT_SIZES[self.backbone]), "top_db": TOP_DB, "channels": 3,
                "normalisation": "imagenet", "resize": "bilinear", "low_bands_at": "bottom"}

    def key(self) -> str:
        """A short hash of the settings and the extraction code version (the cache key)."""
        blob = {"settings": self.to_dict(), "image": self.image(), "version": EXTRACT_CODE_VERSION}
        return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class WorkItem:
    """One file to embed: its content hash (the cache key), a name for messages, its path."""

    key: str
    name: str
    path: str


@dataclass(frozen=True, eq=False)
class BatchResult:
    """What one batch produced.

    Attributes:
        keys: content hashes of the embedded files, in row order of ``X``.
        X: float32 embeddings (len(keys), D).
        failures: ``(key, name, message)`` of each file that could not be decoded.
    """

    keys: tuple[str, ...]
    X: np.ndarray
    failures: tuple[tuple[str, str, str], ...] = ()

    @property
    def n_items(self) -> int:
        """Files handled (embedded or failed)."""
        return len(self.keys) + len(self.failures)


class Embedder:
    """One backbone, built once, that embeds batches of files.

    Args:
        settings: the extraction settings.
        state_dict: the weights (timm backbones, unless ``settings.random_init``).
        weights_source: the weights file, for messages.

    Raises:
        ConfigError, WeightsError: weights missing or not fitting the backbone.
    """

    def __init__(self, settings: ExtractSettings, state_dict: Mapping[str, torch.Tensor] | None = None,
                 weights_source: str = "<state dict>") -> None:
        self.settings = settings
        options: dict[str, Any] = {}
        if needs_weights(settings.backbone):
            options = dict(state_dict=state_dict, weights_source=weights_source,
                           random_init=settings.random_init, seed=settings.init_seed)
        self._pool = BACKBONES.get(settings.backbone)(**options)

    def __call__(self, items: Sequence[WorkItem], data: Sequence[bytes] | None = None) -> BatchResult:
        """Embed a batch; ``data`` (the files' bytes, same order) avoids reading ``path``."""
        s = self.settings
        waves, keys, failures = [], [], []
        for i, item in enumerate(items):
            source = data[i] if data is not None else item.path
            try:
                waves.append(load_clip(source, sample_rate=s.mel.sample_rate,
                                       clip_seconds=s.clip_seconds, name=item.name))
                keys.append(item.key)
            except AudioError as err:
                failures.append((item.key, item.name, str(err)))
        if not waves:
            return BatchResult(keys=(), X=np.zeros((0, 0), dtype=np.float32), failures=tuple(failures))
        batch = torch.from_numpy(np.stack(waves))  # (B, S)
        with torch.no_grad():
            X = self._pool(log_mel(batch, s.mel))  # (B, D)
        return BatchResult(keys=tuple(keys), X=X.numpy().astype(np.float32, copy=False),
                           failures=tuple(failures))


def default_batch_size(backbone: str) -> int:
    """Clips per batch (one task): enough to amortise scheduling, small for a smooth progress bar."""
    return 16 if needs_weights(backbone) else 64


def batches(items: Sequence[WorkItem], size: int) -> Iterator[list[WorkItem]]:
    """Consecutive slices of ``size`` items."""
    for start in range(0, len(items), size):
        yield list(items[start:start + size])


def run_in_process(items: Sequence[WorkItem], settings: ExtractSettings,
                   state_dict: Mapping[str, torch.Tensor] | None = None, *,
                   batch_size: int | None = None, weights_source: str = "<state dict>"
                   ) -> Iterator[BatchResult]:
    """Embed ``items`` here, one batch after another (the runner without Ray)."""
    embedder = Embedder(settings, state_dict, weights_source)
    for batch in batches(items, batch_size or default_batch_size(settings.backbone)):
        yield embedder(batch)
