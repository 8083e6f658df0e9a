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
from dataclasses import asdict, dataclass
from typing import Any, Protocol

import numpy as np
import torch
import torchaudio
import torchaudio.functional as AF

from qmoe.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: Added to the Mel power before the log so that silence maps to a finite floor (~ -13.8).
LOG_EPS = 1e-6


@dataclass(frozen=True, kw_only=True, eq=False)
class Clip:
    """One labelled waveform, the unit every dataset adapter yields.

    Attributes:
        clip_id: unique id of the clip within its dataset.
        waveform: mono samples, float32, shape (S,).
        sample_rate: samples per second of ``waveform``.
        label: class id, 0..C-1.
        label_name: human name of the class.
        fold: the dataset's fold of the clip.
        group: recording/source id; clips of one group share a fold.
    """

    clip_id: str
    waveform: np.ndarray
    sample_rate: int
    label: int
    label_name: str
    fold: int
    group: str


@dataclass(frozen=True, kw_only=True)
class LogMelConfig:
    """Settings of the log-Mel front end.

    Attributes:
        sample_rate: rate (Hz) every clip is resampled to before the STFT.
        n_fft: STFT window length in samples (also the FFT size).
        hop: STFT hop in samples.
        n_mels: number of Mel bands.
        f_min: lowest band edge in Hz.
        f_max: highest band edge in Hz; ``None`` means sample_rate / 2.
    """

    sample_rate: int = 16000
    n_fft: int = 2048
    hop: int = 512
    n_mels: int = 128
    f_min: float = 0.0
    f_max: float | None = None

    def __post_init__(self) -> None:
        if self.sample_rate <= 0:
            raise ConfigError(f"LogMelConfig.sample_rate must be > 0, got {self.sample_rate}")
        if self.n_fft <= 0 or self.hop <= 0 or self.n_mels <= 0:
            raise ConfigError(
                f"LogMelConfig n_fft, hop and n_mels must be > 0, got "
                f"n_fft={self.n_fft}, hop={self.hop}, n_mels={self.n_mels}"
            )
        nyquist = self.sample_rate / 2
        f_max = nyquist if self.f_max is None else self.f_max
        if not 0 <= self.f_min < f_max <= nyquist:
            raise ConfigError(
                f"LogMelConfig needs 0 <= f_min < f_max <= {nyquist:g} Hz (sample_rate/2), "
                f"got f_min={self.f_min}, f_max={self.f_max}"
            )

    def to_dict(self) -> dict[str, Any]:
        """The settings as a JSON-ready dict."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogMelConfig:
        """Inverse of :meth:`to_dict`."""
        return cls(**d)


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
