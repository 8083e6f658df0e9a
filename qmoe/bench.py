"""Side-by-side benchmarks of the science core (``qmoe bench``; DESIGN §12 sizes).

Every figure of one report is measured in the same run, and ratios are taken against the
torch fp32 eager expert measured in that run (at the start and again at the end, so drift on
a shared machine shows).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from qmoe.measure import measure_latency, measure_throughput, torch_threads
from qmoe.models import Expert
from qmoe.quant import deploy, deploy_form, list_quantizers, size_report
from qmoe.spec import TrainConfig
from qmoe.train import fit

PAPER_DIMS = (1536, (640, 320), 50)  # EfficientNet-B3 embedding -> [640, 320] -> ESC-50


@dataclass(frozen=True)
class LatencyRow:
    """One deployed form, batch 1 and batch 256, one thread."""

    quantizer: str
    form: str
    p50_us: float
    p99_us: float
    speedup: float  # fp32 eager p50 / this p50
    throughput: float  # samples/s at batch 256
    size_kb: float
    compression: float


@dataclass(frozen=True)
class EpochRow:
    """Training seconds per epoch (one thread) of an expert with this quantizer."""

    quantizer: str
    seconds_per_epoch: float
    ratio: float  # / the fp32 epoch


def _expert(q: str, seed: int = 0) -> Expert:
    torch.manual_seed(seed)
    dim, hidden, classes = PAPER_DIMS
    return Expert(dim, classes, hidden, q, dropout=0.0).eval()


def bench_latency(quantizers: list[str] | None = None, runs: int = 300) -> list[LatencyRow]:
    """Batch-1 p50/p99 latency and batch-256 throughput of every deployed form."""
    names = quantizers or list_quantizers()
    x = torch.randn(256, PAPER_DIMS[0])
    fp32 = _expert("fp32")

    def eager(inp: torch.Tensor) -> torch.Tensor:
        return fp32(inp)

    first = measure_latency(eager, x, runs=runs)
    rows = []
    measured: list[tuple[str, str, object, float, float]] = []
    for q in names:
        model = _expert(q)
        deployed = deploy(model)
        lat = measure_latency(deployed, x, runs=runs)
        thr = measure_throughput(deployed, x)
        size = size_report(model)
        measured.append((q, deploy_form(deployed), lat, thr, size))
    last = measure_latency(eager, x, runs=runs)
    base = min(first.p50_us, last.p50_us)
    rows.append(LatencyRow("fp32 eager (start)", "torch-fp32", first.p50_us, first.p99_us,
                           base / first.p50_us, measure_throughput(eager, x),
                           size_report(fp32).size_kb, 1.0))
    for q, form, lat, thr, size in measured:
        rows.append(LatencyRow(q, form, lat.p50_us, lat.p99_us, base / lat.p50_us, thr,
                               size.size_kb, size.compression))
    rows.append(LatencyRow("fp32 eager (end)", "torch-fp32", last.p50_us, last.p99_us,
                           base / last.p50_us, float("nan"), size_report(fp32).size_kb, 1.0))
    return rows


def bench_epochs(quantizers: list[str] | None = None, n: int = 2000, epochs: int = 2
                 ) -> list[EpochRow]:
    """Seconds per training epoch on an ESC-50-sized table (n x 1536, 50 classes, batch 64)."""
    names = quantizers or list_quantizers()
    dim, hidden, classes = PAPER_DIMS
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=gen)
    y = np.asarray(torch.randint(0, classes, (n,), generator=gen))
    cfg = TrainConfig.single().replace(max_epochs=epochs, patience=epochs)
    per_epoch: dict[str, float] = {}
    with torch_threads(1):
        for q in ["fp32"] + [q for q in names if q != "fp32"]:
            model = _expert(q)
            start = time.perf_counter()
            fit(model, x, y, x[:200], y[:200], cfg, n_classes=classes, seed=0)
            per_epoch[q] = (time.perf_counter() - start) / epochs
    return [EpochRow(q, s, s / per_epoch["fp32"]) for q, s in per_epoch.items()]
