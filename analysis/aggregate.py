"""Fold-level aggregates: mean ± std per group, fold pairing, routing shares.

Everything here works on the finished rows of one protocol: pairing is by (dataset, fold), and a
fold that one side lacks is reported, never filled in.
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

    ``n`` counts the folds with a value, so a fold whose metric is missing is not averaged.
    """
    rows = []
    for values, group in df.groupby(keys, sort=True, dropna=False):
        row = dict(zip(keys, values if isinstance(values, tuple) else (values,)))
        for metric in metrics:
            mean, std, n = mean_std(pd.to_numeric(group[metric], errors="coerce"))
            row |= {f"{metric}_mean": mean, f"{metric}_std": std, f"{metric}_n": n}
        rows.append(row)
    return pd.DataFrame(rows)


@dataclass(frozen=True, kw_only=True)
class Paired:
    """A metric of two configurations on the folds both have."""

    folds: list[int]
    a: np.ndarray  # candidate, one value per fold in ``folds``
    b: np.ndarray  # reference
    test_train_ratio: float  # mean n_test / n_train of the paired rows (Nadeau-Bengio)
    missing: str  # "" or which folds had no partner, e.g. "Q4-Base lacks fold 3 (errored)"

    @property
    def n(self) -> int:
        return len(self.folds)


def _by_fold(rows: pd.DataFrame, metric: str) -> dict[int, float]:
    values = pd.to_numeric(rows[metric], errors="coerce")
    return {int(f): float(v) for f, v in zip(rows["fold"], values) if pd.notna(v) and math.isfinite(v)}


def _why(label: str, folds: list[int], failed: set[int]) -> str:
    parts = []
    for fold in folds:
        parts.append(f"{fold} (errored)" if fold in failed else str(fold))
    noun = "fold" if len(folds) == 1 else "folds"
    return f"{label} lacks {noun} {', '.join(parts)}"


def pair(group: pd.DataFrame, config_a: str, config_b: str, metric: str,
         errors: pd.DataFrame | None = None) -> Paired:
    """Pair ``metric`` of two configs by fold within one (protocol, dataset) group.

    Args:
        group: finished rows of one protocol and one dataset.
        config_a, config_b: the ``config`` ids of candidate and reference.
        metric: a numeric column.
        errors: errored rows of the same protocol and dataset, to say why a fold is missing.
    """
    rows_a = group[group["config"] == config_a]
    rows_b = group[group["config"] == config_b]
    va, vb = _by_fold(rows_a, metric), _by_fold(rows_b, metric)
    folds = sorted(set(va) & set(vb))
    failed: dict[str, set[int]] = {}
    if errors is not None and not errors.empty:
        for cfg in (config_a, config_b):
            failed[cfg] = set(errors.loc[errors["config"] == cfg, "fold"].astype(int))
    label_a = rows_a["label"].iloc[0] if len(rows_a) else config_a
    label_b = rows_b["label"].iloc[0] if len(rows_b) else config_b
    why = []
    only_b = sorted(set(vb) - set(va))
    only_a = sorted(set(va) - set(vb))
    if only_b:
        why.append(_why(label_a, only_b, failed.get(config_a, set())))
    if only_a:
        why.append(_why(label_b, only_a, failed.get(config_b, set())))
    both = pd.concat([rows_a, rows_b])
    both = both[both["fold"].isin(folds)]
    ratio = pd.to_numeric(both["n_test"], errors="coerce") / pd.to_numeric(both["n_train"], errors="coerce")
    ratio = ratio[np.isfinite(ratio)]
    return Paired(folds=folds, a=np.array([va[f] for f in folds]), b=np.array([vb[f] for f in folds]),
                  test_train_ratio=float(ratio.mean()) if len(ratio) else math.nan,
                  missing="; ".join(why))


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
