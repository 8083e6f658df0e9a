"""Fold-level aggregates: mean ± std per group, fold pairing, routing shares.

Everything here works on the finished rows of one protocol: pairing is by (dataset, split_seed,
fold, seed), and a cell that one side lacks is reported, never filled in.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qmoe.analysis.configs import precision
from qmoe.analysis.stats import mean_std


def summarise(df: pd.DataFrame, keys: list[str], metrics: Iterable[str]) -> pd.DataFrame:
    """Per group of ``keys``: ``{metric}_mean``, ``{metric}_std`` (ddof 1) and ``{metric}_n``.

    The values are one per fold unit (split_seed, fold): the mean over its seeds, so the std is
    the spread over folds, whatever the number of seeds. ``n`` counts the folds with a value, so
    a fold whose metric is missing is not averaged.
    """
    rows = []
    for values, group in df.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        for metric in metrics:
            mean, std, n = mean_std(fold_means(group, metric))
            row |= {f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": n}
        rows.append(row)
    return pd.DataFrame(rows)


CELL = ("split_seed", "fold", "seed")  # one trial of a configuration: a fold of a split, one seed
UNIT = ("split_seed", "fold")  # a test fold of one fold assignment


@dataclass(frozen=True, kw_only=True)
class Paired:
    """A metric of two configurations on the (split_seed, fold, seed) cells both have.

    ``a`` and ``b`` hold one value per fold unit (split_seed, fold): the mean over that unit's
    paired cells (seeds), so tests that need independent folds see one value per fold and a
    ratio of means uses exactly the cells the tests use. ``cells`` keeps every paired cell.
    """

    units: list[tuple[int, int]]  # (split_seed, fold) with at least one paired cell, sorted
    a: np.ndarray  # candidate, one value per unit
    b: np.ndarray  # reference
    cells: pd.DataFrame  # split_seed, fold, seed, a, b: every paired cell
    test_train_ratio: float  # mean n_test / n_train of the paired rows (Nadeau-Bengio)
    missing: str  # "" or which cells had no partner, e.g. "Q4-Base lacks fold 3 (errored)"

    @property
    def n(self) -> int:
        """Paired fold units."""
        return len(self.units)

    @property
    def folds(self) -> list[int]:
        """The fold numbers of the paired units."""
        return [f for _, f in self.units]

    @property
    def n_cells(self) -> int:
        return len(self.cells)

    @property
    def n_splits(self) -> int:
        return len({s for s, _ in self.units})

    @property
    def n_seeds(self) -> int:
        """Seeds per fold unit (the most any unit has)."""
        return int(self.cells.groupby(list(UNIT)).size().max()) if len(self.cells) else 0

    @property
    def fold_text(self) -> str:
        """``1, 2, 5`` (one split) or ``s0:1, s0:2, s1:1`` (repeated k-fold)."""
        if self.n_splits <= 1:
            return ", ".join(str(f) for f in self.folds)
        return ", ".join(f"s{s}:{f}" for s, f in self.units)


def _by_cell(rows: pd.DataFrame, metric: str) -> dict[tuple[int, int, int], float]:
    values = pd.to_numeric(rows[metric], errors="coerce")
    keys = zip(rows["split_seed"], rows["fold"], rows["seed"])
    return {(int(s), int(f), int(e)): float(v) for (s, f, e), v in zip(keys, values)
            if pd.notna(v) and math.isfinite(v)}


def _name(cell: tuple[int, int, int], seeds: bool, splits: bool) -> str:
    split, fold, seed = cell
    return f"fold {fold}" + (f" seed {seed}" if seeds else "") + (f" split {split}" if splits else "")


def _why(label: str, cells: list[tuple[int, int, int]], failed: set[tuple[int, int, int]],
         seeds: bool, splits: bool) -> str:
    parts = [_name(c, seeds, splits) + (" (errored)" if c in failed else "") for c in cells]
    if not seeds and not splits:  # "fold 3" / "folds 1, 3 (errored)": the fold number alone
        parts = [p.removeprefix("fold ") for p in parts]
        noun = "fold" if len(cells) == 1 else "folds"
        return f"{label} lacks {noun} {', '.join(parts)}"
    shown = ", ".join(parts[:6]) + (f" and {len(parts) - 6} more" if len(parts) > 6 else "")
    return f"{label} lacks {len(cells)} cell(s): {shown}"


def _cells(rows: pd.DataFrame) -> set[tuple[int, int, int]]:
    return {(int(s), int(f), int(e)) for s, f, e in zip(rows["split_seed"], rows["fold"], rows["seed"])}


def pair(group: pd.DataFrame, config_a: str, config_b: str, metric: str,
         errors: pd.DataFrame | None = None) -> Paired:
    """Pair ``metric`` of two configs by (split_seed, fold, seed) within one (protocol, dataset) group.

    Args:
        group: finished rows of one protocol and one dataset.
        config_a, config_b: the ``config`` ids of candidate and reference.
        metric: a numeric column.
        errors: errored rows of the same protocol and dataset, to say why a cell is missing.
    """
    rows_a = group[group["config"] == config_a]
    rows_b = group[group["config"] == config_b]
    va, vb = _by_cell(rows_a, metric), _by_cell(rows_b, metric)
    both = sorted(set(va) & set(vb))
    failed: dict[str, set[tuple[int, int, int]]] = {}
    if errors is not None and not errors.empty:
        for cfg in (config_a, config_b):
            failed[cfg] = _cells(errors[errors["config"] == cfg])
    label_a = rows_a["label"].iloc[0] if len(rows_a) else config_a
    label_b = rows_b["label"].iloc[0] if len(rows_b) else config_b
    every = set(va) | set(vb)
    seeds = len({c[2] for c in every}) > 1
    splits = len({c[0] for c in every}) > 1
    why = []
    if only_b := sorted(set(vb) - set(va)):
        why.append(_why(label_a, only_b, failed.get(config_a, set()), seeds, splits))
    if only_a := sorted(set(va) - set(vb)):
        why.append(_why(label_b, only_a, failed.get(config_b, set()), seeds, splits))
    cells = pd.DataFrame({"split_seed": [c[0] for c in both], "fold": [c[1] for c in both],
                          "seed": [c[2] for c in both], "a": [va[c] for c in both], "b": [vb[c] for c in both]},
                         columns=[*CELL, "a", "b"])
    means = cells.groupby(list(UNIT), sort=True)[["a", "b"]].mean()
    rows = pd.concat([rows_a, rows_b])
    rows = rows[[c in set(both) for c in zip(rows["split_seed"], rows["fold"], rows["seed"])]]
    ratio = pd.to_numeric(rows["n_test"], errors="coerce") / pd.to_numeric(rows["n_train"], errors="coerce")
    ratio = ratio[np.isfinite(ratio)]
    return Paired(units=[(int(s), int(f)) for s, f in means.index], a=means["a"].to_numpy(dtype=float),
                  b=means["b"].to_numpy(dtype=float), cells=cells.astype({"a": float, "b": float}),
                  test_train_ratio=float(ratio.mean()) if len(ratio) else math.nan, missing="; ".join(why))


def fold_means(rows: pd.DataFrame, metric: str) -> np.ndarray:
    """One value per fold unit (split_seed, fold) of one configuration: the mean over its seeds."""
    values = rows.assign(_v=pd.to_numeric(rows[metric], errors="coerce")).dropna(subset=["_v"])
    return values.groupby(list(UNIT))["_v"].mean().to_numpy(dtype=float)


def baseline(group: pd.DataFrame, config: str) -> str | None:
    """The plain-routing (alpha = 0) config a mixture config is compared with, in one group.

    The same model at alpha = 0, preferring the same curiosity variant (a sweep may record
    plain routing under each variant; at alpha = 0 they are the same model) and else the first.
    """
    row = group[group["config"] == config].iloc[0]
    plain = group[(group["model"] == row["model"]) & (group["alpha"] == 0)]
    if plain.empty:
        return None
    same = plain[plain["curiosity"] == row["curiosity"]]
    return str((same if len(same) else plain)["config"].iloc[0])


def parse_routing(text) -> dict[str, dict[str, float]]:
    """The ``routing`` JSON of one row ({} for single models, null or unreadable text)."""
    if not isinstance(text, str) or not text.strip():
        return {}
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}


def mean_shares(rows: pd.DataFrame) -> dict[str, float]:
    """Mean routing share per expert over the rows (folds) that report one."""
    collected: dict[str, list[float]] = {}
    for text in rows["routing"]:
        for expert, stats in parse_routing(text).items():
            share = stats.get("share") if isinstance(stats, dict) else None
            if isinstance(share, (int, float)) and math.isfinite(share):
                collected.setdefault(expert, []).append(float(share))
    return {e: float(np.mean(v)) for e, v in collected.items()}


def config_order(df: pd.DataFrame) -> list[str]:
    """Configs in a stable reading order: singles by bits/name, then mixtures by model and alpha."""
    first = df.drop_duplicates("config")

    def key(r) -> tuple:
        if r.kind == "single":
            p = precision(r.model)
            return (0, -(p if math.isfinite(p) else 0.0), r.label, 0.0)
        return (1, 0.0, r.model, r.alpha, r.label)

    return [r.config for r in sorted(first.itertuples(), key=key)]
