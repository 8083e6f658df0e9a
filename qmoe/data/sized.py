"""Benchmark-sized embedding tables: the shape of a real dataset, without its audio.

``qmoe bench`` times trials and sweeps at the size of the paper's datasets, which may not be
on the machine (nothing is downloaded at run time). :func:`sized_table` writes a table in the
§2.1 layout with ESC-50's shape -- 2,000 clips, 1,536-dim EfficientNet-B3-like embeddings,
50 balanced classes, 5 folds, 40 clips per class -- that is *learnable* the way real
embeddings are (classes are clusters on a low-dimensional manifold, features non-negative like
pooled CNN activations, noisy enough that an MLP needs tens of epochs and stops early),
so a trial on it trains, early-stops and measures like a real one. Its numbers are timings,
not science: the table's metadata says ``dataset = "esc50-sized"`` and ``synthetic = true``.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from qmoe.data.table import EmbeddingTable, load_table, save_table, table_from_arrays


@dataclass(frozen=True)
class SizedConfig:
    """Shape and difficulty of a benchmark-sized table (defaults: ESC-50 with EfficientNet-B3)."""

    n_clips: int = 2000
    dim: int = 1536
    n_classes: int = 50
    n_folds: int = 5
    latent: int = 48  # dimension of the class manifold
    spread: float = 1.6  # within-class noise in latent units (class means are ~N(0, 1))
    clips_per_source: int = 2  # clips cut from one recording share a group (and a fold)
    seed: int = 0


def sized_frame(cfg: SizedConfig = SizedConfig()):  # noqa: ANN201 - pandas DataFrame
    """The table as a DataFrame in the §2.1 layout (see :func:`sized_table_path`)."""
    rng = np.random.default_rng(cfg.seed)
    per_class = cfg.n_clips // cfg.n_classes
    y = np.repeat(np.arange(cfg.n_classes), per_class)  # (N,) balanced
    n = len(y)
    # folds: every class spread evenly over the folds, whole sources kept together; sources are
    # numbered within their class, so a source never spans two classes (or two folds)
    # even when per_class is not a multiple of clips_per_source
    src_per_class = -(-per_class // cfg.clips_per_source)
    src_rank = (np.arange(n) - np.searchsorted(y, y)) // cfg.clips_per_source  # (N,) within class
    sources = y * src_per_class + src_rank  # (N,) global source id
    folds = 1 + src_rank * cfg.n_folds // src_per_class  # (N,) in 1..n_folds
    means = rng.standard_normal((cfg.n_classes, cfg.latent))  # (C, L)
    z = means[y] + cfg.spread * rng.standard_normal((n, cfg.latent))  # (N, L)
    z += 0.5 * cfg.spread * rng.standard_normal((cfg.n_classes * src_per_class, cfg.latent))[sources]
    proj = rng.standard_normal((cfg.latent, cfg.dim)) / np.sqrt(cfg.latent)  # (L, D)
    X = np.maximum(z @ proj + 0.3 * rng.standard_normal((n, cfg.dim)), 0.0)  # (N, D) ReLU-pooled
    names = [f"class{c:02d}" for c in range(cfg.n_classes)]
    groups = [f"src{s:05d}" for s in sources]
    clip_ids = [f"sized-{i:05d}" for i in range(n)]
    meta = {"dataset": "esc50-sized", "synthetic": True, "backbone": "none", "sized": asdict(cfg)}
    return table_from_arrays(X.astype(np.float32), y, names, folds, groups, clip_ids, meta)


def sized_table_path(cache_dir: str | Path, cfg: SizedConfig = SizedConfig()) -> Path:
    """Path of the benchmark-sized table for ``cfg`` under ``cache_dir``, written on first use."""
    digest = hashlib.sha256(json.dumps(asdict(cfg), sort_keys=True).encode()).hexdigest()[:16]
    path = Path(cache_dir) / "sized" / f"esc50-sized-{digest}.parquet"
    if not path.is_file():
        save_table(sized_frame(cfg), path)
    return path


def sized_table(cache_dir: str | Path, cfg: SizedConfig = SizedConfig()) -> EmbeddingTable:
    """The benchmark-sized table for ``cfg``, validated (built under ``cache_dir`` if needed)."""
    return load_table(sized_table_path(cache_dir, cfg))
