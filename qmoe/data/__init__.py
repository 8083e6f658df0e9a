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

_MODULES: dict[str, tuple[str, ...]] = {  # submodule -> the names it exports
    "table": ("EmbeddingTable", "load_table", "save_table", "table_from_arrays"),
    "validate": ("validate_frame",),
    "splits": ("Split", "SplitProtocol", "parse_protocol", "stratified_group_folds",
               "train_val_test_indices"),
    "synth": ("CLASS_NAMES", "SynthConfig", "generate_clips"),
    "backbones": ("BACKBONES", "embed_clips"),
    "frontend": ("Clip", "LogMelConfig"),
    "features": ("log_mel",),
    "datasets": ("DATASETS", "DATA_CODE_VERSION", "DatasetSpec", "build_synth_table", "default_cache_dir",
                 "prepared_table_path", "resolve_table", "synth_table_path", "PreparedInfo", "list_prepared",
                 "prepared_backbones"),
    "adapters": ("ADAPTERS", "AdapterOptions", "ClipRef", "Manifest", "build_manifest"),
    "prepare": ("BadAudio", "PrepareConfig", "PrepareResult", "prepare_dataset"),
    "extract": ("ExtractSettings", "Embedder", "WorkItem", "BatchResult"),
    "image_backbones": ("TIMM_BACKBONES", "mel_image"),
    "audio": ("load_clip",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _MODULES, globals())


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
    from qmoe.data.backbones import BACKBONES, embed_clips
    from qmoe.data.features import log_mel
    from qmoe.data.frontend import Clip, LogMelConfig
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
