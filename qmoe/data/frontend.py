"""The clip and the log-Mel settings: what datasets, caches and specs name without computing
a feature (no torch here; :mod:`qmoe.data.features` computes them and re-exports both)."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from qmoe.errors import ConfigError


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
