"""Curiosity strength alpha per dataset (Table 4): fold variance against plain routing."""

from __future__ import annotations

import math

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import mean_shares, pair
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.stats import adjust, levene_median, mean_std, stars, variance_reduction

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
    if df["n"].max() < 2:
        notes.append("not testable here: only one fold, so there is no fold variance to compare")
    experts = [c for c in df.columns if c.startswith("share:")]
    rows = []
    for r in df.to_dict("records"):
        base = r["alpha"] == 0
        shares = {c.split(":", 1)[1]: r[c] for c in experts if fmt.finite(r[c])}
        rows.append({
            "protocol": r["protocol"], "dataset": r["dataset"], "mixture": r["mixture"],
            "α": "0 (plain)" if base else f"{r['alpha']:g}", "n": r["n"],
            "F1 macro": fmt.mean_std("f1_macro", r["f1_mean"], r["f1_std"], r["n"]),
            "var. red.": "ref" if base else fmt.percent(r["var_reduction"], 0),
            "Levene p": "ref" if base else fmt.pvalue(r["levene_p"]),
            f"p ({ctx.correction.value})": "ref" if base else fmt.pvalue(r["p_adj"]),
            "sig.": "" if base else stars(r["p_adj"]),
            "routing shares": shares_text(shares)})
    figures = ()
    if ctx.plots:
        from qmoe.analysis import plots

        figures = tuple(plots.alpha_variance(g, model, protocol)
                        for (protocol, model), g in df.groupby(["protocol", "model"]) if g["alpha"].nunique() > 1)
    return Section(
        key="curiosity", title=TITLE, notes=tuple(dict.fromkeys(notes)), plots=figures,
        intro=("Variance reduction = 1 − var_α / var_0 (ddof 1) on the folds both α and plain routing (α = 0) "
               "have; Levene's test centred on the median; p adjusted "
               f"({ctx.correction.value}) over the α comparisons of one protocol. Shares: mean over folds."),
        tables=(Table(key="curiosity", title="F1 and fold variance per α", data=df, display=ctx.display(rows)),))


def _rows(protocol: str, dataset: str, model: str, d: pd.DataFrame, err: pd.DataFrame,
          notes: list[str]) -> list[dict]:
    base = d[d["alpha"] == 0]["config"].unique()
    name = (d[d["alpha"] == 0]["label"].iloc[0] if len(base) else
            str(d["paper_name"].iloc[0]).removesuffix("-C"))
    if len(base) == 0:
        notes.append(f"{name} on {dataset} ({protocol}): no plain-routing (α = 0) trial, so no variance reduction")
    out = []
    for config, rows in sorted(d.groupby("config"), key=lambda kv: kv[1]["alpha"].iloc[0]):
        alpha = float(rows["alpha"].iloc[0])
        f1_mean, f1_std, n = mean_std(pd.to_numeric(rows["f1_macro"], errors="coerce"))
        shares = mean_shares(rows)
        row = {"protocol": protocol, "dataset": dataset, "mixture": name, "model": model, "alpha": alpha,
               "label": rows["label"].iloc[0], "config": config, "n": n, "f1_mean": f1_mean, "f1_std": f1_std,
               "n_pairs": math.nan, "var_reduction": math.nan, "levene_w": math.nan, "levene_p": math.nan,
               "top_expert": max(shares, key=shares.get) if shares else "",
               "top_share": max(shares.values()) if shares else math.nan}
        row |= {f"share:{e}": s for e, s in shares.items()}
        if alpha > 0 and len(base):
            p = pair(d, config, base[0], "f1_macro", err)
            if p.missing:
                notes.append(f"{dataset} ({protocol}): {p.missing}; compared on the {p.n} paired fold(s)")
            w, lp = levene_median(p.a, p.b)
            row |= {"n_pairs": p.n, "var_reduction": variance_reduction(p.a, p.b), "levene_w": w, "levene_p": lp}
        out.append(row)
    return out
