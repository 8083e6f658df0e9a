"""Every target one ``qmoe bench`` run measured, in one list (issues 8 and 14): what the run's
last table shows, each target marked met or not.

The figures come from the benchmarks that measured them (:mod:`qmoe.bench`,
:mod:`qmoe.bench_trial`, :mod:`qmoe.bench_seeds`, :mod:`qmoe.sweeps.bench`); a part that did
not run (``--no-trials``, ``--no-sweep``) leaves its targets out.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from qmoe.bench import EpochRow, TargetRow
from qmoe.bench_targets import (FIRST_TRIAL_TARGET_S, against, GRID_HOURS_TARGET, QAT_EPOCH_TARGET, RSS_TARGET_MB,
                                SEED_RATIO_TARGET, SEEDS, SHORT_EFFICIENCY_TARGET,
                                SINGLE_TRIAL_TARGET_S, SIZED_EFFICIENCY_TARGET, SWEEP_RATIO_TARGET, sign_verdict)


def _x(value: float) -> str:
    return f"{value:.2f}x"


def summary_rows(*, deployed: Sequence[TargetRow] = (), epochs: Sequence[EpochRow] = (),
                 trials: Sequence[Any] = (), stacked: Any = None, short: Any = None,
                 sized: Any = None, floors: Sequence[Any] = (), memory: Sequence[Any] = ()) -> list[TargetRow]:
    """The targets of one run.

    Args:
        deployed: :func:`qmoe.bench.check_targets`' rows (batch 1 and 256).
        epochs: :func:`qmoe.bench.bench_epochs`' rows (QAT epoch vs fp32, quantizers trained
            with quantization only).
        trials: :func:`qmoe.bench_trial.bench_trials`' rows (single trial seconds, peak RSS).
        stacked: :func:`qmoe.bench_seeds.stacked_step`'s figure (seed batching is not built:
            its target is never met; the stacked step says how far off the simplest form is).
        short, sized: the sweep benchmarks (:mod:`qmoe.sweeps.bench.sweep_efficiency`).
        floors: :func:`qmoe.bench_seeds.seed_floors`' rows (the least any seed batching takes).
        memory: :func:`qmoe.bench_trial.fresh_trial_memory`' rows: trials alone in fresh processes
            that import what a sweep worker does. The peak RSS target is judged on them when
            given (the in-process trials' peaks include what the bench process holds).
    """
    from qmoe.quant import get_quantizer

    out = list(deployed)
    for r in epochs:
        if r.quantizer != "fp32" and not get_quantizer(r.quantizer).post_training:
            met, test = qat_verdict(r)
            detail = "; ".join(x for x in (f"rounds {r.spread}" if r.spread else "", test) if x)
            out.append(TargetRow(f"QAT epoch <= {QAT_EPOCH_TARGET:g}x fp32", r.quantizer,
                                 against(r.ratio, QAT_EPOCH_TARGET, at_least=False) + "x"
                                 + (f" ({detail})" if detail else ""), met))
    singles = [r for r in trials if not r.is_mixture]
    if singles:
        slowest = max(singles, key=lambda r: r.seconds)
        out.append(TargetRow(f"single-model trial <= {SINGLE_TRIAL_TARGET_S:g} s", f"slowest: {slowest.model}",
                             f"{against(slowest.seconds, SINGLE_TRIAL_TARGET_S, at_least=False, digits=1)} s",
                             slowest.seconds <= SINGLE_TRIAL_TARGET_S))
    if memory:
        out.append(_memory_row(memory))
    elif trials:
        peak = max(trials, key=lambda r: r.peak_rss_mb)
        out.append(TargetRow(f"trial peak RSS <= {RSS_TARGET_MB:g} MB", f"highest (bench process): {peak.model}",
                             f"{against(peak.peak_rss_mb, RSS_TARGET_MB, at_least=False, digits=0)} MB",
                             peak.peak_rss_mb <= RSS_TARGET_MB))
    if stacked is not None:
        out.append(TargetRow(f"{SEEDS} seeds <= {SEED_RATIO_TARGET:g}x one seed's trial", "all",
                             f"not built ({SEEDS} trials, {SEEDS}x); {SEEDS} fp32 MLPs stacked: "
                             f"{_x(stacked.ratio)} one step{_floor_note(floors)}", False))
    if short is not None:
        first = ("never" if short.first_trial is None
                 else f"{against(short.first_trial, FIRST_TRIAL_TARGET_S, at_least=False, digits=1)} s")
        out += [TargetRow(f"sweep efficiency, 8 short trials >= {SHORT_EFFICIENCY_TARGET:g}", "qmoe sweep",
                          f"{against(short.ours_efficiency, SHORT_EFFICIENCY_TARGET, at_least=True)}"
                          f"{_ceiling_note(short)}", short.efficiency_met),
                TargetRow(f"first trial running <= {FIRST_TRIAL_TARGET_S:g} s after the command", "qmoe sweep",
                          first + _first_floor_note(short), short.first_trial_met),
                TargetRow(f"efficiency / Ray Tune defaults' >= {SWEEP_RATIO_TARGET:g}x", "qmoe sweep",
                          against(short.ratio, SWEEP_RATIO_TARGET, at_least=True) + "x", short.met)]
    if sized is not None:
        out += [TargetRow(f"sweep efficiency, ESC-50-sized Table 1 >= {SIZED_EFFICIENCY_TARGET:g}", "qmoe sweep",
                          against(sized.efficiency, SIZED_EFFICIENCY_TARGET, at_least=True), sized.efficiency_met),
                TargetRow(f"paper grid on {sized.slots} slots <= {GRID_HOURS_TARGET:g} h", "qmoe sweep",
                          f"{against(sized.grid_hours, GRID_HOURS_TARGET, at_least=False)} h "
                          f"({SEEDS} seeds: {sized.grid_seeds_hours:.1f} h)", sized.grid_met)]
    return out


def qat_verdict(row: EpochRow, target: float = QAT_EPOCH_TARGET) -> tuple[bool | None, str]:
    """Whether the rounds show ``row``'s QAT epoch within ``target`` x fp32's, and how: the sign
    test of :func:`qmoe.bench_targets.sign_verdict` on the rounds' own ratios (each round's epoch
    over the same round's fp32 epochs). A row without its rounds is judged on its figure alone,
    as before rounds were recorded.
    """
    if not row.ratios:
        return row.ratio <= target, ""
    return sign_verdict(row.ratios, target, at_least=False)


def _memory_row(memory: Sequence[Any]) -> TargetRow:
    """The peak RSS target on trials alone in worker-like processes: the highest peak, what it is
    made of, and whether the imports alone already exceed the target (then nothing a trial
    does can meet it)."""
    peak = max(memory, key=lambda r: r.peak_mb)
    floor = min(r.imports_mb for r in memory)
    note = (f"; imports alone {floor:.0f} MB: ruled out" if floor > RSS_TARGET_MB else "")
    return TargetRow(f"trial peak RSS <= {RSS_TARGET_MB:g} MB", f"highest, fresh worker-like process: {peak.model}",
                     f"{against(peak.peak_mb, RSS_TARGET_MB, at_least=False, digits=0)} MB = "
                     f"imports {peak.imports_mb:.0f} + table {peak.table_mb:.0f} "
                     f"+ trial {peak.increment_mb:.0f}{note}", peak.peak_mb <= RSS_TARGET_MB)


def _ceiling_note(short: Any) -> str:
    """What a worker's start-up leaves of the short trials' efficiency (:attr:`ShortBench.ceiling`)."""
    ceiling = getattr(short, "ceiling", None)
    if ceiling is None:
        return ""
    verdict = ": ruled out" if short.ruled_out else ""
    return (f"; every worker imports Ray Tune and the trial's code after the run starts (>= {short.worker_imports:.2f} s): "
            f"at most {ceiling:.2f}{verdict}")


def _first_floor_note(short: Any) -> str:
    """What Ray's start and a worker's imports leave of the first trial (:attr:`ShortBench.first_trial_floor`)."""
    floor = getattr(short, "first_trial_floor", None)
    if floor is None:
        return ""
    verdict = ": ruled out" if short.first_trial_ruled_out else ""
    return (f"; Ray's start {short.ray_start:.2f} s, then a worker's imports {short.worker_imports:.2f} s: "
            f"at least {floor:.2f} s{verdict}")


def _floor_note(floors: Sequence[Any]) -> str:
    if not floors:
        return ""
    low = min(floors, key=lambda r: r.floor_ratio)
    verdict = "ruled out for every model" if all(r.ruled_out for r in floors) else "not ruled out for all"
    return f"; any batching >= {_x(low.floor_ratio)} ({low.model}): {verdict}"
