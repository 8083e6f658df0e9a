"""log-Mel front end and the backbone registry."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmoe.data import BACKBONES, Clip, LogMelConfig, embed_clips, log_mel
from qmoe.errors import ConfigError, DataError, UnknownNameError


def _tone(sr: int = 16000, seconds: float = 1.0, f: float = 440.0) -> np.ndarray:
    t = np.arange(int(sr * seconds)) / sr
    return (0.5 * np.sin(2 * np.pi * f * t)).astype(np.float32)


def _clip(i: int, wave: np.ndarray, sr: int = 16000) -> Clip:
    return Clip(clip_id=f"c{i}", waveform=wave, sample_rate=sr, label=0, label_name="a", fold=1, group="g")


def test_log_mel_shape_and_finite() -> None:
    m = log_mel(_tone())
    assert m.dtype == torch.float32
    assert m.shape == (128, 16000 // 512 + 1)
    assert torch.isfinite(m).all()
    assert log_mel(np.stack([_tone(), _tone()])).shape == (2, 128, 32)


def test_log_mel_resamples_to_the_configured_rate() -> None:
    at16 = log_mel(_tone(16000), sample_rate=16000)
    at32 = log_mel(_tone(32000), sample_rate=32000)
    assert at32.shape == at16.shape
    assert int(at32.mean(dim=1).argmax()) == int(at16.mean(dim=1).argmax())  # same band lights up


def test_log_mel_rejects_empty_waveform() -> None:
    with pytest.raises(DataError, match="non-empty"):
        log_mel(np.zeros(0, dtype=np.float32))


def test_log_mel_config_validation_and_dict() -> None:
    with pytest.raises(ConfigError, match="f_max"):
        LogMelConfig(f_max=9000.0)
    cfg = LogMelConfig(n_mels=64)
    assert LogMelConfig.from_dict(cfg.to_dict()) == cfg


def test_melstats_is_four_stats_per_band() -> None:
    assert "melstats" in BACKBONES.names()
    clips = [_clip(i, _tone(f=300 + 100 * i)) for i in range(3)]
    X = embed_clips(clips)
    assert X.shape == (3, 512) and X.dtype == np.float32
    X64 = embed_clips(clips, cfg=LogMelConfig(n_mels=64))
    assert X64.shape == (3, 256)
    m = log_mel(clips[0].waveform)
    np.testing.assert_allclose(X[0, :128], m.mean(dim=1).numpy(), rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(X[0, 128:256], m.std(dim=1, unbiased=False).numpy(), rtol=1e-4, atol=1e-4)


def test_embed_clips_keeps_order_across_lengths_and_batches() -> None:
    waves = [_tone(seconds=1.0 + 0.5 * (i % 2), f=200 + 50 * i) for i in range(7)]
    clips = [_clip(i, w) for i, w in enumerate(waves)]
    together = embed_clips(clips, batch_size=2)
    alone = np.concatenate([embed_clips([c]) for c in clips])
    np.testing.assert_allclose(together, alone, rtol=1e-5, atol=1e-5)


def test_unknown_backbone_lists_known_ones() -> None:
    with pytest.raises(UnknownNameError, match="unknown backbone 'resnet'; known: .*melstats"):
        embed_clips([_clip(0, _tone())], backbone="resnet")


def test_embed_clips_needs_clips() -> None:
    with pytest.raises(DataError, match="no clips"):
        embed_clips([])
