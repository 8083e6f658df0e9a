"""The backbones by name, and embedding clips with one of them (DESIGN §2.3).

A backbone pools a batch of log-Mels (B, n_mels, T) into embeddings (B, D); the registry holds
a factory ``(**options) -> Backbone`` per name: ``melstats`` (weight-free, the default) and the
timm image backbones. timm itself loads only when one of those is built.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from typing import Any

import numpy as np
import torch

from qmoe.data.features import Backbone, Clip, LogMelConfig, log_mel, melstats
from qmoe.data.image_backbones import TIMM_BACKBONES, timm_backbone
from qmoe.errors import DataError
from qmoe.registry import Registry

log = logging.getLogger(__name__)

#: Backbone factories by name: ``BACKBONES.get(name)(**options) -> Backbone``.
BACKBONES: Registry[Callable[..., Backbone]] = Registry("backbone")
BACKBONES.add("melstats", melstats)
for _name in TIMM_BACKBONES:
    BACKBONES.add(_name, timm_backbone(_name))


def embed_clips(
    clips: Iterable[Clip],
    backbone: str = "melstats",
    cfg: LogMelConfig = LogMelConfig(),
    *,
    batch_size: int = 64,
    backbone_options: dict[str, Any] | None = None,
) -> np.ndarray:
    """Embed clips with a registered backbone.

    Clips of equal length and rate are batched together (no padding, so a clip's
    embedding does not depend on its neighbours); the output keeps the input order.

    Args:
        clips: the clips (anything with ``waveform`` and ``sample_rate``).
        backbone: a name in ``BACKBONES``.
        cfg: log-Mel settings.
        batch_size: clips per forward pass.
        backbone_options: keyword arguments for the backbone factory.

    Returns:
        float32 array of shape (N, D).

    Raises:
        UnknownNameError: for an unknown backbone (lists the known ones).
        DataError: if there are no clips or one is empty.
    """
    model = BACKBONES.get(backbone)(**(backbone_options or {}))
    pending: dict[tuple[int, int], list[tuple[int, np.ndarray]]] = {}
    done: list[tuple[list[int], np.ndarray]] = []

    def flush(key: tuple[int, int]) -> None:
        items = pending.pop(key)
        wave = torch.from_numpy(np.stack([w for _, w in items]))  # (B, S)
        with torch.no_grad():
            emb = model(log_mel(wave, cfg, sample_rate=key[0]))  # (B, D)
        done.append(([i for i, _ in items], emb.numpy().astype(np.float32, copy=False)))

    n = 0
    for i, clip in enumerate(clips):
        wave = np.asarray(clip.waveform, dtype=np.float32).reshape(-1)
        if wave.size == 0:
            raise DataError(f"clip {getattr(clip, 'clip_id', i)!r} has an empty waveform")
        key = (int(clip.sample_rate), wave.size)
        pending.setdefault(key, []).append((i, wave))
        if len(pending[key]) >= batch_size:
            flush(key)
        n = i + 1
    for key in list(pending):
        flush(key)
    if n == 0:
        raise DataError("embed_clips got no clips")
    dim = done[0][1].shape[1]
    out = np.empty((n, dim), dtype=np.float32)
    for idx, emb in done:
        out[idx] = emb
    log.debug("embedded %d clips with %s -> %d-d", n, backbone, dim)
    return out
