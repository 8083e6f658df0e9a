"""How fast feature extraction runs on Ray (a table of ``qmoe bench``): clips per second of
:mod:`qmoe.sweeps.embed_actors` for each backbone, on synthetic clips.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from qmoe.data.extract import ExtractSettings, WorkItem, default_batch_size
from qmoe.data.image_backbones import needs_weights

from qmoe.sweeps.cluster import ray_session, worker_env
from qmoe.sweeps.embed_actors import run_actors


@dataclass(frozen=True)
class ThroughputRow:
    """Extraction speed of one backbone on Ray.

    Attributes:
        backbone: the backbone.
        clips: clips embedded (5 s, 44.1 kHz WAV files, as ESC-50's).
        workers: Ray actors (one CPU each).
        seconds: wall time from submitting to the last result (actor start and model build included).
        clips_per_s: ``clips / seconds``.
        startup_s: time to the first finished batch.
        steady_clips_per_s: clips per second after the first batch.
    """

    backbone: str
    clips: int
    workers: int
    seconds: float
    clips_per_s: float
    startup_s: float
    steady_clips_per_s: float


def _write_clips(folder: Path, n: int, rate: int = 44100, seconds: float = 5.0, seed: int = 0) -> list[WorkItem]:
    import soundfile as sf

    rng = np.random.default_rng(seed)
    t = np.arange(int(rate * seconds)) / rate
    items = []
    for i in range(n):
        wave = 0.3 * np.sin(2 * np.pi * rng.uniform(100, 4000) * t) + 0.05 * rng.standard_normal(t.size)
        path = folder / f"clip{i:04d}.wav"
        sf.write(path, wave.astype(np.float32), rate, subtype="PCM_16")
        items.append(WorkItem(key=f"k{i}", name=path.name, path=str(path)))
    return items


def extraction_throughput(backbones: Sequence[str] = ("melstats", "efficientnet_b3"), *,
                          clips: Mapping[str, int] | None = None, cpus: int = 2,
                          address: str | None = None) -> list[ThroughputRow]:
    """Clips per second of Ray extraction for each backbone (``qmoe bench``).

    The clips are synthetic 5 s, 44.1 kHz WAV files (ESC-50's format), resampled to 16 kHz,
    128 Mel bands; timm backbones run with a random init (the speed does not depend on the
    weights). No cache is involved. An embedded Ray gets ``cpus`` CPUs, so ``cpus`` actors.

    Args:
        backbones: backbones to time.
        clips: clips per backbone (default: 512 for melstats, 96 for timm backbones).
        cpus: CPUs (= actors) of the embedded Ray.
        address: time on an existing cluster instead (all its CPUs).

    Returns:
        One :class:`ThroughputRow` per backbone.
    """
    counts = {b: (clips or {}).get(b, 96 if needs_weights(b) else 512) for b in backbones}
    rows = []
    with tempfile.TemporaryDirectory(prefix="qmoe-bench-") as tmp, \
            ray_session(address, env=worker_env(1), num_cpus=cpus) as cluster:
        all_items = _write_clips(Path(tmp), max(counts.values()))
        for backbone in backbones:
            settings = ExtractSettings(backbone=backbone, clip_seconds=5.0, random_init=needs_weights(backbone))
            items = all_items[: counts[backbone]]
            start = time.perf_counter()
            first, done, first_n = None, 0, 0
            workers = max(1, int(cluster.cpus) if address else min(cpus, int(cluster.cpus)))
            for result in run_actors(items, settings, None, default_batch_size(backbone), "<random init>",
                                      cluster.cpus, workers):
                done += result.n_items
                if first is None:
                    first, first_n = time.perf_counter(), done
            end = time.perf_counter()
            seconds = end - start
            steady = (done - first_n) / (end - first) if first is not None and end > first else float("nan")
            rows.append(ThroughputRow(backbone=backbone, clips=done, workers=workers, seconds=seconds,
                                      clips_per_s=done / seconds, startup_s=(first or end) - start,
                                      steady_clips_per_s=steady))
    return rows
