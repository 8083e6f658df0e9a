"""Bit-width ablation (Table 2): BitLinear q{k} single models against the 16-bit one."""

from __future__ import annotations

import math

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import fold_means, pair
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.meantest import mean_test
from qmoe.analysis.stats import adjust, mean_std, stars

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
    data, notes = [], [n for n in (fmt.latency_note(q),) if n]  # the latency rows' mode
    for protocol, g, err in ctx.protocols():
        gq = g[g["bits"].notna()]
        for dataset, d in gq.groupby("dataset"):
            data += _dataset_rows(protocol, dataset, d, err[err["dataset"] == dataset] if not err.empty else err,
                                  notes, ctx.margin)
    df = pd.DataFrame(data)
    if df.empty:
        return Section.skipped("bits", TITLE, "not testable here: no dataset has the q16 reference")
    # One family of tests per protocol: every bit-width x dataset compared with 16-bit. The TOST
    # and "beyond the margin" p-values are corrected over the same family: a correction only ever
    # raises them, so it never makes an equivalence (or its refutation) easier to claim.
    for column in ("p_adj", "p_tost_adj", "p_out_adj", "detectable", "tost_margin80"):
        df[column] = math.nan
    for protocol, idx in df.groupby("protocol").groups.items():
        df.loc[idx, "p_adj"] = adjust(df.loc[idx, "p_t"], ctx.correction)
        df.loc[idx, "p_tost_adj"] = adjust(df.loc[idx, "p_tost"], ctx.correction)
        df.loc[idx, "p_out_adj"] = adjust(df.loc[idx, "p_out"], ctx.correction)
        m = max(int(df.loc[idx, "p_t"].notna().sum()), 1)
        df.loc[idx, "n_tests"] = m
        df.loc[idx, "detectable"] = [t.detectable(0.05 / m) if t is not None else math.nan for t in df.loc[idx, "_test"]]
        df.loc[idx, "tost_margin80"] = [t.tost_margin(0.05 / m) if t is not None else math.nan
                                        for t in df.loc[idx, "_test"]]
    df = df.drop(columns="_test")
    if df["n_pairs"].max() < 2:
        notes.append("not testable here: only one fold, a paired t-test needs at least two paired folds")
    rows = []
    for r in df.to_dict("records"):
        ref = r["bits"] == REFERENCE_BITS
        row = {"protocol": r["protocol"], "dataset": r["dataset"], "bits": r["bits"], "model": r["model"],
               "n": r["n"], "F1 macro": fmt.mean_std("f1_macro", r["f1_mean"], r["f1_std"], r["n"]),
               "% of 16-bit (paired)": fmt.num(100 * r["pct_of_16"], ".1f") if fmt.finite(r["pct_of_16"]) else "-"}
        for m in SIDE_METRICS:
            row[fmt.METRICS[m].header] = fmt.mean_std(m, r[f"{m}_mean"], r[f"{m}_std"], r["n"])
        ci = f"[{fmt.num(r['ci_low'], '+.3f')}, {fmt.num(r['ci_high'], '+.3f')}]" if fmt.finite(r["ci_low"]) else "-"
        row |= {"pairs": "ref" if ref else r["n_pairs"], "Δ F1 [95% CI (t)]": "ref" if ref else
                f"{fmt.num(r['mean_diff'], '+.3f')} {ci}", "test": "ref" if ref else r["test"],
                "p": "ref" if ref else fmt.pvalue(r["p_t"]),
                f"p ({ctx.correction.value})": "ref" if ref else fmt.pvalue(r["p_adj"]),
                "sig.": "" if ref else stars(r["p_adj"]),
                f"TOST ±{ctx.margin:g} p ({ctx.correction.value})": "ref" if ref else fmt.pvalue(r["p_tost_adj"])}
        rows.append(row)
    figures = ()
    if ctx.plots:
        from qmoe.analysis import plots

        figures = tuple(plots.f1_vs_bits(g, protocol) for protocol, g in df.groupby("protocol"))
    return Section(
        key="bits", title=TITLE, notes=tuple(notes), plots=figures,
        intro=("% of 16-bit = mean F1 / mean F1 of q16 over the same paired folds (and seeds) the test uses. "
               "Test: the paired t on the fold means (seeds averaged), or with repeated seeded splits the "
               "Bouckaert–Frank corrected repeated k-fold t on the cells; 95% CI of Δ = the t-interval of that "
               f"test. TOST: equivalence within ±{ctx.margin:g} F1 (--margin). All p adjusted "
               f"({ctx.correction.value}) over the comparisons of one protocol."),
        tables=(Table(key="bits", title="F1 by bit-width", data=df, display=ctx.display(rows)),))


def _dataset_rows(protocol: str, dataset: str, d: pd.DataFrame, err: pd.DataFrame,
                  notes: list[str], margin: float) -> list[dict]:
    refs = d[d["bits"] == REFERENCE_BITS]["config"].unique()
    if len(refs) == 0:
        notes.append(f"{dataset} ({protocol}): no finished q16 trial, no comparison")
        return []
    ref = refs[0]
    if len(refs) > 1:
        notes.append(f"{dataset} ({protocol}): several q16 configurations; compared against "
                     f"{d.loc[d['config'] == ref, 'label'].iloc[0]}")
    out = []
    for config, rows in sorted(d.groupby("config"), key=lambda kv: int(kv[1]["bits"].iloc[0])):
        f1_mean, f1_std, n = mean_std(fold_means(rows, "f1_macro"))
        row = {"protocol": protocol, "dataset": dataset, "bits": int(rows["bits"].iloc[0]),
               "model": rows["label"].iloc[0], "config": config, "n": n, "f1_mean": f1_mean, "f1_std": f1_std}
        for m in SIDE_METRICS:
            row[f"{m}_mean"], row[f"{m}_std"], _ = mean_std(pd.to_numeric(rows[m], errors="coerce"))
        if config == ref:
            row |= {"n_pairs": n, "pct_of_16": 1.0, "mean_diff": 0.0, "test": "", "t": math.nan, "p_t": math.nan,
                    "p_tost": math.nan, "p_out": math.nan, "_test": None}
        else:
            p = pair(d, config, ref, "f1_macro", err)
            if p.missing:
                notes.append(f"{dataset} ({protocol}): {p.missing}; tested on the {p.n} paired fold(s)")
            test = mean_test(p, margin)
            row |= {"n_pairs": p.n, "n_cells": p.n_cells, "pct_of_16": test.ratio, "mean_diff": test.mean_diff,
                    "sd_diff": test.sd_diff, "ci_low": test.ci_low, "ci_high": test.ci_high, "test": test.test,
                    "t": test.t, "p_t": test.p, "p_tost": test.p_tost, "p_out": test.p_out,
                    "_test": test if p.n >= 2 else None}
        out.append(row)
    return out
