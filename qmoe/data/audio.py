"""Reading audio files into fixed-length mono clips (DESIGN §2.3, first step).

Decoding is done by ``soundfile`` (libsndfile): WAV, FLAC, OGG/Vorbis, AIFF and, when
libsndfile is 1.1 or newer, MP3. ``torchaudio.load`` is not used: in torchaudio 2.9+ it
needs torchcodec. Every clip becomes float32 mono at the configured rate, padded with
zeros at the end or cut to the dataset's clip length, so that one batch is one tensor.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
import torchaudio.functional as AF

from qmoe.errors import DataError

log = logging.getLogger(__name__)

#: File name endings (lower case) that the dataset adapters treat as audio.
AUDIO_EXTENSIONS: tuple[str, ...] = (".wav", ".flac", ".ogg", ".oga", ".mp3", ".aif", ".aiff")


class AudioError(DataError):
    """A file that cannot be decoded as audio (corrupt, empty, unsupported format)."""


def mp3_supported() -> bool:
    """True if the installed libsndfile decodes MP3 (libsndfile >= 1.1)."""
    return "MP3" in sf.available_formats()


def read_audio(source: str | Path | bytes, name: str | None = None,
               max_seconds: float | None = None) -> tuple[np.ndarray, int]:
    """Decode a file (a path, or its bytes) to a mono float32 waveform.

    Channels are averaged (a mono mix), not one of them picked.

    Args:
        source: a path, or the file's content as bytes.
        name: how to call the file in messages (default: the path).
        max_seconds: decode at most this much from the start (long recordings).

    Returns:
        ``(wave, sample_rate)`` with ``wave`` float32 of shape (S,).

    Raises:
        AudioError: the file cannot be decoded or holds no samples.
    """
    label = name if name is not None else str(source) if not isinstance(source, bytes) else "<bytes>"
    if label.lower().endswith(".mp3") and not mp3_supported():
        raise AudioError(
            f"{label}: cannot decode MP3 with the installed libsndfile {sf.__libsndfile_version__} "
            "(MP3 needs libsndfile >= 1.1); convert the file to WAV or FLAC"
        )
    handle = io.BytesIO(source) if isinstance(source, bytes) else source
    try:
        with sf.SoundFile(handle) as fh:
            rate = fh.samplerate
            frames = -1 if max_seconds is None else int(np.ceil(max_seconds * rate))
            data = fh.read(frames, dtype="float32", always_2d=True)  # (S, channels)
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError, OSError) as err:
        # LibsndfileError's str() repeats the file (or a BytesIO repr); its error_string does not.
        reason = getattr(err, "error_string", None) or " ".join(str(err).split()) or type(err).__name__
        raise AudioError(f"{label}: unreadable audio ({reason})") from None
    if data.shape[0] == 0 or data.shape[1] == 0:
        raise AudioError(f"{label}: unreadable audio (the file holds no samples)")
    wave = data.mean(axis=1) if data.shape[1] > 1 else data[:, 0]  # (S,)
    if not np.isfinite(wave).all():
        raise AudioError(f"{label}: unreadable audio (samples are NaN or infinite)")
    return np.ascontiguousarray(wave, dtype=np.float32), int(rate)


def fit_length(wave: np.ndarray, n_samples: int) -> np.ndarray:
    """Pad with zeros at the end, or cut the end, to exactly ``n_samples`` samples."""
    if wave.shape[0] >= n_samples:
        return wave[:n_samples]
    out = np.zeros(n_samples, dtype=np.float32)
    out[: wave.shape[0]] = wave
    return out


def load_clip(
    source: str | Path | bytes,
    *,
    sample_rate: int,
    clip_seconds: float,
    name: str | None = None,
) -> np.ndarray:
    """Decode, mix to mono, resample to ``sample_rate`` and pad/cut to ``clip_seconds``.

    Resampling (torchaudio's windowed-sinc ``resample``) happens before the length is
    fixed, so the clip covers the first ``clip_seconds`` of the recording at any input rate.

    Returns:
        float32 array of shape (round(clip_seconds * sample_rate),).

    Raises:
        AudioError: the file cannot be decoded.
    """
    # A little more than the clip, so the resampler sees real samples past the cut.
    wave, rate = read_audio(source, name, max_seconds=clip_seconds + 0.1)
    if rate != sample_rate:
        wave = AF.resample(torch.from_numpy(wave), orig_freq=rate, new_freq=sample_rate).numpy()
    return fit_length(wave, int(round(clip_seconds * sample_rate)))


def duration_seconds(path: str | Path) -> float | None:
    """The file's duration from its header, or None if the header cannot be read."""
    try:
        info = sf.info(str(path))
    except (sf.LibsndfileError, RuntimeError, ValueError, OSError):
        return None
    return info.frames / info.samplerate if info.samplerate > 0 and info.frames > 0 else None
