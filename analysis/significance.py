"""Significance against a reference (Table 6): paired tests on folds, effect sizes, corrections."""

from __future__ import annotations

import dataclasses

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import baseline, config_order, pair
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.power import wilcoxon_floor
from qmoe.analysis.stats import BOOTSTRAP_MIN_N, adjust, compare_paired, stars

TITLE = "Significance against the reference (Table 6)"
METRICS = ("f1_macro", "latency_p50_us")


def comparisons(ctx: Context, ok: pd.DataFrame) -> tuple[list[tuple[str, str]], list[str]]:
    """(candidate config, reference config) pairs of one protocol and dataset, and why others are absent."""
    order = config_order(ok)
    singles = [c for c in order if (ok.loc[ok["config"] == c, "kind"] == "single").all()]
    mixtures = [c for c in order if c not in singles]
    model_of = dict(zip(ok["config"], ok["model"]))
    alpha_of = dict(zip(ok["config"], ok["alpha"]))
    pairs: list[tuple[str, str]] = []
    why: list[str] = []
    ref = ctx.single_reference
    if singles:
        refs = [c for c in singles if model_of[c] == ref]
        if ref is None:
            why.append("no fp32 single model to compare against (choose one with --reference, e.g. q16)")
        elif not refs:
            why.append(f"no finished {ref} trial")
        elif len(singles) == 1:
            why.append(f"only one single model ({ok.loc[ok['config'] == singles[0], 'label'].iloc[0]})")
        else:
            pairs += [(c, refs[0]) for c in singles if c != refs[0]]
    if mixtures:
        if ctx.mixture_reference is not None:
            refs = [c for c in mixtures if model_of[c] == ctx.mixture_reference and alpha_of[c] == 0]
            if refs:
                pairs += [(c, refs[0]) for c in mixtures if c != refs[0]]
            else:
                why.append(f"no finished plain-routing (α = 0) trial of {ctx.mixture_reference}")
        else:
            for model in dict.fromkeys(model_of[c] for c in mixtures):
                mine = [c for c in mixtures if model_of[c] == model]
                for c in mine:  # each curiosity config against its own model's plain routing
                    base = baseline(ok, c) if alpha_of[c] > 0 else None
                    if base is not None:
                        pairs.append((c, base))
            if not any(alpha_of[c] == 0 for c in mixtures) or all(alpha_of[c] == 0 for c in mixtures):
                why.append("no mixture has both plain routing (α = 0) and curiosity (α > 0) trials")
    return pairs, why


def significance_section(ctx: Context) -> Section:
    """Every comparison with the reference: Δ, paired t, Nadeau-Bengio t, Wilcoxon, dz, g, CI, adjusted p."""
    data, notes, reasons = [], [n for n in (fmt.latency_note(ctx.results.ok),) if n], []
    for protocol, g, err in ctx.protocols():
        for dataset, d in g.groupby("dataset"):
            pairs, why = comparisons(ctx, d)
            reasons += [f"{dataset} ({protocol}): {w}" for w in why]
            e = err[err["dataset"] == dataset] if not err.empty else err
            label = dict(zip(d["config"], d["label"]))
            for metric in METRICS:
                for cand, ref in pairs:
                    p = pair(d, cand, ref, metric, e)
                    if p.missing and metric == METRICS[0]:
                        notes.append(f"{dataset} ({protocol}): {p.missing}; tested on the {p.n} paired fold(s)")
                    stats = compare_paired(p.a, p.b, test_train_ratio=p.test_train_ratio, seed=ctx.seed,
                                           cells_a=p.cells["a"], cells_b=p.cells["b"])
                    data.append({"protocol": protocol, "metric": metric, "dataset": dataset,
                                 "candidate": label[cand], "reference": label[ref], "candidate_config": cand,
                                 "reference_config": ref, "folds": p.fold_text,
                                 "test_train_ratio": p.test_train_ratio, **dataclasses.asdict(stats)})
    if not data:
        reason = "; ".join(dict.fromkeys(reasons)) or "no comparisons"
        return Section.skipped("significance", TITLE, f"not testable here: {reason}")
    df = pd.DataFrame(data)
    df["p_adj"] = float("nan")
    for _, idx in df.groupby(["protocol", "metric"]).groups.items():
        df.loc[idx, "p_adj"] = adjust(df.loc[idx, "p_t"], ctx.correction)
    df["sig"] = [stars(p) for p in df["p_adj"]]
    if df["n"].max() < 2:
        notes.append("not testable here: only one fold, paired tests need at least two paired folds")
    if df["test_train_ratio"].isna().any():
        notes.append("Nadeau-Bengio needs n_test and n_train in the rows; missing for some comparisons")
    tables = []
    j = int(df["n"].max())
    cells = bool((df["n_cells"] > df["n"]).any())
    boot = bool((df["n"] >= BOOTSTRAP_MIN_N).any())
    for metric, m in df.groupby("metric", sort=False):
        spec = fmt.METRICS[metric].spec
        rows = []
        for r in m.to_dict("records"):
            row = {"protocol": r["protocol"], "dataset": r["dataset"],
                   "comparison": f"{r['candidate']} vs {r['reference']}", "n": r["n"],
                   "Δ mean": fmt.num(r["mean_diff"], "+" + spec.lstrip(",")),
                   "95% CI (t)": _interval(r["ci_low"], r["ci_high"], spec)}
            if boot:
                row["95% CI (BCa)"] = _interval(r["boot_low"], r["boot_high"], spec)
            row |= {"p (paired t)": fmt.pvalue(r["p_t"]), "p (N-B)": fmt.pvalue(r["p_nb"])}
            if cells:
                row |= {"cells": r["n_cells"], "p (B-F, cells)": fmt.pvalue(r["p_bf"])}
            row |= {"p (Wilcoxon)": fmt.pvalue(r["p_wilcoxon"]), "dz": fmt.num(r["dz"], ".2f"),
                    "g": fmt.num(r["hedges_g"], ".2f"), f"p ({ctx.correction.value})": fmt.pvalue(r["p_adj"]),
                    "sig.": r["sig"]}
            rows.append(row)
        tables.append(Table(key=f"significance_{metric}", title=f"{fmt.METRICS[metric].header}: candidate − reference",
                            data=m.reset_index(drop=True), display=ctx.display(rows)))
    if reasons:
        notes += [f"not compared: {r}" for r in dict.fromkeys(reasons)]
    return Section(
        key="significance", title=TITLE, tables=tuple(tables), notes=tuple(dict.fromkeys(notes)),
        intro=("Δ = candidate − reference on the folds both have. References: "
               f"{ctx.single_reference or '-'} for single models, "
               + (f"{ctx.mixture_reference} (α = 0)" if ctx.mixture_reference else "each mixture's plain routing (α = 0)")
               + " for mixtures. Every fold-level test uses one value per fold: the mean over its seeds. Paired t "
               "(scipy ttest_rel) and its 95% t-interval of the mean difference (the interval shown at any n: a "
               f"BCa bootstrap of 5 folds is too narrow; the BCa column appears only from {BOOTSTRAP_MIN_N} pairs "
               "on); Nadeau-Bengio corrected t (variance × (1/J + n_test/n_train), J − 1 df); with seeds, the "
               "Bouckaert–Frank corrected repeated k-fold t on the J = k·r cells (same formula, k·r − 1 df; with "
               "seeds on the same folds the cells of a fold share their test set, so prefer the fold-level tests "
               "there); Wilcoxon signed-rank; Cohen's dz; Hedges' g (pooled SD, small-sample corrected). The "
               f"adjusted p ({ctx.correction.value}) is over all comparisons of one metric and protocol, on the "
               "paired t; * < 0.05, ** < 0.01, *** < 0.001. With J paired folds the exact Wilcoxon p cannot go "
               f"below 2 / 2^J ({wilcoxon_floor(j):.3g} with {j} paired folds here)."))


def _interval(lo: float, hi: float, spec: str) -> str:
    return f"[{fmt.num(lo, spec)}, {fmt.num(hi, spec)}]" if fmt.finite(lo) else "-"
