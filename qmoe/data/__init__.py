"""Data: embedding tables, splits, the built-in synth dataset, features and the registry.

Typical use::

    from qmoe.data import resolve_table, train_val_test_indices
    table = resolve_table("synth", None)        # or resolve_table(None, "table.parquet")
    split = train_val_test_indices(table, fold=1, protocol="clean", seed=0)

    from qmoe.data import PrepareConfig, prepare_dataset   # a dataset folder -> a table
    prepare_dataset("esc50", "ESC-50-master", PrepareConfig(backbone="melstats"))
    table = resolve_table("esc50", None)                # found where prepare put it

Names are imported lazily (PEP 562), so ``import qmoe.data.table`` alone does not pay
for torch/torchaudio (~2 s): only the feature code needs them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmoe.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    # table
    "EmbeddingTable": "table",
    "load_table": "table",
    "save_table": "table",
    "table_from_arrays": "table",
    "validate_frame": "validate",
    # splits
    "Split": "splits",
    "SplitProtocol": "splits",
    "parse_protocol": "splits",
    "stratified_group_folds": "splits",
    "train_val_test_indices": "splits",
    # synth
    "CLASS_NAMES": "synth",
    "SynthConfig": "synth",
    "generate_clips": "synth",
    # features
    "BACKBONES": "features",
    "Clip": "features",
    "LogMelConfig": "features",
    "embed_clips": "features",
    "log_mel": "features",
    # datasets
    "DATASETS": "datasets",
    "DATA_CODE_VERSION": "datasets",
    "DatasetSpec": "datasets",
    "build_synth_table": "datasets",
    "default_cache_dir": "datasets",
    "prepared_table_path": "datasets",
    "resolve_table": "datasets",
    "synth_table_path": "datasets",
    "PreparedInfo": "datasets",
    "list_prepared": "datasets",
    "prepared_backbones": "datasets",
    # real datasets -> tables
    "ADAPTERS": "adapters",
    "AdapterOptions": "adapters",
    "ClipRef": "adapters",
    "Manifest": "adapters",
    "build_manifest": "adapters",
    "BadAudio": "prepare",
    "PrepareConfig": "prepare",
    "PrepareResult": "prepare",
    "prepare_dataset": "prepare",
    "ExtractSettings": "extract",
    "Embedder": "extract",
    "WorkItem": "extract",
    "BatchResult": "extract",
    "TIMM_BACKBONES": "image_backbones",
    "mel_image": "image_backbones",
    "load_clip": "audio",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from qmoe.data.adapters import ADAPTERS, AdapterOptions, ClipRef, Manifest, build_manifest
    from qmoe.data.audio import load_clip
    from qmoe.data.datasets import (
        DATA_CODE_VERSION,
        DATASETS,
        DatasetSpec,
        PreparedInfo,
        build_synth_table,
        default_cache_dir,
        list_prepared,
        prepared_backbones,
        prepared_table_path,
        resolve_table,
        synth_table_path,
    )
    from qmoe.data.extract import BatchResult, Embedder, ExtractSettings, WorkItem
    from qmoe.data.image_backbones import TIMM_BACKBONES, mel_image
    from qmoe.data.prepare import BadAudio, PrepareConfig, PrepareResult, prepare_dataset
    from qmoe.data.features import BACKBONES, Clip, LogMelConfig, embed_clips, log_mel
    from qmoe.data.splits import (
        Split,
        SplitProtocol,
        parse_protocol,
        stratified_group_folds,
        train_val_test_indices,
    )
    from qmoe.data.synth import CLASS_NAMES, SynthConfig, generate_clips
    from qmoe.data.table import EmbeddingTable, load_table, save_table, table_from_arrays
    from qmoe.data.validate import validate_frame
