"""Variance decomposition (fold / seed / residual) per configuration, and which one α shrinks."""

from __future__ import annotations

import math

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import baseline
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table
from qmoe.analysis.power import corrected_floor, detectable_variance_ratio, levene_floor
from qmoe.analysis.stats import adjust, levene_median
from qmoe.analysis.variance import COMPONENTS, Decomposition, balanced, component_ratio, decompose, residuals

TITLE = "Variance decomposition: fold, seed and residual"
NAMES = {"fold": "fold", "seed": "seed", "resid": "fold:seed (residual)"}


def config_grid(rows: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The balanced fold-unit x seed grid of F1 of one configuration's rows, and the cells dropped."""
    y = pd.to_numeric(rows["f1_macro"], errors="coerce")
    cells = pd.DataFrame({"unit": list(zip(rows["split_seed"], rows["fold"])), "seed": rows["seed"], "y": y})
    return balanced(cells.dropna(subset=["y"]))


def decompositions(ctx: Context) -> dict[tuple[str, str, str], tuple[Decomposition, pd.DataFrame]]:
    """(protocol, dataset, config) -> its decomposition and balanced grid (configs with ≥ 2 fold units)."""
    out = {}
    for protocol, g, _ in ctx.protocols():
        for (dataset, config), rows in g.groupby(["dataset", "config"], sort=False):
            grid, dropped = config_grid(rows)
            dec = decompose(grid, dropped=dropped, seed=ctx.seed)
            if dec is not None:
                out[(protocol, dataset, config)] = (dec, grid)
    return out


def _interval(lo: float, hi: float, spec: str = ".2g") -> str:
    return f"[{fmt.num(lo, spec)}, {fmt.num(hi, spec)}]" if fmt.finite(lo) and fmt.finite(hi) else "-"


def decomposition_section(ctx: Context) -> Section:
    """Components with generalised CIs per configuration, and their change per α against α = 0."""
    decs = decompositions(ctx)
    if not decs:
        return Section.skipped("decomposition", TITLE, "not testable here: no configuration has two or more folds")
    ok = ctx.results.ok
    label = dict(zip(ok["config"], ok["label"]))
    data, rows = [], []
    for (protocol, dataset, config), (dec, _) in decs.items():
        raw = {"protocol": protocol, "dataset": dataset, "config": config, "model": label[config],
               "folds": dec.k, "seeds": dec.r, "dropped": dec.dropped, "total": dec.total}
        row = {"protocol": protocol, "dataset": dataset, "model": label[config], "folds × seeds": f"{dec.k} × {dec.r}"}
        for c in COMPONENTS:
            lo, hi = dec.ci[c]
            slo, shi = dec.ci[f"share:{c}"]
            raw |= {c: dec.estimate[c], f"{c}_low": lo, f"{c}_high": hi, f"share_{c}": dec.share(c),
                    f"share_{c}_low": slo, f"share_{c}_high": shi}
            if dec.r < 2 and c != "fold":
                row[NAMES[c]] = "-"
            else:
                share = (f"{fmt.percent(dec.share(c), 0)} {_interval(100 * slo, 100 * shi, '.0f')}"
                         if dec.r >= 2 else "fold + training")
                row[NAMES[c]] = f"{fmt.num(dec.estimate[c], '.2g')} {_interval(lo, hi)}; {share}"
        data.append(raw)
        rows.append(row)
    notes = []
    if all(d.r < 2 for d, _ in decs.values()):
        notes.append("one seed per fold: fold and training randomness cannot be separated; the 'fold' column is "
                     "the whole variance over folds (exact chi-square CI). Run the sweep with --seeds N to split it")
    if any(d.dropped for d, _ in decs.values()):
        notes.append("some configurations lack cells (errored or missing trials): the largest complete fold × "
                     "seed grid is used (see 'dropped' in the CSV)")
    tables = [Table(key="decomposition", title="Variance components of F1 (estimate [95% CI]; share [95% CI])",
                    data=pd.DataFrame(data), display=ctx.display(rows))]
    change, change_notes = change_table(ctx, decs)
    if change is not None:
        tables.append(change)
    return Section(
        key="decomposition", title=TITLE, tables=tuple(tables), notes=tuple(notes + change_notes),
        intro=("Two-way random-effects ANOVA per configuration on the fold × seed cells (statsmodels OLS + anova_lm, "
               "method-of-moments components truncated at 0): fold = between-fold variance, seed = variance shared by "
               "one seed across folds (≈ 0 when a seed index does not fix the same initial weights on every fold), "
               "fold:seed = the residual; with one trial per cell it is the fold × seed interaction, i.e. training "
               "randomness specific to a cell, inseparable from measurement noise. 95% CIs are generalised "
               "confidence intervals (Weerahandi 1993) from chi-square pivots of the sums of squares (20,000 seeded "
               "draws), exact chi-square for the residual. Shares are of the summed components. With repeated "
               "k-fold (--repeats) a fold unit is one fold of one split."))


def change_table(ctx: Context, decs: dict) -> tuple[Table | None, list[str]]:
    """Per mixture config with α > 0: each component's ratio to α = 0 and the residual-variance test."""
    ok = ctx.results.ok
    label = dict(zip(ok["config"], ok["label"]))
    data = []
    for protocol, g, _ in ctx.protocols():
        mix = g[(g["kind"] == "mixture") & (g["alpha"] > 0)]
        for (dataset, config), crows in mix.groupby(["dataset", "config"], sort=False):
            base = baseline(g[g["dataset"] == dataset], config)
            key, key0 = (protocol, dataset, config), (protocol, dataset, base)
            if base is None or key not in decs or key0 not in decs:
                continue
            (dec, grid), (dec0, grid0) = decs[key], decs[key0]
            row = {"protocol": protocol, "dataset": dataset, "config": config, "reference_config": base,
                   "model": label[config], "reference": label[base], "alpha": float(crows["alpha"].iloc[0]),
                   "seeds": min(dec.r, dec0.r)}
            for c in COMPONENTS:
                ratio, lo, hi = component_ratio(dec, dec0, c, seed=ctx.seed)
                row |= {f"{c}_0": dec0.estimate[c], f"{c}_a": dec.estimate[c], f"{c}_ratio": ratio,
                        f"{c}_ratio_low": lo, f"{c}_ratio_high": hi}
            row |= _residual_test(dec, dec0, grid, grid0)
            data.append(row)
    if not data:
        return None, []
    df = pd.DataFrame(data)
    df["bf_p_adj"] = math.nan
    for _, idx in df.groupby("protocol").groups.items():
        df.loc[idx, "bf_p_adj"] = adjust(df.loc[idx, "bf_p"], ctx.correction)
        m = int(df.loc[idx, "bf_p"].notna().sum())
        alpha = 0.05 / max(m, 1)
        df.loc[idx, "bf_floor_adj"] = [corrected_floor(f, m) for f in df.loc[idx, "bf_floor"]]
        df.loc[idx, "resid_detectable_ratio"] = [detectable_variance_ratio(int(a), int(b), alpha) if a >= 1 else math.nan
                                                 for a, b in zip(df.loc[idx, "resid_df_a"], df.loc[idx, "resid_df_b"])]
    rows = []
    for r in df.to_dict("records"):
        row = {"protocol": r["protocol"], "dataset": r["dataset"], "comparison": f"{r['model']} vs {r['reference']}"}
        for c in COMPONENTS:
            if r["seeds"] < 2 and c != "fold":
                row[f"{NAMES[c]} ratio"] = "-"
                continue
            row[f"{NAMES[c]} ratio"] = (f"{fmt.num(r[f'{c}_ratio'], '.2f')} "
                                        f"{_interval(r[f'{c}_ratio_low'], r[f'{c}_ratio_high'], '.2f')}")
        row["residual: Brown–Forsythe p"] = fmt.pvalue(r["bf_p"])
        row[f"p ({ctx.correction.value})"] = fmt.pvalue(r["bf_p_adj"])
        row["80% power at ratio ≤"] = fmt.num(r["resid_detectable_ratio"], ".2f")
        rows.append(row)
    notes = ["ratio = component at α / component at α = 0 (1 = unchanged, 0.3 = cut by 70%). Residual ratio: exact F "
             "interval (the two configurations' training draws are independent). Fold and seed ratios: independent "
             "generalised pivots, wider than needed because both configurations share their folds. Brown–Forsythe "
             "(median-centred Levene) on the two-way residuals of the fold × seed cells; power: the F-test's "
             "smallest detectable ratio at 80% power and α/m (an optimistic bound for Brown–Forsythe)"]
    return (Table(key="decomposition_change", title="Which component does α shrink? (ratio to α = 0 [95% CI])",
                  data=df, display=ctx.display(rows)), notes)


def _residual_test(dec: Decomposition, dec0: Decomposition, grid: pd.DataFrame, grid0: pd.DataFrame) -> dict:
    """Brown–Forsythe over the fold × seed cells' two-way residuals (training randomness)."""
    if dec.r < 2 or dec0.r < 2:
        return {"bf_w": math.nan, "bf_p": math.nan, "bf_floor": math.nan, "resid_df_a": 0, "resid_df_b": 0}
    ra, rb = residuals(grid), residuals(grid0)
    w, p = levene_median(ra, rb)
    return {"bf_w": w, "bf_p": p, "bf_floor": levene_floor(len(ra), len(rb)),
            "resid_df_a": dec.df["resid"], "resid_df_b": dec0.df["resid"]}
