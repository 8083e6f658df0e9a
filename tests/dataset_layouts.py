"""Tiny dataset folders in the published layouts (ESC-50, UrbanSound8K, Quinn), for tests.

The audio is synthesised: a class-dependent tone plus a little noise, so that even a tiny
table is separable. Files vary on purpose: several formats (WAV, FLAC, OGG, MP3), sample
rates, channel counts and lengths (shorter and longer than the dataset's clip length).
"""

from __future__ import annotations

import csv
import itertools
from pathlib import Path

import numpy as np
import soundfile as sf

FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".ogg": ("OGG", "VORBIS"),
           ".mp3": ("MP3", "MPEG_LAYER_III")}
RATES = (44100, 22050, 16000, 48000, 8000)


def tone(freq: float, seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A tone at ``freq`` Hz with a little noise; (S,) or (S, channels) float32."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(round(seconds * rate))) / rate
    wave = 0.4 * np.sin(2 * np.pi * freq * t) + 0.02 * rng.standard_normal(t.size)
    if channels > 1:
        wave = np.stack([wave * (1 - 0.3 * c) for c in range(channels)], axis=1)
    return wave.astype(np.float32)


def write_audio(path: Path, wave: np.ndarray, rate: int) -> Path:
    """Write with soundfile in the format the file name ends with."""
    fmt, subtype = FORMATS[path.suffix.lower()]
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(path, wave, rate, format=fmt, subtype=subtype)
    return path


ESC50_CLASSES = ((0, "dog", True), (10, "rain", True), (41, "chainsaw", False))  # (target, name, esc10)


def make_esc50(root: Path, classes=ESC50_CLASSES, folds: int = 5, per_fold: int = 2,
               seconds: float = 5.0) -> Path:
    """``meta/esc50.csv`` + ``audio/`` with ``per_fold`` clips (one source) per class and fold."""
    rows = []
    rates = itertools.cycle(RATES[:3])
    for (target, name, esc10), fold in itertools.product(classes, range(1, folds + 1)):
        src = f"{100000 + 1000 * target + fold}"
        for take in range(per_fold):
            fname = f"{fold}-{src}-{'ABCD'[take]}-{target}.wav"
            rate = next(rates)
            # lengths around the 5 s clip length: one short (padded), one long (cut)
            length = seconds * (0.6 if take == 0 else 1.2)
            write_audio(root / "audio" / fname,
                        tone(300 + 40 * target, length, rate, channels=1 + take % 2, seed=fold * 10 + take), rate)
            rows.append([fname, fold, target, name, str(esc10), src, "ABCD"[take]])
    (root / "meta").mkdir(parents=True, exist_ok=True)
    with open(root / "meta" / "esc50.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["filename", "fold", "target", "category", "esc10", "src_file", "take"])
        w.writerows(rows)
    return root


US8K_CLASSES = ((0, "air_conditioner"), (3, "dog_bark"), (6, "gun_shot"))


def make_urbansound8k(root: Path, classes=US8K_CLASSES, folds: int = 3, per_fold: int = 2) -> Path:
    """``metadata/UrbanSound8K.csv`` + ``audio/foldN/``; slices of one fsID per class and fold."""
    rows = []
    rates = itertools.cycle((48000, 44100, 22050, 8000))
    exts = itertools.cycle((".wav", ".wav", ".flac"))
    for (class_id, name), fold in itertools.product(classes, range(1, folds + 1)):
        fsid = str(7000 + 100 * class_id + fold)
        for k in range(per_fold):
            fname = f"{fsid}-{class_id}-0-{k}{next(exts)}"
            rate = next(rates)
            write_audio(root / "audio" / f"fold{fold}" / fname,
                        tone(250 + 90 * class_id, 1.5 + k, rate, channels=2 if k else 1, seed=fold + k), rate)
            rows.append([fname, fsid, "0.0", str(1.5 + k), "1", fold, class_id, name])
    (root / "metadata").mkdir(parents=True, exist_ok=True)
    with open(root / "metadata" / "UrbanSound8K.csv", "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["slice_file_name", "fsID", "start", "end", "salience", "fold", "classID", "class"])
        w.writerows(rows)
    return root


QUINN_CLASSES = ("Anthropophony", "Biophony", "Geophony")


def make_quinn(root: Path, classes=QUINN_CLASSES, recordings: int = 5, segments: int = 2,
               seconds: float = 2.0) -> Path:
    """One folder per class; files ``siteNN_20190401_0630_S.ext`` (S = segment of a recording)."""
    exts = itertools.cycle((".wav", ".flac", ".ogg", ".wav", ".mp3"))
    rates = itertools.cycle((44100, 32000, 22050, 16000))
    for c, name in enumerate(classes):
        for r in range(recordings):
            for s in range(segments):
                rate = next(rates)
                path = root / name / f"site{c}{r}_20190401_0630_{s}{next(exts)}"
                write_audio(path, tone(200 + 500 * c, seconds, rate, seed=r * 10 + s), rate)
    (root / "README.txt").write_text("not audio, ignored\n")
    return root
