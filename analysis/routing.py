"""Routing specialisation (Figure 2): which samples each expert of a mixture received.

Reads the per-sample routing files ``routing/<trial_key>.parquet`` next to the results table
(columns clip_id, expert, confidence, uncertainty, kl, label, pred, correct), pools the test folds
of each configuration, and compares the router confidence of the highest-precision expert's
samples with all the others' (Welch's t-test).
"""

from __future__ import annotations

import logging
import math

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import config_order
from qmoe.analysis.configs import highest_precision, precision
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.stats import adjust, mean_std, stars, welch
from qmoe.spec import unique_names

log = logging.getLogger(__name__)

TITLE = "Routing specialisation (Figure 2)"
NEEDED = ("expert", "confidence")


def read_samples(ctx: Context, rows: pd.DataFrame, notes: list[str]) -> pd.DataFrame:
    """The per-sample routing of the given trials, pooled, with a ``fold`` column."""
    frames, absent, bad = [], [], []
    for key, fold in zip(rows["trial_key"], rows["fold"]):
        path = ctx.results.routing_dir / f"{key}.parquet"
        if not path.is_file():
            absent.append(int(fold))
            continue
        try:
            df = pd.read_parquet(path)
        except Exception as err:  # a damaged file is reported, not fatal
            log.warning("cannot read %s: %s", path, err)
            bad.append(path.name)
            continue
        if any(c not in df.columns for c in NEEDED):
            bad.append(path.name)
            continue
        frames.append(df.assign(fold=int(fold)))
    label = rows["label"].iloc[0]
    if absent:
        notes.append(f"{label} ({rows['dataset'].iloc[0]}): no routing file for fold(s) {fmt.folds(absent)}")
    if bad:
        notes.append(f"{label}: unreadable routing file(s) (need columns {', '.join(NEEDED)}): {', '.join(bad)}")
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[*NEEDED, "fold"])


def specialisation_section(ctx: Context) -> Section:
    """Mean confidence per expert, and Welch's t-test of the highest-precision expert vs the rest."""
    ok = ctx.results.ok
    mix = ok[ok["kind"] == "mixture"]
    if mix.empty:
        return Section.skipped("specialisation", TITLE, "not testable here: the sweep has no mixtures")
    folder = ctx.results.routing_dir
    if not folder.is_dir():
        return Section.skipped("specialisation", TITLE,
                               f"cannot be computed: no per-sample routing folder at {folder}")
    experts_rows, tests, notes, figures = [], [], [], []
    for protocol, g, _ in ctx.protocols():
        mixtures = g[g["kind"] == "mixture"]
        rank = {c: i for i, c in enumerate(config_order(mixtures))}
        groups = sorted(mixtures.groupby(["dataset", "config"]), key=lambda kv: (kv[0][0], rank[kv[0][1]]))
        for (dataset, config), rows in groups:
            samples = read_samples(ctx, rows, notes)
            if samples.empty:
                continue
            samples = samples.assign(expert=samples["expert"].astype(str),
                                     confidence=pd.to_numeric(samples["confidence"], errors="coerce"))
            samples = samples[samples["confidence"].notna()]
            r0 = rows.iloc[0]
            names = unique_names(str(r0["model"]).split(","))
            high = highest_precision(names)
            ident = {"protocol": protocol, "dataset": dataset, "model": r0["label"], "alpha": float(r0["alpha"]),
                     "config": config, "folds": fmt.folds(samples["fold"].unique())}
            experts_rows += _per_expert(ident, samples, names, high)
            tests.append(_welch(ident, samples, high, notes))
            if ctx.plots:
                from qmoe.analysis import plots

                figures.append(plots.confidence_by_expert(samples, r0["label"], dataset, protocol))
    if not tests:
        return Section.skipped("specialisation", TITLE,
                               f"cannot be computed: no per-sample routing files for the mixture trials in {folder}")
    per_expert = pd.DataFrame(experts_rows)
    test_df = pd.DataFrame(tests)
    test_df["p_adj"] = math.nan
    for _, idx in test_df.groupby("protocol").groups.items():
        test_df.loc[idx, "p_adj"] = adjust(test_df.loc[idx, "p"], ctx.correction)
    disp_e = [{"protocol": r["protocol"], "dataset": r["dataset"], "model": r["model"],
               "expert": r["expert"] + (" (highest precision)" if r["highest"] else ""),
               "samples": r["n"], "share": fmt.percent(r["share"], 1),
               "confidence": fmt.mean_std("accuracy", r["confidence_mean"], r["confidence_std"], r["n"]),
               "accuracy": fmt.num(r["accuracy"], ".3f")} for r in per_expert.to_dict("records")]
    disp_t = [{"protocol": r["protocol"], "dataset": r["dataset"], "model": r["model"],
               "highest precision": r["high_expert"] or "-", "n (high / rest)": f"{r['n_high']} / {r['n_rest']}",
               "confidence high": fmt.num(r["conf_high"], ".3f"), "confidence rest": fmt.num(r["conf_rest"], ".3f"),
               "difference": fmt.percent(r["rel_diff"], 1, signed=True), "Welch t": fmt.num(r["t"], ".2f"),
               "p": fmt.pvalue(r["p"]), f"p ({ctx.correction.value})": fmt.pvalue(r["p_adj"]),
               "sig.": stars(r["p_adj"]), "least confident": r["lowest_expert"]}
              for r in test_df.to_dict("records")]
    return Section(
        key="specialisation", title=TITLE, plots=tuple(figures), notes=tuple(dict.fromkeys(notes)),
        intro=("Test samples pooled over the folds of each configuration; confidence = the router's probability "
               "of the expert it chose. Welch's t-test (scipy ttest_ind, equal_var=False) of the highest-precision "
               "expert's samples against all others; difference = (high − rest) / rest; p adjusted "
               f"({ctx.correction.value}) over the configurations of one protocol."),
        tables=(Table(key="specialisation_experts", title="Samples and confidence per expert", data=per_expert,
                      display=ctx.display(disp_e)),
                Table(key="specialisation_tests", title="Highest-precision expert vs the rest", data=test_df,
                      display=ctx.display(disp_t))))


def _per_expert(ident: dict, samples: pd.DataFrame, names: list[str], high: str | None) -> list[dict]:
    out = []
    total = len(samples)
    for name in names + sorted(set(samples["expert"]) - set(names)):
        mine = samples[samples["expert"] == name]
        mean, std, n = mean_std(mine["confidence"])
        acc = (pd.to_numeric(mine["correct"], errors="coerce").astype(float).mean()
               if "correct" in mine.columns and len(mine) else math.nan)
        out.append({**ident, "expert": name, "bits": precision(name), "highest": name == high, "n": n,
                    "share": n / total if total else math.nan, "confidence_mean": mean,
                    "confidence_std": std, "accuracy": acc})
    return out


def _welch(ident: dict, samples: pd.DataFrame, high: str | None, notes: list[str]) -> dict:
    means = samples.groupby("expert")["confidence"].mean()
    row = {**ident, "high_expert": high or "", "n_high": 0, "n_rest": 0, "conf_high": math.nan,
           "conf_rest": math.nan, "rel_diff": math.nan, "t": math.nan, "p": math.nan, "sd_pooled": math.nan,
           "lowest_expert": str(means.idxmin()) if len(means) else ""}
    if high is None:
        notes.append(f"{ident['model']} ({ident['dataset']}): no single highest-precision expert, no test")
        return row
    a = samples.loc[samples["expert"] == high, "confidence"].to_numpy(dtype=float)
    b = samples.loc[samples["expert"] != high, "confidence"].to_numpy(dtype=float)
    t, p = welch(a, b)
    ca = float(a.mean()) if len(a) else math.nan
    cb = float(b.mean()) if len(b) else math.nan
    if len(a) < 2 or len(b) < 2:
        notes.append(f"{ident['model']} ({ident['dataset']}): {high} received {len(a)} sample(s) and the "
                     f"others {len(b)}; Welch's test needs at least two on each side")
    pooled = (math.sqrt(((len(a) - 1) * a.var(ddof=1) + (len(b) - 1) * b.var(ddof=1)) / (len(a) + len(b) - 2))
              if len(a) >= 2 and len(b) >= 2 else math.nan)  # for the power of the claim
    return row | {"n_high": len(a), "n_rest": len(b), "conf_high": ca, "conf_rest": cb,
                  "rel_diff": (ca - cb) / cb if fmt.finite(cb) and cb else math.nan, "t": t, "p": p,
                  "sd_pooled": pooled}
