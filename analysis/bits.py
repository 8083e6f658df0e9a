"""Bit-width ablation (Table 2): BitLinear q{k} single models against the 16-bit one."""

from __future__ import annotations

import math

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import pair
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.stats import adjust, mean_std, paired_t, stars

REFERENCE_BITS = 16
SIDE_METRICS = ("latency_p50_us", "energy_per_inference_mj", "peak_rss_mb")
TITLE = "Bit-width ablation (Table 2)"


def bits_section(ctx: Context) -> Section:
    """% of the 16-bit F1 and a paired t-test on folds against 16-bit, per dataset."""
    ok = ctx.results.ok
    q = ok[ok["bits"].notna()]
    if q.empty:
        return Section.skipped("bits", TITLE, "not testable here: the sweep has no BitLinear q{k} single models")
    present = sorted({int(b) for b in q["bits"]})
    if REFERENCE_BITS not in present:
        return Section.skipped("bits", TITLE, "not testable here: no 16-bit (q16) reference; bit-widths "
                                              f"present: {', '.join(f'q{b}' for b in present)}")
    if present == [REFERENCE_BITS]:
        return Section.skipped("bits", TITLE, "not testable here: only the 16-bit model, no other bit-width")
    data, notes = [], []
    for protocol, g, err in ctx.protocols():
        gq = g[g["bits"].notna()]
        for dataset, d in gq.groupby("dataset"):
            data += _dataset_rows(protocol, dataset, d, err[err["dataset"] == dataset] if not err.empty else err,
                                  notes)
    df = pd.DataFrame(data)
    if df.empty:
        return Section.skipped("bits", TITLE, "not testable here: no dataset has the q16 reference")
    # One family of tests per protocol: every bit-width x dataset compared with 16-bit.
    df["p_adj"] = math.nan
    for protocol, idx in df.groupby("protocol").groups.items():
        df.loc[idx, "p_adj"] = adjust(df.loc[idx, "p_t"], ctx.correction)
    if df["n_pairs"].max() < 2:
        notes.append("not testable here: only one fold, a paired t-test needs at least two paired folds")
    rows = []
    for r in df.to_dict("records"):
        ref = r["bits"] == REFERENCE_BITS
        row = {"protocol": r["protocol"], "dataset": r["dataset"], "bits": r["bits"], "model": r["model"],
               "n": r["n"], "F1 macro": fmt.mean_std("f1_macro", r["f1_mean"], r["f1_std"], r["n"]),
               "% of 16-bit": fmt.num(100 * r["pct_of_16"], ".1f") if fmt.finite(r["pct_of_16"]) else "-"}
        for m in SIDE_METRICS:
            row[fmt.METRICS[m].header] = fmt.mean_std(m, r[f"{m}_mean"], r[f"{m}_std"], r["n"])
        row |= {"pairs": "ref" if ref else r["n_pairs"], "p (paired t)": "ref" if ref else fmt.pvalue(r["p_t"]),
                f"p ({ctx.correction.value})": "ref" if ref else fmt.pvalue(r["p_adj"]),
                "sig.": "" if ref else stars(r["p_adj"])}
        rows.append(row)
    figures = ()
    if ctx.plots:
        from qmoe.analysis import plots

        figures = tuple(plots.f1_vs_bits(g, protocol) for protocol, g in df.groupby("protocol"))
    return Section(
        key="bits", title=TITLE, notes=tuple(notes), plots=figures,
        intro=("% of 16-bit = mean F1 / mean F1 of q16 on the same dataset. Paired t-test on the folds "
               f"both models have; p adjusted ({ctx.correction.value}) over the comparisons of one protocol."),
        tables=(Table(key="bits", title="F1 by bit-width", data=df, display=ctx.display(rows)),))


def _dataset_rows(protocol: str, dataset: str, d: pd.DataFrame, err: pd.DataFrame,
                  notes: list[str]) -> list[dict]:
    refs = d[d["bits"] == REFERENCE_BITS]["config"].unique()
    if len(refs) == 0:
        notes.append(f"{dataset} ({protocol}): no finished q16 trial, no comparison")
        return []
    ref = refs[0]
    if len(refs) > 1:
        notes.append(f"{dataset} ({protocol}): several q16 configurations; compared against "
                     f"{d.loc[d['config'] == ref, 'label'].iloc[0]}")
    ref_mean = mean_std(d.loc[d["config"] == ref, "f1_macro"])[0]
    out = []
    for config, rows in sorted(d.groupby("config"), key=lambda kv: int(kv[1]["bits"].iloc[0])):
        f1_mean, f1_std, n = mean_std(pd.to_numeric(rows["f1_macro"], errors="coerce"))
        row = {"protocol": protocol, "dataset": dataset, "bits": int(rows["bits"].iloc[0]),
               "model": rows["label"].iloc[0], "config": config, "n": n, "f1_mean": f1_mean, "f1_std": f1_std,
               "pct_of_16": f1_mean / ref_mean if ref_mean else math.nan}
        for m in SIDE_METRICS:
            row[f"{m}_mean"], row[f"{m}_std"], _ = mean_std(pd.to_numeric(rows[m], errors="coerce"))
        if config == ref:
            row |= {"n_pairs": n, "mean_diff": 0.0, "t": math.nan, "p_t": math.nan}
        else:
            p = pair(d, config, ref, "f1_macro", err)
            if p.missing:
                notes.append(f"{dataset} ({protocol}): {p.missing}; tested on the {p.n} paired fold(s)")
            t, p_t = paired_t(p.a, p.b)
            row |= {"n_pairs": p.n, "mean_diff": float((p.a - p.b).mean()) if p.n else math.nan,
                    "t": t, "p_t": p_t}
        out.append(row)
    return out
