"""Curiosity strength alpha per dataset (Table 4): fold variance against plain routing."""

from __future__ import annotations

import math

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import baseline, fold_means, mean_shares, pair, parse_routing
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.power import corrected_floor, detectable_variance_ratio, levene_floor
from qmoe.analysis.stats import adjust, levene_median, mean_std, stars, variance_reduction
from qmoe.analysis.variance import pitman_morgan

TITLE = "Curiosity α per dataset (Table 4)"


def shares_text(shares: dict[str, float]) -> str:
    """``bitnet 42% · q4 39% · q8 19%``."""
    return " · ".join(f"{e} {100 * s:.0f}%" for e, s in shares.items()) or "-"


def curiosity_section(ctx: Context) -> Section:
    """F1 mean ± std per alpha, variance reduction vs alpha = 0, Levene (median), routing shares."""
    ok = ctx.results.ok
    mix = ok[ok["kind"] == "mixture"]
    if mix.empty:
        return Section.skipped("curiosity", TITLE, "not testable here: the sweep has no mixtures")
    if not (mix["alpha"] > 0).any():
        return Section.skipped("curiosity", TITLE, "not testable here: no curiosity routing (α > 0) trials")
    data, notes = [], []
    for protocol, g, err in ctx.protocols():
        m = g[g["kind"] == "mixture"]
        for (dataset, model), d in m.groupby(["dataset", "model"]):
            e = err[(err["dataset"] == dataset)] if not err.empty else err
            data += _rows(protocol, dataset, model, d, e, notes)
    df = pd.DataFrame(data)
    df["p_adj"] = math.nan
    for _, idx in df.groupby("protocol").groups.items():
        df.loc[idx, "p_adj"] = adjust(df.loc[idx, "levene_p"], ctx.correction)
        m = int(df.loc[idx, "levene_p"].notna().sum())
        df.loc[idx, "n_tests"] = m
        df.loc[idx, "levene_floor_adj"] = [corrected_floor(f, m) for f in df.loc[idx, "levene_floor"]]
        df.loc[idx, "detectable_ratio"] = [detectable_variance_ratio(int(n) - 1, int(n) - 1, 0.05 / max(m, 1))
                                           if fmt.finite(n) and n >= 2 else math.nan for n in df.loc[idx, "n_pairs"]]
    if df["n"].max() < 2:
        notes.append("not testable here: only one fold, so there is no fold variance to compare")
    if mix["split_seed"].nunique() > 1:
        notes.append("repeated k-fold: folds of different splits share samples, but Levene and Pitman–Morgan treat "
                     "the fold units as independent, so their p and CI are optimistic here")
    experts = [c for c in df.columns if c.startswith("share:")]
    variants = df["curiosity"].nunique() > 1  # kl and entropy in one sweep: say which row is which
    rows = []
    for r in df.to_dict("records"):
        base = r["alpha"] == 0
        shares = {c.split(":", 1)[1]: r[c] for c in experts if fmt.finite(r[c])}
        rows.append({
            "protocol": r["protocol"], "dataset": r["dataset"], "mixture": r["mixture"],
            "α": "0 (plain)" if base else f"{r['alpha']:g}" + (f" ({r['curiosity']})" if variants else ""),
            "n": r["n"],
            "F1 macro": fmt.mean_std("f1_macro", r["f1_mean"], r["f1_std"], r["n"]),
            "var. red.": "ref" if base else fmt.percent(r["var_reduction"], 0),
            "var. ratio [95% CI, paired]": "ref" if base else ratio_text(r),
            "Levene p": "ref" if base else fmt.pvalue(r["levene_p"]),
            f"p ({ctx.correction.value})": "ref" if base else fmt.pvalue(r["p_adj"]),
            "sig.": "" if base else stars(r["p_adj"]),
            "Levene floor (adj.)": "ref" if base else ("none" if r["levene_floor_adj"] == 0
                                                        else fmt.pvalue(r["levene_floor_adj"])),
            "routing shares": shares_text(shares)})
    figures = ()
    if ctx.plots:
        from qmoe.analysis import plots

        figures = tuple(plots.alpha_variance(g, model, protocol)
                        for (protocol, model), g in df.groupby(["protocol", "model"]) if g["alpha"].nunique() > 1)
    return Section(
        key="curiosity", title=TITLE, notes=tuple(dict.fromkeys(notes)), plots=figures,
        intro=("F1 per fold = the mean over the fold's seeds (one value per fold when the sweep has one seed). "
               "Variance reduction = 1 − var_α / var_0 (ddof 1) of those fold means, on the folds both α and plain "
               "routing (α = 0) have. Variance ratio var_α / var_0 with the Pitman–Morgan 95% CI for paired samples "
               "(both sides share their folds, so an F interval for independent samples would be wrong). Levene's "
               f"test centred on the median (Brown–Forsythe); p adjusted ({ctx.correction.value}) over the α "
               "comparisons of one protocol. Levene floor = the smallest adjusted p this test can reach with these "
               "fold counts (none: any p is reachable). Levene is not run over the raw fold × seed cells for this: "
               "the cells of a fold share its fold effect, so that test would count each fold once per seed; the "
               "training (seed) variance is tested over the cells in the variance decomposition. Shares: mean "
               "over trials."),
        tables=(Table(key="curiosity", title="F1 and fold variance per α", data=df, display=ctx.display(rows)),))


def ratio_text(r: dict) -> str:
    """``0.32 [0.05, 2.1]``: the paired variance ratio and its Pitman–Morgan CI."""
    if not fmt.finite(r["var_ratio"]):
        return "-"
    ci = (f" [{fmt.num(r['ratio_low'], '.2g')}, {fmt.num(r['ratio_high'], '.2g')}]"
          if fmt.finite(r["ratio_low"]) else "")
    return fmt.num(r["var_ratio"], ".2f") + ci


def _rows(protocol: str, dataset: str, model: str, d: pd.DataFrame, err: pd.DataFrame,
          notes: list[str]) -> list[dict]:
    plain = d[d["alpha"] == 0]
    name = plain["label"].iloc[0] if len(plain) else str(d["paper_name"].iloc[0]).removesuffix("-C")
    if plain.empty:
        notes.append(f"{name} on {dataset} ({protocol}): no plain-routing (α = 0) trial, so no variance reduction")
    out = []
    for config, rows in sorted(d.groupby("config"), key=lambda kv: kv[1]["alpha"].iloc[0]):
        alpha = float(rows["alpha"].iloc[0])
        f1_mean, f1_std, n = mean_std(fold_means(rows, "f1_macro"))
        shares = mean_shares(rows)
        row = {"protocol": protocol, "dataset": dataset, "mixture": name, "model": model, "alpha": alpha,
               "curiosity": rows["curiosity"].iloc[0], "label": rows["label"].iloc[0], "config": config, "n": n,
               "f1_mean": f1_mean, "f1_std": f1_std, "n_pairs": math.nan, "var_reduction": math.nan,
               "var_ratio": math.nan, "ratio_low": math.nan, "ratio_high": math.nan, "pitman_morgan_p": math.nan,
               "levene_w": math.nan, "levene_p": math.nan, "levene_floor": math.nan, "reference_config": "",
               "top_expert": max(shares, key=shares.get) if shares else "",
               "top_share": max(shares.values()) if shares else math.nan,
               "max_fold_share": _max_fold_share(rows)}
        row |= {f"share:{e}": s for e, s in shares.items()}
        base = baseline(d, config) if alpha > 0 else None
        if base is not None:
            p = pair(d, config, base, "f1_macro", err)
            if p.missing:
                notes.append(f"{dataset} ({protocol}): {p.missing}; compared on the {p.n} paired fold(s)")
            w, lp = levene_median(p.a, p.b)
            ratio, lo, hi, pm = pitman_morgan(p.a, p.b)
            row |= {"n_pairs": p.n, "var_reduction": variance_reduction(p.a, p.b), "var_ratio": ratio,
                    "ratio_low": lo, "ratio_high": hi, "pitman_morgan_p": pm, "levene_w": w, "levene_p": lp,
                    "levene_floor": levene_floor(p.n, p.n), "reference_config": base,
                    "std_a": float(p.a.std(ddof=1)) if p.n > 1 else math.nan,
                    "std_b": float(p.b.std(ddof=1)) if p.n > 1 else math.nan}
        out.append(row)
    return out


def _max_fold_share(rows: pd.DataFrame) -> float:
    """The largest share one expert took in any single trial (did routing collapse anywhere?)."""
    shares = [s.get("share") for text in rows["routing"] for s in parse_routing(text).values() if isinstance(s, dict)]
    shares = [float(x) for x in shares if fmt.finite(x)]
    return max(shares) if shares else math.nan
