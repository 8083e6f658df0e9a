"""Variance claims: does curiosity cut the fold variance, and the training (seed) variance?

The paper's claim ("50–94% lower F1 variance across folds, Levene p < 0.001") is tested on the
fold means (seeds averaged) with the median-centred Levene test of the curiosity section; with
5 folds that test cannot reach the paper's p at all, and the row says so. Where the sweep has
several seeds per fold, the decomposition section also tests the training randomness (the
fold:seed residual), which seeds can buy the power to decide.
"""

from __future__ import annotations

from collections.abc import Mapping

from qmoe.analysis import fmt
from qmoe.analysis.claim_rows import alpha_text, floor_text, reason, row, section_data, untestable, where
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section
from qmoe.analysis.verdicts import directional


def variance_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    """Per α > 0: fold-mean variance against plain routing (Levene, median-centred)."""
    df = section_data(sections, "curiosity")
    if df is None:
        return [untestable("variance", reason(sections, "curiosity"))]
    out = []
    for r in df[df["alpha"] > 0].to_dict("records"):
        place = where(r, ctx, str(r["label"]))
        if not r["reference_config"]:
            out.append(untestable("variance", "no plain-routing (α = 0) baseline", place))
            continue
        n = 0 if not fmt.finite(r["n_pairs"]) else int(r["n_pairs"])
        if n < 2 or not fmt.finite(r["var_reduction"]) or not fmt.finite(r["levene_p"]):
            out.append(untestable("variance", f"only {n} paired fold(s) with fold variance", place))
            continue
        ci = (f" [{fmt.num(r['ratio_low'], '.2g')}, {fmt.num(r['ratio_high'], '.2g')}] (Pitman–Morgan)"
              if fmt.finite(r["ratio_low"]) else "")
        figure = (f"fold variance {fmt.percent(-r['var_reduction'], 0, signed=True)}: ratio "
                  f"{fmt.num(r['var_ratio'], '.2f')}{ci}; std of fold means {fmt.num(r['std_b'], '.3f')} → "
                  f"{fmt.num(r['std_a'], '.3f')}")
        m = int(r["n_tests"])
        floor = floor_text("Levene", r["levene_floor"], r["levene_floor_adj"], n, m, ctx.correction.value)
        bound = (f"80% power only if the variance ratio is ≤ {fmt.num(r['detectable_ratio'], '.2f')} "
                 f"(F-test bound, n = {n}, {alpha_text(m)})")
        power = "; ".join(p for p in (floor, bound) if p)
        verdict = directional(r["var_reduction"], r["p_adj"], claimed_sign=+1, floor_adj=r["levene_floor_adj"])
        out.append(row("variance", place, figure, r["p_adj"], verdict, power=power,
                       test="Levene (median) on fold means"))
    return out or [untestable("variance", "no curiosity (α > 0) rows")]


def seed_variance_claims(ctx: Context, sections: Mapping[str, Section]) -> list[dict]:
    """Per α > 0 with ≥ 2 seeds: the fold:seed residual variance against plain routing."""
    df = section_data(sections, "decomposition", "decomposition_change")
    if df is None or df.empty:
        why = reason(sections, "decomposition") if section_data(sections, "decomposition") is None else \
            "no curiosity (α > 0) mixture with a plain-routing baseline"
        return [untestable("variance_seed", why)]
    one_seed = ("one seed per fold: training randomness cannot be separated from the fold effect "
                "(run the sweep with --seeds N)")
    if (df["seeds"] < 2).all():
        return [untestable("variance_seed", one_seed)]
    out = []
    for r in df.to_dict("records"):
        place = where(r, ctx, str(r["model"]))
        if r["seeds"] < 2 or not fmt.finite(r["bf_p"]):
            out.append(untestable("variance_seed", one_seed, place))
            continue
        figure = (f"residual variance ratio {fmt.num(r['resid_ratio'], '.2f')} "
                  f"[{fmt.num(r['resid_ratio_low'], '.2f')}, {fmt.num(r['resid_ratio_high'], '.2f')}] (F); "
                  f"fold component {fmt.num(r['fold_0'], '.2g')} → {fmt.num(r['fold_a'], '.2g')}")
        m = int(df.loc[df["protocol"] == r["protocol"], "bf_p"].notna().sum())
        power = (f"80% power only if the ratio is ≤ {fmt.num(r['resid_detectable_ratio'], '.2f')} (F-test bound, "
                 f"df {int(r['resid_df_a'])}/{int(r['resid_df_b'])}, {alpha_text(m)})")
        floor = (f"Brown–Forsythe floor {r['bf_floor_adj']:.2g} (adj.)" if fmt.finite(r["bf_floor_adj"])
                 and r["bf_floor_adj"] > 1e-4 else "")
        verdict = directional(1 - r["resid_ratio"], r["bf_p_adj"], claimed_sign=+1, floor_adj=r["bf_floor_adj"])
        out.append(row("variance_seed", place, figure, r["bf_p_adj"], verdict,
                       power="; ".join(p for p in (floor, power) if p),
                       test="Brown–Forsythe on fold × seed residuals"))
    return out
