"""``qmoe bench``: the side-by-side benchmark tables (one run, one thread)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.main import app
from cli.render import fmt, stderr, stdout

#: The widest table has 12 columns: print every table this wide even into a pipe (80 columns),
#: so that no model name or figure is cut short.
WIDE = 172
QAT_EPOCH_TARGET = 1.5  # issue 8: a QAT epoch at most 1.5x the fp32 epoch
RSS_TARGET_MB = 600.0  # issue 8: peak RSS of one trial


@app.command()
def bench(
    runs: Annotated[int, typer.Option("--runs", min=200, help="Timed batch-1 runs per form.")] = 300,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Timed training epochs per quantizer (round-robin).")] = 3,
    trials: Annotated[bool, typer.Option("--trials/--no-trials", help="Also time real trials on an ESC-50-sized table.")] = True,
    sweep: Annotated[bool, typer.Option("--sweep/--no-sweep", help="Also time sweeps on Ray: 8 short trials vs Ray Tune defaults, Table 1 at ESC-50 size.")] = True,
    extraction: Annotated[bool, typer.Option("--extraction/--no-extraction", help="Also time feature extraction on Ray.")] = True,
) -> None:
    """Latency of every deployed form vs torch fp32 with memory floors, QAT epoch time vs fp32,
    trials at ESC-50 size, memory, and sweep efficiency (Ray Tune defaults side by side)."""
    from qmoe.bench import bench_epochs, bench_latency, bench_mixture, check_targets, measure_bandwidth
    from qmoe.quant import get_quantizer

    out = Console(width=max(stdout.width, WIDE), highlight=False, soft_wrap=True)

    stderr.print("measuring memory bandwidth (one core) ...")
    bw = measure_bandwidth()
    mem = Table(title="Read bandwidth of one core (GB/s), for the floors")
    for col in (f"L2 ({bw.l2_bytes >> 10} KiB)", f"L3 ({bw.l3_bytes >> 20} MiB)", "DRAM"):
        mem.add_column(col)
    mem.add_row(fmt(bw.l2_gbs), fmt(bw.l3_gbs), fmt(bw.dram_gbs))
    out.print(mem)

    stderr.print("timing deployed forms (1536-640-320-50 MLP, batch 1 and 256, one thread) ...")
    rows = bench_latency(runs=runs, bandwidth=bw) + bench_mixture(runs=runs)
    lat = Table(title="Deployed forms: batch-1 latency and batch-256 throughput (one thread); "
                      "floor = bytes read per inference / bandwidth")
    lat.add_column("model", overflow="fold")
    lat.add_column("form", overflow="fold", min_width=24)
    for col in ("p50 µs", "p99 µs", "speed-up", "samples/s @256", "vs fp32", "size KB", "compr.",
                "read KB", "floor µs (where)", "floor µs DRAM"):
        lat.add_column(col)
    for r in rows:
        floor = "-" if r.floor_level == "-" else f"{fmt(r.floor_us)} ({r.floor_level})"
        lat.add_row(r.quantizer, r.form, fmt(r.p50_us), fmt(r.p99_us), f"{r.speedup:.2f}x",
                    fmt(r.throughput), f"{r.throughput_ratio:.2f}x", fmt(r.size_kb),
                    f"{r.compression:.1f}x", fmt(r.read_kb), floor, fmt(r.floor_dram_us))
    out.print(lat)

    targets = Table(title="Issue 8 targets at batch 1 (vs torch fp32 eager, measured above)")
    for col in ("target", "model", "measured", "met"):
        targets.add_column(col)
    for t in check_targets(rows):
        targets.add_row(t.target, t.quantizer, t.measured, "yes" if t.met else "NO")
    out.print(targets)

    stderr.print("timing training epochs (2000 x 1536, 50 classes, batch 64, one thread) ...")
    ep = Table(title=f"Training: seconds per epoch (one thread, CPU time, median of {rounds} round-robin rounds)")
    for col in ("quantizer", "s/epoch", "vs fp32", f"QAT <= {QAT_EPOCH_TARGET}x fp32"):
        ep.add_column(col)
    for r in bench_epochs(rounds=rounds):
        qat = r.quantizer != "fp32" and not get_quantizer(r.quantizer).post_training
        met = ("yes" if r.ratio <= QAT_EPOCH_TARGET else "NO") if qat else "-"
        ep.add_row(r.quantizer, fmt(r.seconds_per_epoch), f"{r.ratio:.2f}x", met)
    out.print(ep)

    if trials:
        stderr.print("running one real trial per model on an ESC-50-sized table (one thread, ~3 min) ...")
        table, rss = trials_table()
        out.print(table)
        out.print(memory_table(rss))
    if sweep:
        from cli.bench_sweep import sized_bench, sweep_bench

        stderr.print("8 short trials: one by one, as our sweep, on Ray Tune's defaults (fresh processes, ~2-4 min) ...")
        out.print(sweep_bench())
        stderr.print("Table 1's 15 configurations on an ESC-50-sized fold: a sweep, then one by one (~8 min) ...")
        out.print(sized_bench())
        from cli.bench_sweep import memory_bench

        stderr.print("profiling the driver's memory over a 40-trial sweep ...")
        out.print(memory_bench())
    if extraction:
        from cli.bench_sweep import extraction_bench

        stderr.print("timing feature extraction on Ray ...")
        out.print(extraction_bench())


def trials_table() -> tuple[Table, list[float]]:
    """One real trial per model on the ESC-50-sized table (:mod:`qmoe.bench_trial`), and the
    trials' peak RSS in MB."""
    import tempfile

    from qmoe.bench_trial import SINGLE_TRIAL_TARGET_S, bench_trials

    with tempfile.TemporaryDirectory(prefix="qmoe-bench-") as tmp:
        rows = bench_trials(tmp)
    table = Table(title="Real trials on an ESC-50-sized table (2,000 x 1,536, 50 classes, fold 1; "
                        "one thread; energy measured)")
    for col in ("model", "trial s", "train s", "epochs", "s/epoch", "rest s", "test macro-F1",
                "peak RSS MB", f"single <= {SINGLE_TRIAL_TARGET_S:.0f} s"):
        table.add_column(col)
    for r in rows:
        met = "-" if r.meets_target is None else ("yes" if r.meets_target else "NO")
        table.add_row(r.model, fmt(r.seconds), fmt(r.train_seconds), str(r.epochs),
                      fmt(r.seconds_per_epoch), fmt(r.measure_seconds), f"{r.f1_macro:.3f}",
                      fmt(r.peak_rss_mb), met)
    table.caption = ("rest = split, deployment, latency, throughput and energy; the first trial "
                     "also loads the numba kernels. The table is synthetic: timings, not science.")
    return table, [r.peak_rss_mb for r in rows]


def memory_table(trial_rss: list[float]) -> Table:
    """Resident memory: fresh processes importing what a trial needs, and the trials' peaks."""
    from qmoe.bench import import_memory

    table = Table(title=f"Memory (MB): what imports alone hold, and a trial's peak (target <= {RSS_TARGET_MB:.0f})")
    for col in ("process", "RSS", "private (anon)", "shared libraries (file)"):
        table.add_column(col)
    for r in import_memory():
        table.add_row(f"python -c 'import {', '.join(r.modules) or '(nothing)'}'", fmt(r.rss_mb),
                      fmt(r.anon_mb), fmt(r.file_mb))
    if trial_rss:
        met = "yes" if max(trial_rss) <= RSS_TARGET_MB else "NO"
        table.add_row(f"one trial, peak (min-max over the trials above; target met: {met})",
                      f"{fmt(min(trial_rss))}-{fmt(max(trial_rss))}", "", "")
    table.caption = ("file pages are shared by every worker on a node; torch's own import is most "
                     "of a trial's floor")
    return table
