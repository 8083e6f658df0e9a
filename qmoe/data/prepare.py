"""``prepare_dataset``: a dataset folder -> an embedding table (DESIGN §2.3).

Steps, each failing with one :class:`~qmoe.errors.QmoeError` before anything is written:

1. the adapter reads the folder into a manifest (layout, CSV, missing files, folds, groups);
2. every file gets a content hash (:class:`~qmoe.data.cache.FileHasher`);
3. embeddings of (content, settings) pairs seen before come from the cache; the rest go to a
   *runner* in batches (:func:`~qmoe.data.extract.run_in_process` by default; the CLI passes
   ``qmoe.sweeps.embed_actors.ray_runner`` to spread them over Ray workers);
4. unreadable files are skipped and reported, or stop the run (``on_bad_audio``);
5. the table is validated and written atomically with its metadata.

Whatever was embedded before a failure stays in the cache, so the next run resumes there.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from enum import Enum
from importlib.metadata import version
from pathlib import Path

import numpy as np
import torch

import qmoe
from qmoe.data.adapters import AdapterOptions, Manifest, build_manifest
from qmoe.data.cache import EmbeddingCache, FileHasher, sha256_file
from qmoe.cache_root import default_cache_dir
from qmoe.data.datasets import prepared_table_path
from qmoe.data.extract import (BatchResult, Embedder, ExtractSettings, WorkItem, default_batch_size,
                               run_in_process)
from qmoe.data.frontend import LogMelConfig
from qmoe.data.image_backbones import load_pretrained, load_state_dict_file, needs_weights
from qmoe.data.table import EmbeddingTable, load_table, save_table, table_from_arrays
from qmoe.errors import ConfigError, DataError

log = logging.getLogger(__name__)

#: ``runner(items, settings, state_dict, batch_size=..., weights_source=...) -> results``.
Runner = Callable[..., Iterator[BatchResult]]
#: ``progress(stage, done, total)``, stage ``"hash"`` or ``"embed"``.
Progress = Callable[[str, int, int], None]
MAX_SKIPPED_IN_META = 50


class BadAudio(str, Enum):
    """What to do with a file that cannot be decoded."""

    FAIL = "fail"  # stop, write nothing (the default: nothing is dropped silently)
    SKIP = "skip"  # leave the clip out, report it, record it in the table's metadata


@dataclass(frozen=True, kw_only=True)
class PrepareConfig:
    """Settings of ``qmoe data prepare``.

    Attributes:
        backbone: ``melstats``, ``efficientnet_b3`` or ``mobilenetv3_large_100``.
        weights: local weights file of a timm backbone (state dict or safetensors).
        pretrained: timm's pretrained loading through the Hugging Face hub cache
            (:func:`~qmoe.data.image_backbones.load_pretrained`) instead of a file.
        random_init: untrained seeded timm network instead of weights (tests only).
        sample_rate: Hz every clip is resampled to.
        n_mels: Mel bands.
        clip_seconds: clip length override (None: the dataset's: ESC-50 5 s, UrbanSound8K 4 s,
            Quinn the most common file duration).
        classes: keep only these classes (``("esc10",)`` for ESC-10).
        k: folds of datasets without official ones (quinn).
        seed: seed of those folds.
        group_pattern: quinn's group rule (regex on the file stem).
        on_bad_audio: ``fail`` or ``skip`` undecodable files.
        batch_size: clips per batch/task (None: 16 for timm backbones, 64 for melstats).
    """

    backbone: str = "melstats"
    weights: Path | None = None
    pretrained: bool = False
    random_init: bool = False
    sample_rate: int = 16000
    n_mels: int = 128
    clip_seconds: float | None = None
    classes: tuple[str, ...] | None = None
    k: int = 5
    seed: int = 0
    group_pattern: str | None = None
    on_bad_audio: BadAudio = BadAudio.FAIL
    batch_size: int | None = None

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "on_bad_audio", BadAudio(self.on_bad_audio))
        except ValueError:
            raise ConfigError(f"--on-bad-audio {self.on_bad_audio!r} is invalid: use skip or fail") from None
        if self.pretrained and (self.weights is not None or self.random_init):
            raise ConfigError("--weights pretrained excludes --weights FILE and --random-init; pass one of them")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"batch size must be >= 1, got {self.batch_size}")

    def adapter_options(self) -> AdapterOptions:
        return AdapterOptions(classes=self.classes, clip_seconds=self.clip_seconds, k=self.k,
                              seed=self.seed, group_pattern=self.group_pattern)


@dataclass(frozen=True, kw_only=True, eq=False)
class PrepareResult:
    """What ``prepare_dataset`` did.

    Attributes:
        path: the table written.
        table: the table as written (validated, with metadata).
        embedded: files embedded in this run.
        cached: clips whose embedding came from the cache.
        skipped: ``(clip_id, message)`` of each unreadable file left out.
        seconds: wall time of the whole run.
    """

    path: Path
    table: EmbeddingTable
    embedded: int
    cached: int
    skipped: tuple[tuple[str, str], ...]
    seconds: float


@dataclass(frozen=True, eq=False)
class _Weights:
    """The weights of a timm backbone: their sha256, a name for messages, how to get them, and
    what the table's metadata records about them."""

    sha256: str
    source: str
    load: Callable[[], dict[str, torch.Tensor]]
    meta: dict[str, object]


def _weights(config: PrepareConfig) -> _Weights | None:
    """Resolve ``--weights FILE`` / ``--weights pretrained`` (None: no weights asked for)."""
    if config.weights is None and not config.pretrained:
        return None
    if not needs_weights(config.backbone):
        raise ConfigError(f"backbone {config.backbone} has no weights; drop --weights or pick a "
                          "timm backbone (efficientnet_b3, mobilenetv3_large_100)")
    if config.pretrained:
        hub = load_pretrained(config.backbone)
        return _Weights(sha256=hub.sha256, source=f"{hub.tag} ({hub.file})", load=lambda: hub.state_dict,
                        meta={"weights": "pretrained", "weights_tag": hub.tag,
                              "weights_revision": hub.revision, "weights_file": str(hub.file)})
    path = Path(config.weights).expanduser()
    if not path.is_file():
        raise DataError(f"--weights {path}: no such file; give a local state dict (.pt/.pth) "
                        "or .safetensors file, or pretrained")
    return _Weights(sha256=sha256_file(path), source=str(config.weights),
                    load=lambda: load_state_dict_file(path), meta={"weights": str(path.resolve())})


def _settings(config: PrepareConfig, manifest: Manifest, weights: _Weights | None) -> ExtractSettings:
    mel = LogMelConfig(sample_rate=config.sample_rate, n_mels=config.n_mels)
    return ExtractSettings(backbone=config.backbone, mel=mel, clip_seconds=manifest.clip_seconds,
                           weights_sha256=None if weights is None else weights.sha256,
                           random_init=config.random_init)


def _check_writable(path: Path) -> None:
    """ConfigError now, not after a long extraction, if the table cannot be written there."""
    if path.is_dir():
        raise ConfigError(f"--out {path} is a folder; give a file name such as {path / 'table.parquet'}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ConfigError(f"--out {path}: cannot create {path.parent} ({err.strerror or err}); "
                          "pick a writable location") from None
    if not os.access(path.parent, os.W_OK | os.X_OK):
        raise ConfigError(f"--out {path}: cannot write in {path.parent}; pick a writable location")


def _hash_files(manifest: Manifest, hasher: FileHasher, progress: Progress | None) -> dict[str, str]:
    keys: dict[str, str] = {}
    total = len(manifest.clips)
    for i, clip in enumerate(manifest.clips, start=1):
        try:
            keys[clip.clip_id] = hasher.hash(clip.path)
        except OSError as err:
            raise DataError(f"{clip.path}: cannot read the file ({err.strerror or err})") from None
        if progress is not None and (i % 200 == 0 or i == total):
            progress("hash", i, total)
    return keys


def prepare_dataset(
    dataset: str,
    root: str | Path,
    config: PrepareConfig = PrepareConfig(),
    *,
    out: str | Path | None = None,
    cache_dir: str | Path | None = None,
    runner: Runner | None = None,
    progress: Progress | None = None,
) -> PrepareResult:
    """Turn a dataset folder into an embedding table (see the module docstring).

    Args:
        dataset: ``esc50``, ``urbansound8k`` or ``quinn``.
        root: the dataset folder as distributed.
        config: extraction settings.
        out: where to write the table; default :func:`prepared_table_path` (where
            ``resolve_table(dataset)`` and ``--dataset NAME`` find it).
        cache_dir: cache root; default :func:`default_cache_dir`.
        runner: embeds the files not in the cache (signature of
            :func:`~qmoe.data.extract.run_in_process`); default: in this process.
        progress: called as files are hashed and embedded.

    Returns:
        The :class:`PrepareResult`.

    Raises:
        QmoeError: bad layout, missing files, unreadable audio (``fail``), weights that do
            not fit, an invalid resulting table. Nothing is written then.
    """
    start = time.perf_counter()
    manifest = build_manifest(dataset, root, config.adapter_options())
    weights = _weights(config)
    settings = _settings(config, manifest, weights)
    cache_root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    out_path = Path(out) if out is not None else prepared_table_path(dataset, config.backbone, cache_root)

    _check_writable(out_path)
    hasher = FileHasher(cache_root / "extract" / "file-index.json")
    try:
        keys = _hash_files(manifest, hasher, progress)
    finally:
        hasher.save()
    cache = EmbeddingCache(cache_root / "extract" / settings.key())
    found = cache.lookup(set(keys.values()))
    paths = {c.clip_id: c.path for c in manifest.clips}
    todo: dict[str, WorkItem] = {}
    for cid, k in keys.items():
        if k not in found and k not in todo:
            todo[k] = WorkItem(key=k, name=cid, path=str(paths[cid]))
    cached_files = sum(1 for k in keys.values() if k in found)
    log.info("%s: %d clips, %d cached, %d files to embed with %s", dataset, len(keys), cached_files,
             len(todo), settings.backbone)

    failures: dict[str, tuple[str, str]] = {}
    if todo:
        failures = _embed(list(todo.values()), settings, config, weights, cache, runner, progress)
    skipped = tuple((cid, failures[k][1]) for cid, k in keys.items() if k in failures)
    if skipped:
        manifest = manifest.without([cid for cid, _ in skipped])
    embeddings = cache.lookup(set(keys.values()))
    X = np.stack([embeddings[keys[c.clip_id]] for c in manifest.clips])  # (N, D)
    meta = _metadata(manifest, settings, config, weights, skipped, X.shape[1])
    df = table_from_arrays(X, [c.label for c in manifest.clips], manifest.label_names,
                           [c.fold for c in manifest.clips], [c.group for c in manifest.clips],
                           [c.clip_id for c in manifest.clips])
    save_table(df, out_path, meta)
    seconds = time.perf_counter() - start
    log.info("wrote %s: %d x %d in %.1f s", out_path, X.shape[0], X.shape[1], seconds)
    return PrepareResult(path=out_path, table=load_table(out_path), embedded=len(todo) - len(failures),
                         cached=cached_files, skipped=skipped, seconds=seconds)


def _embed(items: Sequence[WorkItem], settings: ExtractSettings, config: PrepareConfig,
           weights: _Weights | None, cache: EmbeddingCache, runner: Runner | None,
           progress: Progress | None) -> dict[str, tuple[str, str]]:
    """Run the runner over ``items``; returns failures ``{key: (name, message)}`` (skip mode)."""
    state_dict = None if weights is None else weights.load()
    source = "<random init>" if weights is None else weights.source
    if runner is not None and state_dict is not None:
        Embedder(settings, state_dict, source)  # weights that do not fit fail here, before any worker starts
    size = config.batch_size or default_batch_size(settings.backbone)
    results = (runner or run_in_process)(items, settings, state_dict, batch_size=size, weights_source=source)
    failures: dict[str, tuple[str, str]] = {}
    done = 0
    try:
        for result in results:
            cache.add(result.keys, result.X)
            for key, name, message in result.failures:
                if config.on_bad_audio is BadAudio.FAIL:
                    more = "" if len(result.failures) == 1 else f" (and {len(result.failures) - 1} more in its batch)"
                    raise DataError(f"{message}{more}; fix or remove the file, or pass --on-bad-audio skip "
                                    "to leave unreadable files out")
                failures[key] = (name, message)
            done += result.n_items
            if progress is not None:
                progress("embed", done, len(items))
    finally:
        close = getattr(results, "close", None)
        if close is not None:
            close()  # stops a runner's workers when we leave early
        cache.flush()  # what was embedded is kept, so a rerun resumes here
    return failures


def _metadata(manifest: Manifest, settings: ExtractSettings, config: PrepareConfig,
              weights: _Weights | None, skipped: Sequence[tuple[str, str]], dim: int) -> dict[str, object]:
    meta: dict[str, object] = {
        "dataset": manifest.dataset,
        "root": str(manifest.root),
        "backbone": settings.backbone,
        "embedding_dim": dim,
        "weights": None,
        **({} if weights is None else weights.meta),
        "weights_sha256": None if weights is None else weights.sha256,
        "random_init": settings.random_init,
        "sample_rate": settings.mel.sample_rate,
        "mel": settings.mel.to_dict(),
        "clip_seconds": settings.clip_seconds,
        "image": settings.image(),
        "adapter": manifest.details,
        "n_clips": len(manifest.clips),
        "n_skipped": len(skipped),
        "skipped": [{"clip_id": c, "error": m} for c, m in skipped[:MAX_SKIPPED_IN_META]],
        "on_bad_audio": config.on_bad_audio.value,
        "extract_settings_key": settings.key(),
        "qmoe_version": qmoe.__version__,
        "torch_version": torch.__version__,
        "timm_version": version("timm") if needs_weights(settings.backbone) else None,
        "created_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
    }
    if settings.random_init:
        meta["random_init_seed"] = settings.init_seed
        meta["warning"] = "random-init embeddings (tests only): not ImageNet features"
    return meta

