"""Feature extraction on Ray: batches of clips embedded by a pool of actors (DESIGN §2.3).

:func:`ray_runner` returns a runner for :func:`qmoe.data.prepare.prepare_dataset`. It
starts one actor per CPU of the cluster (one torch thread each), builds the backbone once
per actor, and keeps two batches in flight per actor. The driver reads each file and ships
its bytes with the batch, so workers on other nodes need no access to ``--root``; the
weights reach every actor once through the object store. Ray starts only when something
is left to embed: a run served entirely from the cache never starts it.

:func:`extraction_throughput` measures clips per second of that pipeline (for ``qmoe bench``).
"""

from __future__ import annotations

import logging
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import ray
import torch

from qmoe.data.extract import BatchResult, Embedder, ExtractSettings, WorkItem, batches, default_batch_size
from qmoe.data.image_backbones import needs_weights
from qmoe.errors import DataError, QmoeError

from sweeps.cluster import one_line, ray_session, worker_env

log = logging.getLogger(__name__)

IN_FLIGHT_PER_ACTOR = 2  # batches queued per actor: keeps it busy while the driver reads files


class ExtractionError(QmoeError):
    """A worker of the extraction died or failed outside the per-file error handling."""


class _EmbedActor:
    """Holds one :class:`Embedder` (one network) for the actor's lifetime."""

    def __init__(self, settings: dict, state_dict: Mapping[str, torch.Tensor] | None,
                 weights_source: str) -> None:
        torch.set_num_threads(1)  # one CPU per actor; N actors use N cores
        self._embed = Embedder(ExtractSettings.from_dict(settings), state_dict, weights_source)

    def embed(self, items: list[WorkItem], data: list[bytes]) -> BatchResult:
        return self._embed(items, data)


def _unwrap(err: Exception) -> Exception:
    cause = getattr(err, "cause", None)
    if isinstance(cause, QmoeError):
        return cause
    return ExtractionError(f"an extraction worker failed: {one_line(err)}")


def _run_actors(items: Sequence[WorkItem], settings: ExtractSettings,
                state_dict: Mapping[str, torch.Tensor] | None, batch_size: int, weights_source: str,
                cpus: float, workers: int | None) -> Iterator[BatchResult]:
    todo = list(batches(items, batch_size))
    n = max(1, min(len(todo), workers or int(cpus) or 1))
    weights_ref = ray.put(dict(state_dict)) if state_dict is not None else None
    actor_cls = ray.remote(num_cpus=1)(_EmbedActor)
    actors = [actor_cls.remote(settings.to_dict(), weights_ref, weights_source) for _ in range(n)]
    log.info("embedding %d files in %d batches on %d Ray actors", len(items), len(todo), n)
    pending: dict[ray.ObjectRef, int] = {}  # result -> actor index
    queue = iter(todo)

    def submit(actor: int) -> bool:
        batch = next(queue, None)
        if batch is None:
            return False
        try:
            data = [Path(item.path).read_bytes() for item in batch]
        except OSError as err:
            raise DataError(f"{err.filename}: cannot read the file ({err.strerror or err})") from None
        pending[actors[actor].embed.remote(batch, data)] = actor
        return True

    try:
        for i in range(n):
            for _ in range(IN_FLIGHT_PER_ACTOR):
                submit(i)
        while pending:
            ready, _ = ray.wait(list(pending), num_returns=1)
            actor = pending.pop(ready[0])
            try:
                result = ray.get(ready[0])
            except (ray.exceptions.RayError, QmoeError) as err:
                raise _unwrap(err) from None
            submit(actor)
            yield result
    finally:
        for actor in actors:  # also drops the batches still queued on it
            ray.kill(actor)


def ray_runner(address: str | None = None, *, workers: int | None = None, num_cpus: int | None = None,
               verbose: bool = False):
    """A runner for ``prepare_dataset`` that embeds on Ray.

    Args:
        address: None for an embedded local Ray, else ``auto``, ``HOST:PORT`` or ``ray://HOST:PORT``.
        workers: number of actors (default: one per CPU of the cluster).
        num_cpus: CPUs of an embedded Ray (default: all of this machine's).
        verbose: let the workers' logs through.

    Returns:
        ``runner(items, settings, state_dict, *, batch_size, weights_source) -> Iterator[BatchResult]``.
    """

    def run(items: Sequence[WorkItem], settings: ExtractSettings,
            state_dict: Mapping[str, torch.Tensor] | None = None, *, batch_size: int | None = None,
            weights_source: str = "<state dict>") -> Iterator[BatchResult]:
        size = batch_size or default_batch_size(settings.backbone)
        with ray_session(address, env=worker_env(1), num_cpus=num_cpus, verbose=verbose) as cluster:
            yield from _run_actors(items, settings, state_dict, size, weights_source, cluster.cpus, workers)

    return run


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
            for result in _run_actors(items, settings, None, default_batch_size(backbone), "<random init>",
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
