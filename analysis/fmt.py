"""How numbers read in the report: metric names and units, mean ± std, p-values, percentages."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from qmoe.layout import IN_SWEEP, ISOLATED


@dataclass(frozen=True)
class Metric:
    """A results-table column as the report shows it."""

    column: str
    header: str
    spec: str  # format spec of one value


METRICS: dict[str, Metric] = {m.column: m for m in (
    Metric("f1_macro", "F1 macro", ".3f"),
    Metric("f1_weighted", "F1 weighted", ".3f"),
    Metric("accuracy", "accuracy", ".3f"),
    Metric("latency_p50_us", "latency p50 (µs)", ".1f"),
    Metric("latency_mean_us", "latency mean (µs)", ".1f"),
    Metric("latency_p99_us", "latency p99 (µs)", ".1f"),
    Metric("throughput_bs256", "throughput @256 (/s)", ",.0f"),
    Metric("energy_per_inference_mj", "energy/inference (mJ)", ".3g"),
    Metric("co2_per_inference_ug", "CO2/inference (µg)", ".3g"),
    Metric("train_energy_wh", "train energy (Wh)", ".3g"),
    Metric("peak_rss_mb", "peak RSS (MB)", ".0f"),
    Metric("size_kb", "size (KB)", ",.1f"),
    Metric("compression", "compression (x)", ".2f"),
    Metric("params", "params", ",.0f"),
)}


def finite(x) -> bool:
    """True for a real, finite number."""
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def num(x, spec: str = ".4g") -> str:
    """One value, ``-`` when missing."""
    return format(float(x), spec) if finite(x) else "-"


def value(metric: str, x) -> str:
    """One value of a metric in its own format."""
    return num(x, METRICS[metric].spec if metric in METRICS else ".4g")


def mean_std(metric: str, mean, std, n: int | None = None) -> str:
    """``0.819 ± 0.020``; a single value reads ``0.819 (n=1)``; nothing reads ``-``."""
    if not finite(mean):
        return "-"
    if not finite(std):
        return f"{value(metric, mean)} (n={n})" if n is not None else value(metric, mean)
    return f"{value(metric, mean)} ± {value(metric, std)}"


def pvalue(p) -> str:
    """``<0.001``, ``0.0123``, ``0.87``; ``-`` when the test could not run."""
    if not finite(p):
        return "-"
    p = float(p)
    return "<0.001" if p < 0.001 else f"{p:.3f}" if p < 0.1 else f"{p:.2f}"


def p_is(p) -> str:
    """``p = 0.012`` or ``p < 0.001`` (for running text)."""
    text = pvalue(p)
    return f"p {text[0]} {text[1:]}" if text.startswith("<") else f"p = {text}"


def percent(x, digits: int = 1, signed: bool = False) -> str:
    """A fraction as a percentage: 0.853 -> ``85.3%``."""
    if not finite(x):
        return "-"
    return f"{100 * float(x):{'+' if signed else ''}.{digits}f}%"


def folds(values) -> str:
    """``1, 2, 5``."""
    return ", ".join(str(int(v)) for v in sorted(values))


#: What each ``latency_mode`` of the results table means (qmoe.layout.LATENCY_MODES).
LATENCY_MODES = {IN_SWEEP: "each trial timed its model as it ran, beside the sweep's other trials",
                 ISOLATED: "each saved model timed alone after the sweep, one at a time, on one core"}


def latency_note(rows: Any) -> str | None:
    """One line naming the latency mode of these rows' latency figures; a mix is said loudly.

    ``rows`` is a results DataFrame; None when no row has a latency figure.
    """
    import pandas as pd

    if "latency_p50_us" not in rows or not len(rows):
        return None
    timed = rows[pd.to_numeric(rows["latency_p50_us"], errors="coerce").notna()]
    if not len(timed):
        return None
    modes = (timed["latency_mode"] if "latency_mode" in timed else pd.Series(None, index=timed.index))
    # object first: an older table's column can be all missing, float64, which takes no text
    counts = modes.astype(object).fillna("not recorded").value_counts()
    if len(counts) == 1:
        mode = str(counts.index[0])
        return f"latency mode: {mode} ({LATENCY_MODES.get(mode, 'mode not recorded in the rows')})"
    mix = ", ".join(f"{n} {m}" for m, n in counts.items())
    return (f"latency mode: MIXED ({mix} rows): latency figures of different modes are averaged and compared "
            "together here; 'qmoe resume NAME' finishes the isolated timing of a --latency isolated sweep")
