"""Routing statistics of a mixture on the test fold (DESIGN §6)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
from scipy.stats import entropy

from qmoe.models.moe import MoEOutput
from qmoe.spec import unique_names


def routing_samples(out: MoEOutput, names: list[str], clip_ids: np.ndarray, y_true: np.ndarray,
                    y_pred: np.ndarray) -> pd.DataFrame:
    """One row per test sample: the top-1 expert, its confidence, uncertainty and KL."""
    labels = unique_names(names)
    top = out.selected[:, 0]  # (B,)
    rows = np.arange(len(top))
    return pd.DataFrame({
        "clip_id": np.asarray(clip_ids).astype(str),
        "expert": [labels[i] for i in top.tolist()],
        "confidence": out.p_cur[rows, top].numpy().astype(np.float64),
        "router_p": out.p[rows, top].numpy().astype(np.float64),
        "uncertainty": out.uncertainty[rows, top].numpy().astype(np.float64),
        "kl": out.kl[rows, top].numpy().astype(np.float64),
        "label": np.asarray(y_true, dtype=np.int64),
        "pred": np.asarray(y_pred, dtype=np.int64),
        "correct": np.asarray(y_true) == np.asarray(y_pred),
    })


def _mean(x: pd.Series) -> float | None:
    return float(x.mean()) if len(x) else None


def routing_summary(samples: pd.DataFrame, names: list[str]) -> tuple[dict[str, dict], float]:
    """Per expert {share, confidence, kl, uncertainty, accuracy} and the entropy of the shares.

    Confidence, KL, uncertainty and accuracy are means over the samples the expert received
    (``None`` for an expert that received none).
    """
    labels = unique_names(names)
    summary: dict[str, dict] = {}
    shares = []
    for name in labels:
        mine = samples[samples["expert"] == name]
        share = len(mine) / max(len(samples), 1)
        shares.append(share)
        summary[name] = {"share": share, "confidence": _mean(mine["confidence"]),
                         "kl": _mean(mine["kl"]), "uncertainty": _mean(mine["uncertainty"]),
                         "accuracy": _mean(mine["correct"].astype(float))}
    ent = float(entropy(shares)) if sum(shares) > 0 else math.nan
    return summary, ent
