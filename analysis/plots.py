"""The report's figures (matplotlib, Agg backend), each returned as PNG bytes.

Every figure is drawn with ``text.parse_math`` and ``text.usetex`` off: dataset and model names
are data, and a name such as ``$x_$`` would otherwise be parsed as mathtext and crash the figure
(or silently render as math).
"""

from __future__ import annotations

import functools
import io
import re

import matplotlib

matplotlib.use("Agg")  # no display; must precede pyplot

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from qmoe.analysis.document import Plot  # noqa: E402

DPI = 90
PLAIN_TEXT = {"text.parse_math": False, "text.usetex": False}


def plain_text(func):
    """Run a figure builder (drawing and saving) with every string rendered as plain text."""
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        with plt.rc_context(PLAIN_TEXT):
            return func(*args, **kwargs)
    return wrapper


def slug(*parts: object) -> str:
    """A file-name-safe key from parts: ``("bits", "clean")`` -> ``bits-clean``."""
    text = "-".join(str(p) for p in parts if str(p))
    return re.sub(r"[^A-Za-z0-9._-]+", "_", text).strip("_") or "plot"


def _png(fig, key: str, title: str) -> Plot:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png", dpi=DPI)
    plt.close(fig)
    return Plot(key=key, title=title, png=buf.getvalue())


@plain_text
def f1_vs_bits(data: pd.DataFrame, protocol: str) -> Plot:
    """Mean F1 per bit-width with ±1 std error bars, one line per dataset.

    ``data`` columns: dataset, bits, f1_mean, f1_std.
    """
    fig, ax = plt.subplots(figsize=(6, 3.8))
    for dataset, g in data.groupby("dataset"):
        g = g.sort_values("bits")
        ax.errorbar(g["bits"].astype(float), g["f1_mean"], yerr=g["f1_std"].fillna(0), marker="o",
                    capsize=4, label=str(dataset))
    ax.set_xscale("log", base=2)
    ticks = sorted(data["bits"].dropna().astype(int).unique())
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.set_xlabel("bits per weight (BitLinear q{k})")
    ax.set_ylabel("F1 macro (mean ± std over folds)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    title = f"F1 vs bit-width ({protocol})"
    ax.set_title(title)
    return _png(fig, slug("f1-vs-bits", protocol), title)


@plain_text
def alpha_variance(data: pd.DataFrame, model: str, protocol: str) -> Plot:
    """Left: F1 std over folds against alpha per dataset. Right: routing shares per alpha.

    ``data`` columns: dataset, alpha, f1_std, and ``share:<expert>`` columns (mean shares).
    """
    datasets = sorted(data["dataset"].unique())
    share_cols = [c for c in data.columns if c.startswith("share:") and data[c].notna().any()]
    fig, axes = plt.subplots(1, 1 + len(datasets), figsize=(3.6 * (1 + len(datasets)), 3.6), squeeze=False)
    ax = axes[0][0]
    for dataset, g in data.groupby("dataset"):
        g = g.sort_values("alpha")
        ax.plot(g["alpha"], g["f1_std"], marker="o", label=str(dataset))
    ax.set_xlabel("curiosity α")
    ax.set_ylabel("F1 std over folds")
    ax.set_ylim(bottom=0)
    ax.set_title("fold variance")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    for ax, dataset in zip(axes[0][1:], datasets):
        g = data[data["dataset"] == dataset].sort_values("alpha")
        x = np.arange(len(g))
        bottom = np.zeros(len(g))
        for col in share_cols:
            share = g[col].fillna(0).to_numpy(dtype=float)
            ax.bar(x, share, bottom=bottom, label=col.split(":", 1)[1])
            bottom += share
        ax.set_xticks(x, [f"{a:g}" for a in g["alpha"]])
        ax.set_xlabel("curiosity α")
        ax.set_ylabel("routing share")
        ax.set_ylim(0, 1)
        ax.set_title(f"shares: {dataset}")
    if share_cols and datasets:
        axes[0][-1].legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    title = f"α vs F1 std and routing shares: {model} ({protocol})"
    fig.suptitle(title, fontsize=10)
    return _png(fig, slug("alpha", model.replace(",", "+"), protocol), title)


@plain_text
def confidence_by_expert(samples: pd.DataFrame, label: str, dataset: str, protocol: str) -> Plot:
    """Distribution (box plot) of router confidence of the samples each expert received."""
    experts = sorted(samples["expert"].astype(str).unique())
    values = [samples.loc[samples["expert"] == e, "confidence"].to_numpy(dtype=float) for e in experts]
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.boxplot(values, showmeans=True)
    ax.set_xticks(range(1, len(experts) + 1), [f"{e}\n(n={len(v)})" for e, v in zip(experts, values)])
    ax.set_ylabel("router confidence of the chosen expert")
    ax.grid(alpha=0.3, axis="y")
    title = f"Confidence per expert: {label}, {dataset} ({protocol})"
    ax.set_title(title, fontsize=9)
    return _png(fig, slug("confidence", label, dataset, protocol), title)


@plain_text
def latency_by_model(ok: pd.DataFrame, order: list[str], protocol: str) -> Plot:
    """Per model: box plot over folds (and datasets) of the batch-1 latency p50, p99 as dots."""
    labels, p50s, p99s = [], [], []
    for config in order:
        rows = ok[ok["config"] == config]
        p50 = pd.to_numeric(rows["latency_p50_us"], errors="coerce").dropna().to_numpy(dtype=float)
        if len(p50) == 0:
            continue
        labels.append(str(rows["label"].iloc[0]))
        p50s.append(p50)
        p99s.append(pd.to_numeric(rows["latency_p99_us"], errors="coerce").dropna().to_numpy(dtype=float))
    fig, ax = plt.subplots(figsize=(6.5, 0.45 * len(labels) + 1.4))
    ax.boxplot(p50s, orientation="horizontal", showmeans=True)
    for i, p99 in enumerate(p99s, start=1):
        ax.scatter(p99, np.full(len(p99), i), marker="x", color="tab:red", s=14,
                   label="p99" if i == 1 else None)
    ax.set_yticks(range(1, len(labels) + 1), labels, fontsize=8)
    ax.set_xlabel("batch-1 latency (µs): box = p50 over trials, x = p99")
    ax.grid(alpha=0.3, axis="x")
    if any(len(p) for p in p99s):
        ax.legend(fontsize=8)
    title = f"Latency per model ({protocol})"
    ax.set_title(title)
    return _png(fig, slug("latency", protocol), title)


@plain_text
def tuning_progress(data: pd.DataFrame, default: float | None, name: str) -> Plot:
    """Objective per trial (dots by status) and the best so far (a step line) vs trial number.

    ``data`` columns: trial, status, objective, best_so_far.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    markers = {"complete": ("o", "tab:blue"), "stopped": ("v", "tab:gray"), "error": ("x", "tab:red")}
    for status, (marker, color) in markers.items():
        g = data[(data["status"] == status) & data["objective"].notna()]
        if len(g):
            label = {"stopped": "stopped early (ASHA)"}.get(status, status)
            ax.scatter(g["trial"], g["objective"], marker=marker, color=color, s=22, label=label)
    ax.step(data["trial"], data["best_so_far"], where="post", color="tab:green", label="best so far")
    if default is not None:
        ax.axhline(default, color="tab:orange", linestyle="--", linewidth=1, label="default settings")
    ax.set_xlabel("trial number")
    ax.set_ylabel("mean validation macro-F1")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    title = f"Tuning progress: {name}"
    ax.set_title(title)
    return _png(fig, slug("tuning", name), title)


@plain_text
def cd_diagram(ranks: pd.Series, pvalues: pd.DataFrame, cd: float, title: str, protocol: str) -> Plot:
    """Critical-difference diagram (``scikit_posthocs.critical_difference_diagram``, Demšar 2006).

    ``ranks``: mean rank per configuration label (1 = best); ``pvalues``: the Nemenyi p matrix.
    Configurations joined by a bar do not differ at 0.05.
    """
    import scikit_posthocs as sp

    fig, ax = plt.subplots(figsize=(7, 0.32 * len(ranks) + 1.6))
    sp.critical_difference_diagram(ranks, pvalues, ax=ax, cd=cd, label_props={"fontsize": 8})
    ax.set_title(title, fontsize=9)
    return _png(fig, slug("cd", protocol), title)
