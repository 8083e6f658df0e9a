"""Dataset adapters: a folder as distributed -> a clip manifest (DESIGN §2.2).

Each adapter reads one published layout and returns a :class:`Manifest`: one
:class:`ClipRef` (file, label, fold, group) per clip, the class names, and the dataset's
clip length. Nothing is decoded here; layout problems (a root that is not the dataset,
missing columns, files named in the CSV but absent) fail at once with one
:class:`~qmoe.errors.DataError`, before any extraction starts.

- ``esc50``: ``meta/esc50.csv`` + ``audio/``; official folds (column ``fold``), group =
  ``src_file``, class = ``target``/``category``; 5 s clips. A CSV holding any subset of the
  50 classes works (labels are renumbered 0..C-1 in the order of ``target``, names kept);
  ``classes=("esc10",)`` keeps the ESC-10 rows (column ``esc10``).
- ``urbansound8k``: ``metadata/UrbanSound8K.csv`` + ``audio/fold{N}/``; official folds
  1..10, group = ``fsID`` (the Freesound recording the slice was cut from), class =
  ``classID``/``class``; 4 s clips (shorter slices are zero-padded).
- ``quinn``: one sub-folder per class (Anthropophony, Biophony, Geophony, Quiet,
  Interference), audio files anywhere below it. There are no official folds or recording
  ids, so: **group = the file name without its extension and without a trailing numeric
  segment index** (``_N`` or ``-N``), e.g. ``siteA_20190401_0630_12.wav`` -> ``siteA_20190401_0630``:
  clips cut from one recording stay on one side of every split. A different rule is a
  regular expression on the file stem (``group_pattern``; its group ``group``, or its first
  group, is the id). Folds are stratified and group-aware (``stratified_group_folds``, k = 5,
  seed 0). The clip length is the most common file duration in the folder (the published
  clips share one length), unless given.
"""

from __future__ import annotations

import logging
import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from qmoe.data.audio import AUDIO_EXTENSIONS, duration_seconds
from qmoe.data.csv_layout import (check_files, class_table, int_column, read_csv, renumber,
                                  require_layout, select_classes, str_column)
from qmoe.errors import ConfigError, DataError
from qmoe.registry import Registry

log = logging.getLogger(__name__)

#: Quinn's default group rule: the stem without a trailing ``_N``/``-N`` segment index.
QUINN_GROUP_PATTERN = r"^(?P<group>.+)[_-]\d+$"
QUINN_CLASSES = ("Anthropophony", "Biophony", "Geophony", "Interference", "Quiet")


@dataclass(frozen=True, kw_only=True)
class ClipRef:
    """One clip of a dataset, before decoding.

    Attributes:
        clip_id: the file's path relative to the dataset's audio folder (POSIX style).
        path: absolute path of the audio file.
        label: class id, 0..C-1.
        label_name: class name.
        fold: the clip's fold.
        group: recording/source id (never split across folds).
    """

    clip_id: str
    path: Path
    label: int
    label_name: str
    fold: int
    group: str


@dataclass(frozen=True, kw_only=True, eq=False)
class Manifest:
    """The clips of a dataset folder, with what the table metadata needs to know.

    Attributes:
        dataset: registry name.
        root: the dataset folder (absolute).
        source: the file (CSV) or folder that defined the clips, quoted in messages.
        clips: one entry per clip, in a stable order (the CSV's, or sorted paths).
        label_names: class names by label.
        clip_seconds: length every clip is padded or cut to.
        details: adapter settings recorded in the table's metadata.
    """

    dataset: str
    root: Path
    source: str
    clips: tuple[ClipRef, ...]
    label_names: tuple[str, ...]
    clip_seconds: float
    details: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clips)

    def check(self) -> None:
        """Validate labels, folds and groups as a table would be (before any extraction).

        Raises:
            DataError: a group in two folds, a class without training rows, one class, ...
        """
        from qmoe.data.table import table_from_arrays
        from qmoe.data.validate import validate_frame

        df = table_from_arrays(
            np.zeros((len(self.clips), 1), dtype=np.float32),
            [c.label for c in self.clips], self.label_names, [c.fold for c in self.clips],
            [c.group for c in self.clips], [c.clip_id for c in self.clips],
        )
        validate_frame(df, self.source)

    def without(self, clip_ids: Sequence[str]) -> Manifest:
        """The manifest minus some clips (e.g. unreadable ones).

        Raises:
            DataError: if that removes every clip of a class.
        """
        drop = set(clip_ids)
        kept = tuple(c for c in self.clips if c.clip_id not in drop)
        present = {c.label for c in kept}
        for label, name in enumerate(self.label_names):
            if label not in present:
                raise DataError(
                    f"{self.source}: every clip of class {name!r} is unreadable; fix those files, "
                    "or leave the class out with --classes"
                )
        return replace(self, clips=kept)


@dataclass(frozen=True, kw_only=True)
class AdapterOptions:
    """Choices an adapter takes beyond the folder.

    Attributes:
        classes: keep only these class names (all if None); ``("esc10",)`` for ESC-10.
        clip_seconds: clip length override in seconds (None: the dataset's).
        k: number of folds, for datasets without official folds (quinn).
        seed: seed of those folds.
        group_pattern: regex on the file stem giving the group (quinn; None: the default rule).
    """

    classes: tuple[str, ...] | None = None
    clip_seconds: float | None = None
    k: int = 5
    seed: int = 0
    group_pattern: str | None = None

    def __post_init__(self) -> None:
        if self.classes is not None and not [c for c in self.classes if c.strip()]:
            raise ConfigError("--classes is empty; give class names separated by commas")
        if self.clip_seconds is not None and not self.clip_seconds > 0:
            raise ConfigError(f"--clip-seconds must be > 0, got {self.clip_seconds}")
        if self.k < 2:
            raise ConfigError(f"quinn needs k >= 2 folds, got {self.k}")
        if self.group_pattern is not None:
            try:
                re.compile(self.group_pattern)
            except re.error as err:
                raise ConfigError(f"--group-pattern {self.group_pattern!r} is not a valid regular "
                                  f"expression ({err})") from None


Adapter = Callable[[Path, AdapterOptions], Manifest]

#: Adapters by dataset name: ``ADAPTERS.get(name)(root, options) -> Manifest``.
ADAPTERS: Registry[Adapter] = Registry("dataset adapter")


def build_manifest(dataset: str, root: str | Path, options: AdapterOptions = AdapterOptions()) -> Manifest:
    """Read the dataset folder ``root`` with the adapter registered as ``dataset``.

    Raises:
        UnknownNameError: no adapter of that name (lists the known ones).
        ConfigError: options that do not apply to the dataset.
        DataError: the folder is not in the dataset's layout, or names missing files.
    """
    adapter = ADAPTERS.get(dataset)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise DataError(f"--root {root}: no such folder; point it at the {dataset} dataset as downloaded")
    if dataset != "quinn" and options.group_pattern is not None:
        raise ConfigError(f"--group-pattern applies to quinn only; {dataset} has official groups")
    manifest = adapter(root.resolve(), options)
    if options.clip_seconds is not None:
        manifest = replace(manifest, clip_seconds=float(options.clip_seconds))
    manifest.check()
    log.info("%s: %d clips, %d classes, folds %s", dataset, len(manifest), len(manifest.label_names),
             sorted({c.fold for c in manifest.clips}))
    return manifest


def _csv_manifest(dataset: str, root: Path, csv: Path, df: pd.DataFrame, keep: np.ndarray,
                  paths: list[Path], audio_dir: Path, ids: np.ndarray, table: dict[int, str],
                  folds: np.ndarray, groups: np.ndarray, clip_seconds: float,
                  details: dict[str, Any]) -> Manifest:
    rows = np.flatnonzero(keep)
    if len(rows) == 0:
        raise DataError(f"{csv}: no rows left after the --classes filter")
    kept_paths = [paths[r] for r in rows]
    check_files(kept_paths, csv, "filename" if dataset == "esc50" else "slice_file_name", audio_dir)
    labels, names = renumber(ids[rows], table)
    clips = tuple(
        ClipRef(clip_id=p.relative_to(audio_dir).as_posix(), path=p, label=int(lab),
                label_name=names[lab], fold=int(folds[r]), group=str(groups[r]))
        for r, p, lab in zip(rows.tolist(), kept_paths, labels.tolist())
    )
    return Manifest(dataset=dataset, root=root, source=str(csv), clips=clips, label_names=names,
                    clip_seconds=clip_seconds, details=details)


# -- the adapters ------------------------------------------------------------------------------

@ADAPTERS.register("esc50")
def read_esc50(root: Path, options: AdapterOptions = AdapterOptions()) -> Manifest:
    """ESC-50: ``meta/esc50.csv`` + ``audio/``; folds from ``fold``, group = ``src_file``."""
    require_layout(root, ["meta/esc50.csv", "audio"], "ESC-50", "meta/esc50.csv and audio/")
    csv, audio_dir = root / "meta" / "esc50.csv", root / "audio"
    df = read_csv(csv, ["filename", "fold", "target", "category", "src_file"])
    ids = int_column(df, "target", csv)
    table = class_table(ids, str_column(df, "category", csv), csv, "target", "category")
    keep = np.ones(len(df), dtype=bool)
    classes = options.classes
    if classes is not None and [c.strip().lower() for c in classes] == ["esc10"]:
        if "esc10" not in df.columns:
            raise DataError(f"{csv}: no column 'esc10', so --classes esc10 cannot pick the ESC-10 rows")
        keep &= df["esc10"].str.strip().str.lower().isin(["true", "1", "yes"]).to_numpy()
        classes = None
    keep = select_classes(keep, ids, table, classes, "esc50")
    paths = [audio_dir / f for f in str_column(df, "filename", csv)]
    details = {"csv": "meta/esc50.csv", "group_column": "src_file",
               "classes": None if options.classes is None else list(options.classes)}
    return _csv_manifest("esc50", root, csv, df, keep, paths, audio_dir, ids, table,
                         int_column(df, "fold", csv), str_column(df, "src_file", csv), 5.0, details)


@ADAPTERS.register("urbansound8k")
def read_urbansound8k(root: Path, options: AdapterOptions = AdapterOptions()) -> Manifest:
    """UrbanSound8K: ``metadata/UrbanSound8K.csv`` + ``audio/fold{N}/``; group = ``fsID``."""
    require_layout(root, ["metadata/UrbanSound8K.csv", "audio"], "UrbanSound8K",
             "metadata/UrbanSound8K.csv and audio/fold1..fold10/")
    csv, audio_dir = root / "metadata" / "UrbanSound8K.csv", root / "audio"
    df = read_csv(csv, ["slice_file_name", "fsID", "fold", "classID", "class"])
    ids = int_column(df, "classID", csv)
    table = class_table(ids, str_column(df, "class", csv), csv, "classID", "class")
    keep = select_classes(np.ones(len(df), dtype=bool), ids, table, options.classes, "urbansound8k")
    folds = int_column(df, "fold", csv)
    names = str_column(df, "slice_file_name", csv)
    paths = [audio_dir / f"fold{f}" / n for f, n in zip(folds.tolist(), names)]
    details = {"csv": "metadata/UrbanSound8K.csv", "group_column": "fsID",
               "classes": None if options.classes is None else list(options.classes)}
    return _csv_manifest("urbansound8k", root, csv, df, keep, paths, audio_dir, ids, table,
                         folds, str_column(df, "fsID", csv), 4.0, details)


def quinn_group(stem: str, pattern: str | None = None) -> str:
    """The group id of a Quinn file from its stem (see the module docstring)."""
    match = re.match(pattern or QUINN_GROUP_PATTERN, stem)
    if not match:
        return stem
    if "group" in match.re.groupindex:
        return match.group("group") or stem
    return (match.group(1) if match.re.groups else match.group(0)) or stem


@ADAPTERS.register("quinn")
def read_quinn(root: Path, options: AdapterOptions = AdapterOptions()) -> Manifest:
    """Quinn: one sub-folder per class; seeded, stratified, group-aware folds."""
    from qmoe.data.splits import stratified_group_folds

    def audio_files(folder: Path) -> list[Path]:
        return sorted(p for p in folder.rglob("*") if p.is_file() and p.suffix.lower() in AUDIO_EXTENSIONS
                      and not any(part.startswith(".") for part in p.relative_to(folder).parts))

    folders = [d for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")]
    per_class = {d.name: files for d in folders if (files := audio_files(d))}
    if len(per_class) < 2:
        found = ", ".join(per_class) or "none"
        raise DataError(
            f"--root {root} is not a Quinn folder: expected one sub-folder per class holding audio "
            f"files (e.g. {', '.join(QUINN_CLASSES)}), found {len(per_class)} with audio ({found})"
        )
    names = tuple(sorted(per_class))
    if options.classes is not None:
        wanted = [c.strip() for c in options.classes if c.strip()]
        unknown = [c for c in wanted if c not in per_class]
        if unknown:
            raise ConfigError(f"--classes: quinn has no class {unknown[0]!r}; known: {', '.join(names)}")
        names = tuple(n for n in names if n in wanted)
    paths = [p for n in names for p in per_class[n]]
    labels = np.array([i for i, n in enumerate(names) for _ in per_class[n]], dtype=np.int64)
    groups = np.array([quinn_group(p.stem, options.group_pattern) for p in paths], dtype=object)
    try:
        folds = stratified_group_folds(labels, groups, options.k, options.seed)
    except DataError as err:
        raise DataError(f"{root}: {err} (groups come from file names: see --group-pattern)") from None
    clip_seconds = options.clip_seconds or _common_duration(paths, root)
    clips = tuple(
        ClipRef(clip_id=p.relative_to(root).as_posix(), path=p, label=int(lab), label_name=names[lab],
                fold=int(f), group=str(g))
        for p, lab, f, g in zip(paths, labels.tolist(), folds.tolist(), groups.tolist())
    )
    details = {"folds": f"stratified group-aware, k={options.k}, seed={options.seed}",
               "k": options.k, "seed": options.seed,
               "group_pattern": options.group_pattern or QUINN_GROUP_PATTERN,
               "classes": None if options.classes is None else list(options.classes)}
    return Manifest(dataset="quinn", root=root, source=str(root), clips=clips, label_names=names,
                    clip_seconds=clip_seconds, details=details)


def _common_duration(paths: Sequence[Path], root: Path) -> float:
    """The most common duration (to 10 ms) among the files' headers; ties -> the longest."""
    counts = Counter(round(d, 2) for p in paths if (d := duration_seconds(p)) is not None)
    if not counts:
        raise DataError(f"{root}: no file has a readable audio header, so the clip length is unknown; "
                        "check the files, or pass --clip-seconds")
    best = max(counts.items(), key=lambda kv: (kv[1], kv[0]))[0]
    log.info("quinn clip length: %.2f s (%d of %d files)", best, counts[best], len(paths))
    return float(best)
