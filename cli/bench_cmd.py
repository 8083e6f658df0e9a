"""``qmoe bench``: the side-by-side benchmark tables (one run, one thread)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from cli.main import app
from cli.render import fmt, stderr, stdout
from qmoe.bench import (bench_epochs, bench_latency, bench_mixture, check_targets,
                        measure_bandwidth)

#: The latency table has 12 columns: print it this wide even into a pipe (80 columns).
WIDE = 172


@app.command()
def bench(
    runs: Annotated[int, typer.Option("--runs", min=200, help="Timed batch-1 runs per form.")] = 300,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Timed training epochs per quantizer.")] = 2,
    sweep: Annotated[bool, typer.Option("--sweep/--no-sweep", help="Also time an 8-trial sweep on Ray.")] = True,
    extraction: Annotated[bool, typer.Option("--extraction/--no-extraction", help="Also time feature extraction on Ray.")] = True,
) -> None:
    """Latency of every deployed form vs torch fp32 with memory floors, and QAT epoch time vs fp32."""
    stderr.print("measuring memory bandwidth (one core) ...")
    bw = measure_bandwidth()
    mem = Table(title="Read bandwidth of one core (GB/s), for the floors")
    for col in (f"L2 ({bw.l2_bytes >> 10} KiB)", f"L3 ({bw.l3_bytes >> 20} MiB)", "DRAM"):
        mem.add_column(col)
    mem.add_row(fmt(bw.l2_gbs), fmt(bw.l3_gbs), fmt(bw.dram_gbs))
    stdout.print(mem)

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
    wide = Console(width=max(stdout.width, WIDE), highlight=False, soft_wrap=True)
    wide.print(lat)

    targets = Table(title="Issue 8 targets at batch 1 (vs torch fp32 eager, measured above)")
    for col in ("target", "model", "measured", "met"):
        targets.add_column(col)
    for t in check_targets(rows):
        targets.add_row(t.target, t.quantizer, t.measured, "yes" if t.met else "NO")
    stdout.print(targets)

    stderr.print("timing training epochs (2000 x 1536, 50 classes, batch 64, one thread) ...")
    ep = Table(title="Training: seconds per epoch (one thread)")
    for col in ("quantizer", "s/epoch", "vs fp32"):
        ep.add_column(col)
    for r in bench_epochs(epochs=epochs):
        ep.add_row(r.quantizer, fmt(r.seconds_per_epoch), f"{r.ratio:.2f}x")
    stdout.print(ep)

    if sweep:
        from cli.bench_sweep import sweep_bench

        stderr.print("running an 8-trial sweep in a fresh process ...")
        stdout.print(sweep_bench())
        from cli.bench_sweep import memory_bench

        stderr.print("profiling the driver's memory over a 40-trial sweep ...")
        stdout.print(memory_bench())
    if extraction:
        from cli.bench_sweep import extraction_bench

        stderr.print("timing feature extraction on Ray ...")
        stdout.print(extraction_bench())
