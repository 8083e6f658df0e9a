"""``qmoe bench``: the side-by-side benchmark tables (one run, one thread).

Each section calls one library benchmark and prints its table (:mod:`qmoe.cli.bench_tables`)
as soon as it is measured; what each figure means is said where it is measured
(:mod:`qmoe.bench`, :mod:`qmoe.bench_trial`, :mod:`qmoe.sweeps.bench`).
"""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer
from rich.console import Console

from qmoe.bench_targets import EPOCH_ROUNDS
from qmoe.cli import bench_tables as bt
from qmoe.cli.console import stderr, stdout

#: The widest table has 12 columns: print every table this wide even into a pipe (80 columns),
#: so that no model name or figure is cut short.
WIDE = 172
#: How the sweep benchmarks start ``qmoe`` (a fresh process each, as a user would).
QMOE = (sys.executable, "-m", "qmoe.cli.main")


def bench(
    runs: Annotated[int, typer.Option("--runs", min=200, help="Timed batch-1 runs per form.")] = 300,
    rounds: Annotated[int, typer.Option("--rounds", min=1, help="Timed training epochs per quantizer, each between two fp32 epochs.")] = EPOCH_ROUNDS,
    trials: Annotated[bool, typer.Option("--trials/--no-trials", help="Also time real trials on an ESC-50-sized table.")] = True,
    sweep: Annotated[bool, typer.Option("--sweep/--no-sweep", help="Also time sweeps on Ray: 8 short trials vs Ray Tune defaults, Table 1 at ESC-50 size.")] = True,
    extraction: Annotated[bool, typer.Option("--extraction/--no-extraction", help="Also time feature extraction on Ray.")] = True,
) -> None:
    """Latency of every deployed form vs torch fp32 with memory floors, QAT epoch time vs fp32,
    trials at ESC-50 size, memory, and sweep efficiency (Ray Tune defaults side by side)."""
    from qmoe.bench import bench_epochs, bench_latency, bench_mixture, check_targets, import_memory, measure_bandwidth

    out = Console(width=max(stdout.width, WIDE), highlight=False, soft_wrap=True)
    stderr.print("measuring memory bandwidth (one core) ...")
    bw = measure_bandwidth()
    out.print(bt.bandwidth_table(bw))
    stderr.print("timing deployed forms (1536-640-320-50 MLP, batch 1 and 256, one thread) ...")
    rows = bench_latency(runs=runs, bandwidth=bw) + bench_mixture(runs=runs)
    out.print(bt.latency_table(rows))
    parts: dict[str, Any] = {"deployed": check_targets(rows)}
    out.print(bt.targets_table(parts["deployed"]))
    stderr.print("timing training epochs (2000 x 1536, 50 classes, batch 64, one thread) ...")
    parts["epochs"] = bench_epochs(rounds=rounds)
    out.print(bt.epochs_table(parts["epochs"], rounds))
    if trials:
        import tempfile

        from qmoe.bench_trial import bench_trials

        stderr.print("running one real trial per model on an ESC-50-sized table (one thread, ~3 min) ...")
        from qmoe.bench_seeds import RateProbe, seed_floors, stacked_step
        from qmoe.bench_targets import SEEDS
        from qmoe.bench_trial import fresh_trial_memory
        from qmoe.data.sized import SizedConfig

        with tempfile.TemporaryDirectory(prefix="qmoe-bench-") as tmp:
            probe = RateProbe(bw)  # the seed floor's rates: the best of probes among the trials
            timed = bench_trials(tmp, between=probe.sample)
            out.print(bt.trials_table(timed))
            sized = SizedConfig()
            stderr.print(f"timing one training step of {SEEDS} stacked MLPs against one ...")
            stacked = stacked_step(batch=timed[0].batch)
            floors = seed_floors(timed, probe, sized.dim, sized.n_classes)
            out.print(bt.seeds_table(floors, stacked))
            parts.update(trials=timed, stacked=stacked, floors=floors)
            stderr.print("a single model's and a mixture's trial alone in fresh processes (memory) ...")
            fresh = [fresh_trial_memory(tmp, m) for m in ("q4", "bitnet,q4,q8")]
            parts["memory"] = fresh
        out.print(bt.memory_table(import_memory(), [r.peak_rss_mb for r in timed], fresh))
    if sweep:
        from qmoe.sweeps.bench.driver_memory import driver_memory_profile
        from qmoe.sweeps.bench.sweep_efficiency import sized_bench, sweep_bench

        stderr.print("8 short trials: one by one, as our sweep, on Ray Tune's defaults (fresh processes, ~2-4 min) ...")
        parts["short"] = sweep_bench(QMOE)
        out.print(bt.short_table(parts["short"]))
        stderr.print("Table 1's 15 configurations on an ESC-50-sized fold: a sweep, then one by one (~8 min) ...")
        parts["sized"] = sized_bench(QMOE)
        out.print(bt.sized_table(parts["sized"]))
        stderr.print("profiling the driver's memory over a 40-trial sweep ...")
        out.print(bt.driver_memory_table(driver_memory_profile(40)))
    if extraction:
        from qmoe.sweeps.bench.extraction_speed import extraction_throughput

        stderr.print("timing feature extraction on Ray ...")
        out.print(bt.extraction_table(extraction_throughput()))
    from qmoe.bench_summary import summary_rows

    out.print(bt.summary_table(summary_rows(**parts)))
