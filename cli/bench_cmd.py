"""``qmoe bench``: the side-by-side benchmark tables."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from cli.main import app
from cli.render import fmt, stderr, stdout
from qmoe.bench import bench_epochs, bench_latency


@app.command()
def bench(
    runs: Annotated[int, typer.Option("--runs", min=200, help="Timed batch-1 runs per form.")] = 300,
    epochs: Annotated[int, typer.Option("--epochs", min=1, help="Timed training epochs per quantizer.")] = 2,
) -> None:
    """Latency of every deployed form vs torch fp32, and QAT epoch time vs fp32."""
    stderr.print("timing deployed forms (1536-640-320-50 MLP, batch 1, one thread) ...")
    lat = Table(title="Deployed forms: batch-1 latency (one thread) and batch-256 throughput")
    for col in ("quantizer", "form", "p50 µs", "p99 µs", "speed-up vs fp32", "samples/s @256",
                "size KB", "compression"):
        lat.add_column(col)
    for r in bench_latency(runs=runs):
        lat.add_row(r.quantizer, r.form, fmt(r.p50_us), fmt(r.p99_us), f"{r.speedup:.2f}x",
                    fmt(r.throughput), fmt(r.size_kb), f"{r.compression:.1f}x")
    stdout.print(lat)
    stderr.print("timing training epochs (2000 x 1536, 50 classes, batch 64, one thread) ...")
    ep = Table(title="Training: seconds per epoch (one thread)")
    for col in ("quantizer", "s/epoch", "vs fp32"):
        ep.add_column(col)
    for r in bench_epochs(epochs=epochs):
        ep.add_row(r.quantizer, fmt(r.seconds_per_epoch), f"{r.ratio:.2f}x")
    stdout.print(ep)
