"""Descriptive sections: the trials, per-model summaries (Tables 1, 5), mixtures (3), sizes (8)."""

from __future__ import annotations

import math

import pandas as pd

from qmoe.analysis import fmt
from qmoe.analysis.aggregate import config_order, summarise
from qmoe.analysis.configs import base_name, bit_width, precision
from qmoe.analysis.context import Context
from qmoe.analysis.document import Section, Table

SUMMARY_METRICS = ("f1_macro", "f1_weighted", "accuracy", "latency_p50_us",
                   "energy_per_inference_mj", "size_kb", "params", "peak_rss_mb")
FIXED = ("size_kb", "params")  # properties of the model, shown without "± 0"
MIXTURE_METRICS = ("f1_macro", "latency_p50_us", "energy_per_inference_mj", "co2_per_inference_ug", "params")


def _ordered(summary: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    rank = {c: i for i, c in enumerate(config_order(ok))}
    return summary.assign(_r=summary["config"].map(rank)).sort_values(
        ["protocol", "dataset", "_r"], na_position="last").drop(columns="_r")


def trials_section(ctx: Context) -> Section:
    """Errored trials, listed (they are never averaged)."""
    title = "Errored trials"
    err = ctx.results.errors
    if err.empty:
        return Section.skipped("errors", title, "none: every trial in the table finished")
    rows = []
    for r in err.sort_values(["protocol", "dataset", "label", "fold"]).itertuples():
        text = " ".join(str(r.error or "").split())
        rows.append({"protocol": r.protocol, "dataset": r.dataset, "model": r.label, "fold": int(r.fold),
                     "trial_key": r.trial_key, "error": text[:160] + ("..." if len(text) > 160 else "")})
    data = pd.DataFrame(rows)
    return Section(key="errors", title=title,
                   intro=f"{len(err)} trial(s) ended in an error; they are left out of every average and test.",
                   tables=(Table(key="errors", title="Errored trials", data=data, display=ctx.display(rows)),))


def summary_section(ctx: Context) -> Section:
    """Per dataset x model: mean ± std (ddof 1) over folds of the headline metrics."""
    title = "Per dataset and model (Tables 1 and 5)"
    ok = ctx.results.ok
    if ok.empty:
        return Section.skipped("summary", title, "no finished trials to average")
    keys = ["protocol", "dataset", "config", "label", "kind"]
    summary = summarise(ok, keys, SUMMARY_METRICS)
    units = ok.assign(_unit=list(zip(ok["split_seed"], ok["fold"])))
    n_folds = units.groupby(keys)["_unit"].nunique().rename("n_folds").reset_index()
    summary = summary.merge(n_folds, on=keys, how="left")
    err = ctx.results.errors
    failed = err.groupby(["protocol", "dataset", "config"]).size() if not err.empty else pd.Series(dtype=int)
    summary["n_errored"] = [int(failed.get((p, d, c), 0)) for p, d, c in
                            zip(summary["protocol"], summary["dataset"], summary["config"])]
    only_failed = [] if err.empty else [
        {"protocol": p, "dataset": d, "config": c, "label": g["label"].iloc[0], "kind": g["kind"].iloc[0],
         "n_folds": 0, "n_errored": len(g)}
        for (p, d, c), g in err.groupby(["protocol", "dataset", "config"])
        if not ((summary["protocol"] == p) & (summary["dataset"] == d) & (summary["config"] == c)).any()]
    if only_failed:
        summary = pd.concat([summary, pd.DataFrame(only_failed)], ignore_index=True)
    summary = _ordered(summary, pd.concat([ok, err]) if not err.empty else ok)
    rows = []
    for r in summary.to_dict("records"):
        row = {"protocol": r["protocol"], "dataset": r["dataset"], "model": r["label"], "n": r["n_folds"]}
        if not err.empty:
            row["errored"] = r["n_errored"]
        for m in SUMMARY_METRICS:
            if m in FIXED and r.get(f"{m}_std") == 0:
                row[fmt.METRICS[m].header] = fmt.value(m, r.get(f"{m}_mean"))  # the same on every fold
            else:
                row[fmt.METRICS[m].header] = fmt.mean_std(m, r.get(f"{m}_mean"), r.get(f"{m}_std"),
                                                         r.get(f"{m}_n"))
        rows.append(row)
    tables = [Table(key="summary", title="Mean ± std over folds", display=ctx.display(rows),
                    data=summary.rename(columns={"label": "model"}))]
    notes = [n for n in (fmt.latency_note(ok),) if n]
    if (summary["n_folds"] == 1).any():
        notes.append("a single value is shown as 'x (n=1)': no fold variance with one fold")
    if len(ctx.results.datasets) > 1:
        tables.append(_by_dataset(ctx, summary))
    figures = ()
    if ctx.plots:
        from qmoe.analysis import plots

        figures = tuple(plots.latency_by_model(g, config_order(g), protocol) for protocol, g, _ in ctx.protocols()
                        if pd.to_numeric(g["latency_p50_us"], errors="coerce").notna().any())
    return Section(key="summary", title=title, tables=tuple(tables), notes=tuple(notes), plots=figures,
                   intro="Mean ± standard deviation (ddof 1) over the test folds; n = folds averaged. With several "
                         "seeds a fold's value is the mean over its seeds (the seed spread is in the variance "
                         "decomposition).")


def _by_dataset(ctx: Context, summary: pd.DataFrame) -> Table:
    """Table 1's layout: F1 per dataset side by side and the average over datasets."""
    datasets = ctx.results.datasets
    rows, data = [], []
    for (protocol, config), g in summary.groupby(["protocol", "config"], sort=False):
        means = {d: g.loc[g["dataset"] == d, "f1_macro_mean"] for d in datasets}
        row = {"protocol": protocol, "model": g["label"].iloc[0]}
        raw = {"protocol": protocol, "model": g["label"].iloc[0]}
        for d in datasets:
            sel = g[g["dataset"] == d]
            if len(sel):
                s = sel.iloc[0]
                row[d] = fmt.mean_std("f1_macro", s.get("f1_macro_mean"), s.get("f1_macro_std"), s.get("f1_macro_n"))
                raw[f"{d}_mean"], raw[f"{d}_std"] = s.get("f1_macro_mean"), s.get("f1_macro_std")
            else:
                row[d] = "-"
        values = [float(m.iloc[0]) for m in means.values() if len(m) and fmt.finite(m.iloc[0])]
        avg = sum(values) / len(values) if len(values) == len(datasets) else math.nan
        row["avg F1"], raw["avg_f1"] = fmt.value("f1_macro", avg), avg
        rows.append(row)
        data.append(raw)
    return Table(key="f1_by_dataset", title="F1 macro by dataset (average only where every dataset has it)",
                 data=pd.DataFrame(data), display=ctx.display(rows))


def mixtures_section(ctx: Context) -> Section:
    """Mixtures: F1, latency, energy, CO2 and F1 per mJ (Table 3)."""
    title = "Mixtures (Table 3)"
    ok = ctx.results.ok
    mix = ok[ok["kind"] == "mixture"]
    if mix.empty:
        return Section.skipped("mixtures", title, "not testable here: the sweep has no mixtures")
    keys = ["protocol", "dataset", "config", "label", "model", "alpha"]
    summary = _ordered(summarise(mix, keys, MIXTURE_METRICS), mix)
    summary["f1_per_mj"] = summary["f1_macro_mean"] / summary["energy_per_inference_mj_mean"].where(
        summary["energy_per_inference_mj_mean"] > 0)
    rows = []
    for r in summary.to_dict("records"):
        row = {"protocol": r["protocol"], "dataset": r["dataset"], "model": r["label"],
               "type": "MoE-C" if r["alpha"] > 0 else "MoE", "n": r["f1_macro_n"]}
        for m in MIXTURE_METRICS:
            row[fmt.METRICS[m].header] = (fmt.value(m, r[f"{m}_mean"]) if m == "params" else
                                          fmt.mean_std(m, r[f"{m}_mean"], r[f"{m}_std"], r[f"{m}_n"]))
        row["F1 per mJ"] = fmt.num(r["f1_per_mj"], ".3g")
        rows.append(row)
    methods = sorted(set(mix["energy_method"].dropna().astype(str)))
    if set(methods) <= {"off"}:
        notes = ["energy was not measured (energy method off or none), so F1 per mJ is '-'"]
    else:
        notes = [f"energy method(s): {', '.join(methods)}" + ("; 'cpu-load'/'constant' are estimates, not "
                                                               "measurements" if {"cpu-load", "constant"} & set(methods) else "")]
    notes += [n for n in (fmt.latency_note(mix),) if n]
    return Section(key="mixtures", title=title, notes=tuple(notes),
                   intro="MoE = plain learned routing (α = 0); MoE-C = curiosity routing (α > 0). "
                         "F1 per mJ = mean F1 / mean energy per inference.",
                   tables=(Table(key="mixtures", title="Mixtures", data=summary.rename(columns={"label": "name"}),
                                 display=ctx.display(rows)),))


def quantizer_kind(model: str) -> str:
    """How a model's weights are stored: BitLinear, ternary, int8 PTQ, ... ."""
    if "," in model:
        return "mixture"
    name = base_name(model)
    if bit_width(name) is not None:
        return "BitLinear"
    return {"fp32": "none", "bitnet": "ternary", "ptq8": "int8 PTQ", "binary": "binary popcount"}.get(name, name)


def sizes_section(ctx: Context) -> Section:
    """Deployed size, parameters and compression per model (Table 8)."""
    title = "Model sizes and compression (Table 8)"
    ok = ctx.results.ok
    have = ok[pd.to_numeric(ok["size_kb"], errors="coerce").notna()]
    if have.empty:
        return Section.skipped("sizes", title, "no finished trial recorded a model size")
    # A deployed size does not depend on the fold or the protocol, only on the model and the
    # dataset's dimensions; a size that varies across folds is flagged.
    keys = ["dataset", "config", "label", "model"]
    rows, data, varying = [], [], []
    rank = {c: i for i, c in enumerate(config_order(have))}
    for (dataset, config, label, model), g in sorted(have.groupby(keys), key=lambda kv: (kv[0][0], rank[kv[0][1]])):
        size = pd.to_numeric(g["size_kb"], errors="coerce")
        if size.nunique() > 1:
            varying.append(f"{label} ({dataset})")
        params = pd.to_numeric(g["params"], errors="coerce").median()
        comp = pd.to_numeric(g["compression"], errors="coerce").median()
        bits = precision(model)
        raw = {"dataset": dataset, "model": label, "quantizer": quantizer_kind(model),
               "bits": bits if "," not in model else math.nan, "params": params,
               "size_kb": size.median(), "size_mb": size.median() / 1000, "compression": comp}
        data.append(raw)
        rows.append({"dataset": dataset, "model": label, "quantizer": raw["quantizer"],
                     "bits": "mix" if "," in model else fmt.num(bits, ".3g"),
                     "params": fmt.value("params", params), "KB": fmt.value("size_kb", size.median()),
                     "MB": fmt.num(size.median() / 1000, ".2f"), "compression": f"{fmt.num(comp, '.2f')}x"})
    notes = ["1 KB = 1000 bytes; compression = fp32 bytes / deployed bytes"]
    if varying:
        notes.append("size differs across folds (median shown) for: " + ", ".join(varying))
    return Section(key="sizes", title=title, notes=tuple(notes),
                   tables=(Table(key="sizes", title="Deployed sizes", data=pd.DataFrame(data),
                                 display=ctx.display(rows)),))
