"""The dataset registry and ``resolve_table``: from ``--dataset``/``--data`` to a table.

``synth`` is built in: its embedding table is generated once per settings and cached
under ``$QMOE_CACHE`` (default ``~/.cache/qmoe``) in a file named by a hash of those
settings, so every later call just loads it. The real datasets (``esc50``,
``urbansound8k``, ``quinn``) are known by name; their audio must first be turned into a
table by ``qmoe data prepare NAME --root DIR`` (:mod:`qmoe.data.prepare`), which writes it
to :func:`prepared_table_path` (``<cache>/tables/NAME-BACKBONE.parquet``); from then on
``resolve_table(NAME)`` and ``--dataset NAME`` find it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import qmoe
from qmoe.cache_root import default_cache_dir
from qmoe.data.frontend import LogMelConfig
from qmoe.data.synth import CLASS_NAMES, SynthConfig, generate_clips
from qmoe.data.table import EmbeddingTable, load_table, save_table, table_from_arrays
from qmoe.errors import DataError
from qmoe.registry import Registry

log = logging.getLogger(__name__)

#: Bump whenever the synth generator or the feature code changes its output: the cached
#: synth tables are keyed by it, so a bump rebuilds them instead of reusing stale ones.
DATA_CODE_VERSION = "1"
DEFAULT_DATASET = "synth"
DEFAULT_BACKBONE = "melstats"


@dataclass(frozen=True, kw_only=True)
class DatasetSpec:
    """What qmoe knows about a dataset by name.

    Attributes:
        name: registry key (``--dataset``).
        description: one line for ``qmoe data list``.
        n_classes: number of classes.
        folds: how folds are defined (for ``qmoe data list``).
        builtin: True if qmoe can build it with no download (only ``synth``).
        official_folds: True if the folds are the dataset's own, published ones (results are
            compared on them; repeated k-fold must not reassign them: use training seeds).
    """

    name: str
    description: str
    n_classes: int
    folds: str
    builtin: bool = False
    official_folds: bool = False


#: Known datasets by name.
DATASETS: Registry[DatasetSpec] = Registry("dataset")

for _spec in (
    DatasetSpec(
        name="synth",
        description="built-in seeded synthetic sounds (tones, chirps, AM/FM, noise, clicks)",
        n_classes=SynthConfig().n_classes,
        folds="5 generated folds, group = sound source",
        builtin=True,
    ),
    DatasetSpec(name="esc50", description="ESC-50 environmental sounds", n_classes=50,
                folds="official 1..5, group = src_file", official_folds=True),
    DatasetSpec(name="urbansound8k", description="UrbanSound8K urban sounds", n_classes=10,
                folds="official 1..10, group = fsID", official_folds=True),
    DatasetSpec(name="quinn", description="Quinn soundscape categories", n_classes=5,
                folds="stratified group-aware k folds, fixed seed"),
):
    DATASETS.add(_spec.name, _spec)


def official_folds_of(table: EmbeddingTable) -> str | None:
    """The dataset's name when ``table``'s folds are a dataset's official ones (by the dataset
    its metadata names: esc50, urbansound8k), else None (synth, quinn, a table of one's own)."""
    name = table.meta.get("dataset")
    return name if isinstance(name, str) and name in DATASETS and DATASETS.get(name).official_folds else None


def prepared_table_path(
    name: str, backbone: str = DEFAULT_BACKBONE, cache_dir: str | Path | None = None
) -> Path:
    """Where ``qmoe data prepare NAME`` puts the table of a real dataset."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    return root / "tables" / f"{name}-{backbone}.parquet"


def prepared_backbones(name: str, cache_dir: str | Path | None = None) -> list[str]:
    """Backbones for which a table of dataset ``name`` has been prepared, sorted."""
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    prefix = f"{name}-"
    return sorted(p.stem[len(prefix):] for p in (root / "tables").glob(f"{prefix}*.parquet")
                  if p.stem[len(prefix):] and "-" not in p.stem[len(prefix):])


@dataclass(frozen=True, kw_only=True)
class PreparedInfo:
    """A prepared table, as ``qmoe data list`` shows it (read without loading the embeddings)."""

    path: Path
    dataset: str
    backbone: str
    rows: int
    classes: int
    folds: list[int]
    dim: int
    random_init: bool
    created_at: str


def list_prepared(cache_dir: str | Path | None = None) -> list[PreparedInfo]:
    """Every table under ``<cache>/tables``, sorted by file name; unreadable files are skipped."""
    import pyarrow.parquet as pq

    from qmoe.data.table import META_KEY

    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    found = []
    for path in sorted((root / "tables").glob("*.parquet")):
        try:
            schema = pq.read_schema(path)
            meta = json.loads((schema.metadata or {}).get(META_KEY, b"{}"))
            cols = pq.read_table(path, columns=["label", "fold"])
        except Exception as err:  # a listing must not die on one bad file
            log.warning("skipping %s in the listing: %s", path, err)
            continue
        labels, folds = cols.column("label").to_numpy(), cols.column("fold").to_numpy()
        found.append(PreparedInfo(
            path=path, dataset=str(meta.get("dataset", path.stem)), backbone=str(meta.get("backbone", "?")),
            rows=len(labels), classes=len(set(labels.tolist())), folds=sorted(set(folds.tolist())),
            dim=sum(1 for n in schema.names if n[:1] == "e" and n[1:].isdigit()),
            random_init=bool(meta.get("random_init", False)), created_at=str(meta.get("created_at", "")),
        ))
    return found


def _synth_settings(cfg: SynthConfig, mel: LogMelConfig, backbone: str) -> dict[str, Any]:
    return {
        "synth": cfg.to_dict(),
        "mel": mel.to_dict(),
        "backbone": backbone,
        "data_code_version": DATA_CODE_VERSION,
    }


def synth_table_path(
    cache_dir: str | Path | None = None,
    cfg: SynthConfig = SynthConfig(),
    *,
    backbone: str = DEFAULT_BACKBONE,
    mel: LogMelConfig = LogMelConfig(),
) -> Path:
    """Path of the cached synth table for these settings, building it on first use.

    The file name is a hash of the synth config, the log-Mel settings, the backbone and
    :data:`DATA_CODE_VERSION`; a second call with the same settings returns at once.
    Concurrent first calls are safe: each writes atomically, with identical content.

    Args:
        cache_dir: cache root; default :func:`default_cache_dir`.
        cfg: synth settings.
        backbone: backbone name.
        mel: log-Mel settings.

    Returns:
        Path to the Parquet table.
    """
    root = Path(cache_dir) if cache_dir is not None else default_cache_dir()
    blob = json.dumps(_synth_settings(cfg, mel, backbone), sort_keys=True).encode()
    path = root / "synth" / f"synth-{backbone}-{hashlib.sha256(blob).hexdigest()[:16]}.parquet"
    if path.is_file():
        log.debug("synth table cache hit: %s", path)
        return path
    log.info("building the synth embedding table (%d clips) into %s", cfg.n_clips, path)
    build_synth_table(path, cfg, backbone=backbone, mel=mel)
    return path


def build_synth_table(
    path: str | Path,
    cfg: SynthConfig = SynthConfig(),
    *,
    backbone: str = DEFAULT_BACKBONE,
    mel: LogMelConfig = LogMelConfig(),
) -> EmbeddingTable:
    """Generate the synth clips, embed them and write the table to ``path`` (always rebuilds).

    Returns:
        The validated table as written (its ``meta`` records dataset, backbone,
        sample rate, log-Mel and synth settings, and versions).
    """
    from qmoe.data.backbones import embed_clips  # torch: only when a table is built

    start = time.perf_counter()
    clips = list(generate_clips(cfg))
    X = embed_clips(clips, backbone, mel)
    meta = {
        "dataset": "synth",
        "backbone": backbone,
        "sample_rate": mel.sample_rate,
        **_synth_settings(cfg, mel, backbone),
        "qmoe_version": qmoe.__version__,
    }
    df = table_from_arrays(
        X,
        [c.label for c in clips],
        CLASS_NAMES[: cfg.n_classes],
        [c.fold for c in clips],
        [c.group for c in clips],
        [c.clip_id for c in clips],
    )
    save_table(df, path, meta)
    log.info("synth table: %d x %d in %.1f s", X.shape[0], X.shape[1], time.perf_counter() - start)
    return load_table(path)


def resolve_table(
    dataset: str | None = None,
    data: str | Path | None = None,
    *,
    cache_dir: str | Path | None = None,
    backbone: str | None = None,
) -> EmbeddingTable:
    """The embedding table a command should run on.

    Args:
        dataset: a registered dataset name (``--dataset``); default ``synth``.
        data: a Parquet table (``--data``); wins over ``dataset``.
        cache_dir: cache root; default :func:`default_cache_dir`.
        backbone: which prepared table of the dataset to use. None: ``melstats`` if that one
            is prepared, else the only one prepared (several -> DataError naming them).

    Returns:
        The validated table.

    Raises:
        UnknownNameError: unknown dataset name (lists the known ones).
        DataError: ``data`` missing or invalid, or a real dataset not prepared yet.
    """
    if data is not None:
        return load_table(data)
    name = dataset or DEFAULT_DATASET
    spec = DATASETS.get(name)
    if spec.name == "synth":
        return load_table(synth_table_path(cache_dir, backbone=backbone or DEFAULT_BACKBONE))
    if backbone is None:
        ready = prepared_backbones(name, cache_dir)
        if len(ready) > 1 and DEFAULT_BACKBONE not in ready:
            paths = ", ".join(str(prepared_table_path(name, b, cache_dir)) for b in ready)
            raise DataError(f"dataset {name!r} is prepared with several backbones ({', '.join(ready)}); "
                            f"pick one table with --data ({paths})")
        backbone = DEFAULT_BACKBONE if DEFAULT_BACKBONE in ready or not ready else ready[0]
    path = prepared_table_path(name, backbone, cache_dir)
    if not path.is_file():
        raise DataError(
            f"dataset {name!r} is not prepared yet (no {path}); run "
            f"`qmoe data prepare {name} --root DIR` with DIR the dataset as downloaded, "
            "or pass a ready table with --data"
        )
    return load_table(path)
