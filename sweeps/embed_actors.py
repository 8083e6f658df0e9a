"""Feature extraction on Ray: batches of clips embedded by a pool of actors (DESIGN §2.3).

:func:`ray_runner` returns a runner for :func:`qmoe.data.prepare.prepare_dataset`. It
starts one actor per CPU of the cluster (one torch thread each), builds the backbone once
per actor, and keeps two batches in flight per actor. The driver reads each file and ships
its bytes with the batch, so workers on other nodes need no access to ``--root``; the
weights reach every actor once through the object store. Ray starts only when something
is left to embed: a run served entirely from the cache never starts it.

:mod:`qmoe.sweeps.bench.extraction_speed` measures clips per second of this pipeline.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import ray
import torch

from qmoe.data.extract import BatchResult, Embedder, ExtractSettings, WorkItem, batches, default_batch_size
from qmoe.errors import DataError, QmoeError, one_line

from qmoe.sweeps.cluster import check_reachable, ray_session, validate_address, worker_env

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
    return ExtractionError(f"an extraction worker failed: {one_line(err, 300)}")


def run_actors(items: Sequence[WorkItem], settings: ExtractSettings,
               state_dict: Mapping[str, torch.Tensor] | None, batch_size: int, weights_source: str,
               cpus: float, workers: int | None) -> Iterator[BatchResult]:
    """Embed ``items`` on ``workers`` actors (default: one per CPU) of the running Ray, batch by
    batch, yielding each batch's result as it arrives (not in order)."""
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

    Raises:
        ConfigError: a malformed or unreachable address, found now (before anything is written).
    """
    address = validate_address(address)
    if address not in (None, "auto"):
        check_reachable(address)

    def run(items: Sequence[WorkItem], settings: ExtractSettings,
            state_dict: Mapping[str, torch.Tensor] | None = None, *, batch_size: int | None = None,
            weights_source: str = "<state dict>") -> Iterator[BatchResult]:
        size = batch_size or default_batch_size(settings.backbone)
        with ray_session(address, env=worker_env(1), num_cpus=num_cpus, verbose=verbose) as cluster:
            yield from run_actors(items, settings, state_dict, size, weights_source, cluster.cpus, workers)

    return run
