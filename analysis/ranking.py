"""Many configurations at once: Friedman test, Nemenyi post-hoc and a critical-difference diagram.

Demšar (2006): rank the configurations within each block, test that all mean ranks are equal
(Friedman, ``scipy.stats.friedmanchisquare``), then compare every pair (Nemenyi,
``scikit_posthocs.posthoc_nemenyi_friedman``); two mean ranks further apart than the critical
difference ``CD = q_alpha / sqrt(2) * sqrt(k (k + 1) / (6 N))`` differ. Blocks must be
independent, so a block is one fold unit (dataset, split_seed, fold) with its seeds averaged:
cells of one fold share their test set and would count the same fold several times.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
from scipy import stats

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import config_order
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table

TITLE = "Ranking many configurations (Friedman, Nemenyi, critical difference)"
LEVEL = 0.05


def block_matrix(g: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """Blocks (dataset, split_seed, fold) x configs of mean F1 over seeds, complete cases only.

    A config present in fewer than half the blocks is left out (it would empty the table);
    then every block missing a remaining config is left out. Returns the matrix and notes.
    """
    y = g.assign(_y=pd.to_numeric(g["f1_macro"], errors="coerce")).dropna(subset=["_y"])
    wide = y.pivot_table(index=["dataset", "split_seed", "fold"], columns="config", values="_y", aggfunc="mean")
    notes = []
    sparse = [c for c in wide.columns if wide[c].notna().mean() < 0.5]
    if sparse:
        notes.append(f"left out (present in fewer than half the blocks): {len(sparse)} configuration(s)")
    wide = wide.drop(columns=sparse)
    complete = wide.dropna()
    if len(complete) < len(wide):
        notes.append(f"{len(wide) - len(complete)} block(s) lack a configuration (errored or missing) and are left out")
    order = [c for c in config_order(g) if c in complete.columns]
    return complete[order], notes


def ranking_section(ctx: Context) -> Section:
    """Per protocol: mean ranks, Friedman, Nemenyi p per pair and the CD diagram."""
    tables, plots_, notes, reasons = [], [], [], []
    label = dict(zip(ctx.results.ok["config"], ctx.results.ok["label"]))
    for protocol, g, _ in ctx.protocols():
        matrix, why = block_matrix(g)
        notes += [f"{protocol}: {w}" for w in why] if ctx.multi_protocol else why
        k, n = matrix.shape[1], matrix.shape[0]
        if k < 3 or n < 2:
            reasons.append(f"{protocol}: {k} configuration(s) on {n} complete block(s); Friedman needs ≥ 3 on ≥ 2")
            continue
        matrix = matrix.rename(columns=label)
        import scikit_posthocs as sp  # imports matplotlib and seaborn (~3 s): only when there is a ranking

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            chi2, p = stats.friedmanchisquare(*[matrix[c].to_numpy() for c in matrix.columns])
            nemenyi = sp.posthoc_nemenyi_friedman(matrix)
        ranks = matrix.rank(axis=1, ascending=False).mean()  # rank 1 = highest F1
        cd = float(stats.studentized_range.ppf(1 - LEVEL, k, np.inf) / math.sqrt(2) * math.sqrt(k * (k + 1) / (6 * n)))
        rank_rows = [{"protocol": protocol, "model": c, "mean rank": fmt.num(ranks[c], ".2f"),
                      "mean F1": fmt.value("f1_macro", matrix[c].mean()), "blocks": n} for c in ranks.sort_values().index]
        raw = pd.DataFrame({"protocol": protocol, "model": ranks.index, "mean_rank": ranks.values,
                            "mean_f1": matrix.mean().values, "blocks": n, "friedman_chi2": chi2,
                            "friedman_p": p, "cd": cd})
        pairs = [{"protocol": protocol, "a": a, "b": b, "rank_a": ranks[a], "rank_b": ranks[b],
                  "rank_diff": abs(ranks[a] - ranks[b]), "p_nemenyi": float(nemenyi.loc[a, b])}
                 for i, a in enumerate(matrix.columns) for b in matrix.columns[i + 1:]]
        pair_rows = [{"protocol": r["protocol"], "comparison": f"{r['a']} vs {r['b']}",
                      "|Δ mean rank|": fmt.num(r["rank_diff"], ".2f"), "p (Nemenyi)": fmt.pvalue(r["p_nemenyi"]),
                      "differ": "yes" if r["p_nemenyi"] < LEVEL else "no"} for r in pairs]
        title = (f"Mean ranks ({protocol}): Friedman χ² = {chi2:.2f}, {fmt.p_is(p)}, "
                 f"{k} configurations × {n} blocks, CD = {cd:.2f}")
        tables += [Table(key=f"ranking_{protocol}", title=title, data=raw, display=ctx.display(rank_rows)),
                   Table(key=f"nemenyi_{protocol}", title=f"Nemenyi post-hoc ({protocol})", data=pd.DataFrame(pairs),
                         display=ctx.display(pair_rows))]
        if ctx.plots:
            from qmoe.analysis import plots

            plots_.append(plots.cd_diagram(ranks, nemenyi, cd, f"Critical difference ({protocol}, {n} blocks)",
                                           protocol))
    if not tables:
        return Section.skipped("ranking", TITLE, "not testable here: " + "; ".join(reasons))
    return Section(
        key="ranking", title=TITLE, tables=tuple(tables), plots=tuple(plots_), notes=tuple(notes + reasons),
        intro=("Blocks = fold units (dataset, split, fold), each the mean F1 over its seeds; treatments = every "
               "configuration of the protocol; rank 1 = highest F1 in a block. Friedman test (scipy) of equal mean "
               "ranks; Nemenyi post-hoc (scikit-posthocs, family-wise at 0.05); critical difference CD = q₀.₀₅ / √2 · "
               "√(k(k+1)/6N) (Demšar 2006). Fold × seed cells are not used as blocks: the cells of one fold share its "
               "test set, and Friedman needs independent blocks. Read the Nemenyi verdicts only where Friedman "
               "rejects."))
