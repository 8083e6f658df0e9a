"""The tables of ``qmoe bench``: each figure the library measured, laid out, targets marked met or not."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.table import Table

from qmoe.bench_targets import (FIRST_TRIAL_TARGET_S, GRID_HOURS_TARGET, QAT_EPOCH_TARGET, RSS_TARGET_MB,
                                SEED_RATIO_TARGET, SEEDS, SHORT_EFFICIENCY_TARGET, SIGN_TEST_ALPHA,
                                SINGLE_TRIAL_TARGET_S, SIZED_EFFICIENCY_TARGET, SWEEP_RATIO_TARGET)
from qmoe.cli.console import fmt


def _yes(met: bool | None) -> str:
    return "not shown" if met is None else "yes" if met else "NO"


def bandwidth_table(bw: Any) -> Table:
    """Read bandwidth of one core (:class:`qmoe.bench.Bandwidth`)."""
    table = Table(title="Read bandwidth of one core (GB/s), for the floors")
    for col in (f"L2 ({bw.l2_bytes >> 10} KiB)", f"L3 ({bw.l3_bytes >> 20} MiB)", "DRAM"):
        table.add_column(col)
    table.add_row(fmt(bw.l2_gbs), fmt(bw.l3_gbs), fmt(bw.dram_gbs))
    return table


def latency_table(rows: Sequence[Any]) -> Table:
    """Deployed forms: batch-1 latency, batch-256 throughput, size and floors (:class:`qmoe.bench.LatencyRow`)."""
    table = Table(title="Deployed forms: batch-1 latency and batch-256 throughput (one thread); "
                        "floor = bytes read per inference / bandwidth")
    table.add_column("model", overflow="fold")
    table.add_column("form", overflow="fold", min_width=24)
    for col in ("p50 µs", "p99 µs", "speed-up", "samples/s @256", "vs fp32", "size KB", "compr.",
                "read KB", "floor µs (where)", "floor µs DRAM"):
        table.add_column(col)
    rounds = max((len(r.speedups) for r in rows), default=0)
    if rounds:
        table.caption = (f"Every form and torch fp32 eager take turns in {rounds} rounds; speed-up and vs fp32 are the "
                         "medians of each round's own ratio (against the baseline's turns before and after it); the "
                         "floors (kernel alone, call alone) are timed apart. Mixture rows: against the all-torch mixture")
    for r in rows:
        floor = "-" if r.floor_level == "-" else f"{fmt(r.floor_us)} ({r.floor_level})"
        table.add_row(r.quantizer, r.form, fmt(r.p50_us), fmt(r.p99_us), f"{r.speedup:.2f}x",
                      fmt(r.throughput), f"{r.throughput_ratio:.2f}x", fmt(r.size_kb),
                      f"{r.compression:.1f}x", fmt(r.read_kb), floor, fmt(r.floor_dram_us))
    return table


def targets_table(targets: Sequence[Any]) -> Table:
    """The deployed forms' targets (:data:`qmoe.bench_targets.SPEEDUP_TARGETS`, checked by
    :func:`qmoe.bench.check_targets`)."""
    table = Table(title="Deployed-form targets, batch 1 and 256 (vs torch fp32 eager, measured above)")
    table.caption = (f"A form timed in rounds is judged by a one-sided sign test on its rounds' ratios at "
                     f"p <= {SIGN_TEST_ALPHA:g}; \"not shown\" where neither side is shown")
    for col in ("target", "model", "measured", "met"):
        table.add_column(col)
    for t in targets:
        table.add_row(t.target, t.quantizer, t.measured, _yes(t.met))
    return table


def summary_table(rows: Sequence[Any]) -> Table:
    """Every target of the run, met or not (:func:`qmoe.bench_summary.summary_rows`)."""
    met, undecided = sum(r.met is True for r in rows), sum(r.met is None for r in rows)
    open_ = f", {undecided} not shown (the measurement could not decide)" if undecided else ""
    table = Table(title=f"All targets of this run: {met} of {len(rows)} met{open_}")
    for col in ("target", "what", "measured", "met"):
        table.add_column(col)
    for t in rows:
        table.add_row(t.target, t.quantizer, t.measured, _yes(t.met))
    return table


def epochs_table(rows: Sequence[Any], rounds: int) -> Table:
    """Seconds per training epoch against fp32 (:func:`qmoe.bench.bench_epochs`)."""
    from qmoe.bench_summary import qat_verdict
    from qmoe.quant import get_quantizer

    table = Table(title=f"Training: seconds per epoch (one thread, CPU time, median of {rounds} rounds)")
    table.caption = ("Each round runs every quantizer's epoch between two fp32 epochs; its own ratio is over their "
                     "mean, vs fp32 the median of those. QAT target: a one-sided sign test on the own ratios at "
                     f"p <= {SIGN_TEST_ALPHA:g}; \"not shown\" where neither side is shown")
    for col in ("quantizer", "s/epoch", "vs fp32", "rounds' own ratios", "middle half",
                f"QAT <= {QAT_EPOCH_TARGET}x fp32"):
        table.add_column(col)
    for r in rows:
        qat = r.quantizer != "fp32" and not get_quantizer(r.quantizer).post_training
        table.add_row(r.quantizer, fmt(r.seconds_per_epoch), f"{r.ratio:.2f}x", r.spread or "-", r.quartiles or "-",
                      _yes(qat_verdict(r)[0]) if qat else "-")
    return table


def trials_table(rows: Sequence[Any]) -> Table:
    """One real trial per model on the ESC-50-sized table (:func:`qmoe.bench_trial.bench_trials`)."""
    table = Table(title="Real trials on an ESC-50-sized table (2,000 x 1,536, 50 classes, fold 1; "
                        "one thread; energy measured)")
    for col in ("model", "trial s", "train s", "epochs", "s/epoch", "rest s", "test macro-F1",
                "peak RSS MB", "peak over start MB", f"single <= {SINGLE_TRIAL_TARGET_S:.0f} s"):
        table.add_column(col)
    for r in rows:
        met = "-" if r.meets_target is None else _yes(r.meets_target)
        table.add_row(r.model, fmt(r.seconds), fmt(r.train_seconds), str(r.epochs),
                      fmt(r.seconds_per_epoch), fmt(r.measure_seconds), f"{r.f1_macro:.3f}",
                      fmt(r.peak_rss_mb), fmt(r.peak_increment_mb), met)
    table.caption = ("rest = split, deployment, latency, throughput and energy; the first trial "
                     "also loads the numba kernels; peak over start = peak RSS "
                     "minus the RSS as the trial started (imports, table, earlier trials). The table is synthetic: timings, not science.")
    return table


def seeds_table(rows: Sequence[Any], stacked: Any = None) -> Table:
    """The least time :data:`SEEDS` seeds of each trial above can take together (:mod:`qmoe.bench_seeds`)."""
    table = Table(title=f"{SEEDS} seeds of one trial: target <= {SEED_RATIO_TARGET:g}x one seed's trial. "
                        f"Seed-batched training is not built: {SEEDS} seeds run as {SEEDS} trials ({SEEDS}x)")
    for col in ("model", "one seed's trial s", "steps", "matmul GFLOP/step", "optimizer MB/step",
                f"any batching: {SEEDS} seeds at least s", "at least x one seed", "ruled out by this bound",
                "target met"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.model, fmt(r.trial_seconds), str(r.steps), f"{r.gflops_per_step:.3f}",
                      fmt(r.mb_per_step), fmt(r.floor_seconds), f"{r.floor_ratio:.2f}x",
                      "yes" if r.ruled_out else "no", _yes(False))
    if rows:
        where = (f"the best of {rows[0].probes} probes, before each trial above and after the last"
                 if rows[0].probes > 1 else "measured here")
        table.caption = (f"at least = {SEEDS} x steps x (forward + weight-gradient matmuls at the best GEMM rate, "
                         f"{rows[0].gemm_gflops:.0f} GFLOP/s, + AdamW's 28 bytes per parameter, "
                         f"less what the L2 could hold ({rows[0].cached_mb:.1f} MB), at the read bandwidth of the "
                         f"level holding one seed's optimizer state, {rows[0].level} {rows[0].bandwidth_gbs:.0f} GB/s; "
                         f"both rates {where}): work every "
                         "seed needs however the seeds are batched. A bound above the target rules batching "
                         "out here; below it, it rules nothing out (quantization, dropout, input gradients and "
                         "GEMMs below peak are left out).")
    if stacked is not None:
        table.caption = ((table.caption or "") +
                         f" Measured: one fp32 training step of {stacked.seeds} MLPs stacked into one model (batched "
                         f"matmuls, one graph, one optimizer; batch {stacked.batch} each) took {stacked.stacked_ms:.1f} ms, "
                         f"{stacked.ratio:.1f}x one MLP's step ({stacked.one_ms:.1f} ms) in the same run.")
    return table


def memory_table(imports: Sequence[Any], trial_rss: Sequence[float], fresh: Sequence[Any] = ()) -> Table:
    """Resident memory: fresh processes importing what a trial needs (:func:`qmoe.bench.import_memory`),
    the trials' peaks, and trials run alone in fresh worker-like processes
    (:func:`qmoe.bench_trial.fresh_trial_memory`)."""
    table = Table(title=f"Memory (MB): what imports alone hold, and a trial's peak (target <= {RSS_TARGET_MB:.0f})")
    for col in ("process", "RSS", "private (anon)", "shared libraries (file)"):
        table.add_column(col)
    for r in imports:
        table.add_row(f"python -c 'import {', '.join(r.modules) or '(nothing)'}'", fmt(r.rss_mb),
                      fmt(r.anon_mb), fmt(r.file_mb))
    if trial_rss:
        verdict = "" if fresh else f"; target met: {_yes(max(trial_rss) <= RSS_TARGET_MB)}"
        table.add_row(f"one trial in this bench process, peak (min-max over the trials above; with what this "
                      f"process holds{verdict})", f"{fmt(min(trial_rss))}-{fmt(max(trial_rss))}", "", "")
    for r in fresh:
        table.add_row(f"one {r.model} trial ({r.epochs} epochs) alone in a fresh process: after "
                      f"{', '.join(r.imported)}; + the table; the trial's peak (its own increment over both); "
                      f"target met: {_yes(r.peak_mb <= RSS_TARGET_MB)}",
                      f"{fmt(r.imports_mb)}; +{fmt(r.table_mb)}; {fmt(r.peak_mb)} (+{fmt(r.increment_mb)})", "", "")
    table.caption = ("file pages are shared by every worker on a node; torch's own import is most "
                     "of a trial's floor. A trial allocates its buffers in its first epoch: a few "
                     "epochs show its peak.")
    return table


def short_table(bench: Any) -> Table:
    """8 short trials: one by one, ours, Ray Tune's defaults (:class:`~qmoe.sweeps.bench.sweep_efficiency.ShortBench`)."""
    serial = bench.serial
    table = Table(title=f"Sweep efficiency, {len(serial.trials)} short trials on {bench.slots} slots "
                        f"(`qmoe {' '.join(bench.args)}`): ours vs Ray Tune defaults")
    for col in ("run", "trials", "sum of trial s", "mean trial s", "vs one by one", "wall s",
                "efficiency", "first trial running after s"):
        table.add_column(col)
    table.add_row("one by one, 1 process", str(len(serial.trials)), fmt(serial.trial_seconds),
                  fmt(serial.mean_seconds), "1.00x", "-", "-", "-")
    for label, times, eff, first in (("qmoe sweep (ours)", bench.ours, bench.ours_efficiency, bench.first_trial),
                                     ("Ray Tune defaults", bench.defaults, bench.defaults_efficiency, None)):
        table.add_row(label, str(len(times.trials)), fmt(times.trial_seconds), fmt(times.mean_seconds),
                      f"{times.mean_seconds / serial.mean_seconds:.2f}x", fmt(times.wall_seconds),
                      fmt(eff), fmt(first))
    table.caption = (f"our efficiency {fmt(bench.ours_efficiency)} (target >= {SHORT_EFFICIENCY_TARGET:g}: "
                     f"{_yes(bench.efficiency_met)}); first trial running {fmt(bench.first_trial)} s after our command "
                     f"started (target <= {FIRST_TRIAL_TARGET_S:g} s: {_yes(bench.first_trial_met)}); "
                     f"ours / defaults = {bench.ratio:.2f}x (target >= {SWEEP_RATIO_TARGET:g}x: {_yes(bench.met)}). "
                     f"efficiency = (sum of one-by-one seconds / {bench.slots}) / wall, wall = Tuner.fit start "
                     f"to end; trial s = inside each run, around the trial function; our command took "
                     f"{fmt(bench.command_wall)} s, first trial from its start.{_ceiling_text(bench)}"
                     f"{_first_floor_text(bench)}")
    return table


def _ceiling_text(bench: Any) -> str:
    """The short trials' efficiency ceiling (:attr:`~qmoe.sweeps.bench.sweep_efficiency.ShortBench.ceiling`)."""
    from qmoe.sweeps.bench.sweep_efficiency import IMPORT_RUNS

    if getattr(bench, "ceiling", None) is None:
        return ""
    verdict = f": the target {SHORT_EFFICIENCY_TARGET:g} is ruled out here" if bench.ruled_out else ""
    return (f" Ceiling: every worker imports Ray Tune and the trial's code (torch, scikit-learn, the models) "
            f"after the run starts, at least {fmt(bench.worker_imports)} s (the least of {IMPORT_RUNS} fresh "
            f"processes), before its first trial; wall >= that + sum / {bench.slots}, so efficiency <= "
            f"{fmt(bench.ceiling)}{verdict}.")


def _first_floor_text(bench: Any) -> str:
    """The first trial's floor (:attr:`~qmoe.sweeps.bench.sweep_efficiency.ShortBench.first_trial_floor`)."""
    from qmoe.sweeps.bench.sweep_efficiency import RAY_START_RUNS

    floor = getattr(bench, "first_trial_floor", None)
    if floor is None:
        return ""
    verdict = (f": the target {FIRST_TRIAL_TARGET_S:g} s is ruled out here" if bench.first_trial_ruled_out else "")
    return (f" Floor: Tune asks for a worker only once Ray is up, {fmt(bench.ray_start)} s after a fresh process "
            f"starts (the least of {RAY_START_RUNS}), and the worker's imports follow, so the first trial runs "
            f">= {fmt(floor)} s after the command started{verdict}.")


def sized_table(bench: Any) -> Table:
    """Table 1 at ESC-50 size and the paper grid extrapolated (:class:`~qmoe.sweeps.bench.sweep_efficiency.SizedBench`)."""
    from qmoe.sweeps.bench.sweep_efficiency import GRID_SLICES, SIZED_FOLD

    ours, n = bench.ours, len(bench.ours.trials)
    table = Table(title=f"Paper grid slice: Table 1's {n} configurations, fold {SIZED_FOLD} of "
                        f"{bench.table_name} (2000 x 1536, 50 classes), one `qmoe sweep run` on {bench.slots} slots")
    ref_col = "sum one by one s" if bench.serial else "sum in sweep s (reference)"
    for col in ("trials", ref_col, "sum in sweep s", "mean in sweep vs one by one", "sweep wall s",
                "efficiency", "vs trials in sweep", f"full grid ({GRID_SLICES} slices) h", f"x {SEEDS} seeds h"):
        table.add_column(col)
    slow = f"{ours.mean_seconds / bench.reference.mean_seconds:.2f}x" if bench.serial else "-"
    table.add_row(str(n), fmt(bench.reference.trial_seconds), fmt(ours.trial_seconds), slow,
                  fmt(ours.wall_seconds or 0.0), fmt(bench.efficiency), fmt(bench.own_efficiency),
                  fmt(bench.grid_hours), fmt(bench.grid_seeds_hours))
    how = ("the same trials run one by one in one process" if bench.serial else
           "the trials' own seconds inside the sweep (not run one by one; this leaves out their "
           "slow-down side by side, so it reads high)")
    table.caption = (f"efficiency = (sum of {how} / {bench.slots}) / sweep wall (Tuner.fit start to end), target "
                     f">= {SIZED_EFFICIENCY_TARGET:g}: {_yes(bench.efficiency_met)}. "
                     "vs trials in sweep = the same over the trials' seconds inside the sweep: what start-up, gaps "
                     "and the tail cost; efficiency is that over the trials' slow-down inside the sweep (two side by "
                     "side share the caches and memory; Ray's processes and the driver take CPU beside them). "
                     f"Full grid = {n} configurations "
                     f"x 3 datasets x 5 folds = {n * GRID_SLICES} trials at ESC-50 size = sweep wall x {GRID_SLICES}, "
                     f"target <= {GRID_HOURS_TARGET:g} h: {_yes(bench.grid_met)} (on {bench.slots} slots); with {SEEDS} "
                     f"training seeds, each its own trial, {SEEDS} times that. "
                     f"The command took {fmt(bench.command_wall)} s.")
    return table


def driver_memory_table(prof: dict[str, Any]) -> Table:
    """Driver RSS of a long sweep (:func:`~qmoe.sweeps.bench.driver_memory.driver_memory_profile`)."""
    table = Table(title=f"Driver memory over a {prof['trials']}-trial sweep (fast stand-in trials)")
    for col in ("RSS after 5 trials MB", "RSS at the end MB", "growth", "seconds"):
        table.add_column(col)
    table.add_row(fmt(prof["rss_after_5_mb"]), fmt(prof["rss_end_mb"]), f"{prof['growth']:+.1%}",
                  fmt(prof["seconds"]))
    return table


def extraction_table(rows: Sequence[Any]) -> Table:
    """Clips per second of feature extraction on Ray (:func:`~qmoe.sweeps.bench.extraction_speed.extraction_throughput`)."""
    table = Table(title="Feature extraction on Ray (5 s clips at 44.1 kHz; timm with random weights)")
    table.add_column("backbone", no_wrap=True)
    for col in ("clips", "workers", "seconds", "clips/s", "start-up s", "steady clips/s"):
        table.add_column(col)
    for r in rows:
        table.add_row(r.backbone, str(r.clips), str(r.workers), fmt(r.seconds), fmt(r.clips_per_s),
                      fmt(r.startup_s), fmt(r.steady_clips_per_s))
    return table
