"""Audio -> log-Mel -> backbone -> one embedding per clip (DESIGN §2.3).

``log_mel`` turns a waveform into a log-Mel spectrogram (torchaudio; STFT window 2048,
hop 512, 128 bands by default), resampling first when the clip's rate differs from the
configured one. A *backbone* pools a batch of log-Mels into fixed-size vectors: the
weight-free ``melstats`` here, the timm image backbones in :mod:`qmoe.data.image_backbones`;
:mod:`qmoe.data.backbones` registers both and embeds clips with one of them.
"""

from __future__ import annotations

import functools
import logging
from typing import Protocol

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF

from qmoe.data.frontend import Clip, LogMelConfig
from qmoe.errors import DataError

log = logging.getLogger(__name__)

__all__ = ["LOG_EPS", "Backbone", "Clip", "LogMelConfig", "log_mel", "melstats"]

#: Added to the Mel power before the log so that silence maps to a finite floor (~ -13.8).
LOG_EPS = 1e-6


@functools.lru_cache(maxsize=8)
def _mel_transform(cfg: LogMelConfig) -> torchaudio.transforms.MelSpectrogram:
    # Building the filter bank costs ~1 ms; clips are embedded by the thousand.
    return torchaudio.transforms.MelSpectrogram(
        sample_rate=cfg.sample_rate,
        n_fft=cfg.n_fft,
        hop_length=cfg.hop,
        n_mels=cfg.n_mels,
        f_min=cfg.f_min,
        f_max=cfg.f_max,
        power=2.0,
    )


def log_mel(
    waveform: np.ndarray | torch.Tensor,
    cfg: LogMelConfig = LogMelConfig(),
    *,
    sample_rate: int | None = None,
) -> torch.Tensor:
    """Log-Mel spectrogram of one clip, or of a batch of equal-length clips.

    Args:
        waveform: samples, shape (S,) or (B, S).
        cfg: front-end settings.
        sample_rate: rate of ``waveform``; ``None`` means it is already ``cfg.sample_rate``.

    Returns:
        ``log(mel_power + 1e-6)`` as float32, shape (n_mels, T) or (B, n_mels, T).

    Raises:
        DataError: if the waveform is empty or not 1-D/2-D.
    """
    x = torch.as_tensor(waveform).to(torch.float32)
    if x.ndim not in (1, 2) or x.shape[-1] == 0:
        raise DataError(f"log_mel needs a non-empty waveform of shape (S,) or (B, S), got {tuple(x.shape)}")
    if sample_rate is not None and sample_rate != cfg.sample_rate:
        x = AF.resample(x, orig_freq=int(sample_rate), new_freq=cfg.sample_rate)
    with torch.no_grad():
        mel = _mel_transform(cfg)(x)  # (..., n_mels, T)
    return torch.log(mel + LOG_EPS)


class Backbone(Protocol):
    """Pools a batch of log-Mels (B, n_mels, T) into embeddings (B, D)."""

    def __call__(self, logmel: torch.Tensor) -> torch.Tensor: ...


def melstats(*, delta_win: int = 5) -> Backbone:
    """The weight-free default backbone: per-band statistics over time.

    Returns a backbone whose output is ``[mean(L), std(L), mean(dL), std(dL)]`` per Mel band,
    L the log-Mel and dL its deltas (torchaudio ``compute_deltas``), i.e. 4 * n_mels floats
    (512 for 128 bands).

    Args:
        delta_win: window length (frames) of the delta regression.
    """

    def pool(logmel: torch.Tensor) -> torch.Tensor:
        deltas = AF.compute_deltas(logmel, win_length=delta_win)  # (B, n_mels, T)
        parts = [
            logmel.mean(dim=-1),
            logmel.std(dim=-1, unbiased=False),
            deltas.mean(dim=-1),
            deltas.std(dim=-1, unbiased=False),
        ]
        return torch.cat(parts, dim=-1)  # (B, 4 * n_mels)

    return pool
