"""Side-by-side benchmarks of the science core (``qmoe bench``; DESIGN §12 sizes, issues 8, 14).

Every figure of one report is measured in the same run, on one thread: the memory bandwidth
(for the floors), torch fp32 eager (at the start and again at the end, so drift on a shared
machine shows; ratios use the faster of the two, which makes them conservative), every
deployed form of the 1536-640-320-50 MLP, torch's own dynamic int8 for comparison, one
deployed mixture, and the training epochs.

Three floors bound a deployed form's batch-1 time from below:

- *memory*: reading its weights, scales and biases once (:func:`~qmoe.quant.size.bytes_read`)
  at the measured bandwidth of the smallest cache level that holds them (where they sit when
  inferences follow each other, as here), and from DRAM (a cold start);
- *compute*: the compiled kernel alone, per sample, measured at batch 256 through the numpy
  path, so no per-call cost is in it (rows ``<form> (kernel alone)``);
- *latency*: one call of a deployed one-weight model, the fixed cost of crossing from
  Python (and torch) into the compiled code (rows ``call alone``).

The 1-bit forms' weights fit in L2: their memory floor is far below the other two.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qmoe.bench_targets import SPEEDUP_TARGETS, THROUGHPUT_TARGET, against
from qmoe.latency import LatencyStats, measure_latency
from qmoe.measure import measure_throughput, torch_threads
from qmoe.models import Expert, MixtureOfExperts
from qmoe.quant import QuantLinear, bytes_read, deploy, deploy_form, list_quantizers, size_report
from qmoe.spec import TrainConfig
from qmoe.train import fit

PAPER_DIMS = (1536, (640, 320), 50)  # EfficientNet-B3 embedding -> [640, 320] -> ESC-50
MIXTURE = ("bitnet", "q4", "q8")  # BitNet-Q4/8-QMoE, experts [256, 128, 64], M = 10 router passes
FP32_START, FP32_END = "fp32 eager (start)", "fp32 eager (end)"
TORCH_INT8 = "ptq8 (torch dynamic int8)"

KERNEL, CALL = " (kernel alone)", "call alone"

@dataclass(frozen=True)
class Bandwidth:
    """Read bandwidth of one core in GB/s (1e9 bytes/s) by where the data sits."""

    l2_gbs: float
    l3_gbs: float
    dram_gbs: float
    l2_bytes: int  # cache sizes the levels were probed with (per core L2, shared L3)
    l3_bytes: int

    def level(self, n_bytes: int) -> tuple[str, float]:
        """The smallest level holding ``n_bytes`` and its bandwidth."""
        if n_bytes <= self.l2_bytes:
            return "L2", self.l2_gbs
        if n_bytes <= self.l3_bytes:
            return "L3", self.l3_gbs
        return "DRAM", self.dram_gbs


@dataclass(frozen=True)
class LatencyRow:
    """One deployed form, batch 1 and batch 256, one thread."""

    quantizer: str
    form: str
    p50_us: float
    p99_us: float
    speedup: float  # fp32 eager p50 / this p50
    throughput: float  # samples/s at batch 256
    throughput_ratio: float  # / fp32 eager samples/s
    size_kb: float
    compression: float
    read_kb: float  # weights + scales + biases one inference reads (what the kernel reads)
    floor_level: str  # where those bytes sit in a warm loop: L2, L3 or DRAM
    floor_us: float  # read_kb at that level's bandwidth
    floor_dram_us: float  # read_kb at DRAM bandwidth (cold weights)


@dataclass(frozen=True)
class TargetRow:
    """One of issue 8's targets for one quantizer: measured value against the goal."""

    target: str
    quantizer: str
    measured: str
    met: bool | None  # None: the measurement could not decide (the figure says why)


@dataclass(frozen=True)
class EpochRow:
    """Training seconds per epoch (one thread) of an expert with this quantizer."""

    quantizer: str
    seconds_per_epoch: float
    ratio: float  # / the fp32 epoch: the median of the rounds' own ratios
    ratio_low: float = float("nan")  # the lowest and highest of the rounds' own ratios (this
    ratio_high: float = float("nan")  # round's epoch / the same round's fp32 epoch): the noise
    ratios: tuple[float, ...] = ()  # every round's own ratio, in round order (the QAT target's sign test)

    @property
    def spread(self) -> str:
        """``"1.17-1.24"``: the rounds' ratios, or "" when there were none."""
        return "" if math.isnan(self.ratio_low) else f"{self.ratio_low:.2f}-{self.ratio_high:.2f}"

    @property
    def quartiles(self) -> str:
        """``"1.18-1.21"``: the lower and upper quartile of the rounds' ratios (numpy's linear
        interpolation), the spread one outlying round does not stretch; "" without rounds."""
        if not self.ratios:
            return ""
        low, high = np.percentile(self.ratios, [25, 75])
        return f"{low:.2f}-{high:.2f}"


def cache_sizes() -> tuple[int, int]:
    """(per-core L2, L3) in bytes from sysfs; 1 MB and 32 MB where it cannot be read."""
    sizes = {2: 1 << 20, 3: 32 << 20}
    for index in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*"):
        try:
            level = int((index / "level").read_text())
            text = (index / "size").read_text().strip().upper()
        except (OSError, ValueError):
            continue
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        if level in sizes and text.rstrip("KMG").isdigit():
            sizes[level] = int(text.rstrip("KMG")) * mult
    return sizes[2], sizes[3]


def measure_bandwidth(min_seconds: float = 0.15) -> Bandwidth:
    """Read bandwidth of one core, by summing uint64 buffers of half of L2, half of L3 and
    four times L3 (at least 64 MB): the best of repeated passes over each."""
    from qmoe.native.kernels import load

    read_sum = load().drivers.read_sum
    l2, l3 = cache_sizes()
    rates = []
    for n_bytes in (l2 // 2, l3 // 2, max(4 * l3, 64 << 20)):
        buf = np.ones(n_bytes // 8, np.uint64)
        read_sum(buf)  # compile/load, and fault the pages in
        best, start = math.inf, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            read_sum(buf)
            best = min(best, time.perf_counter() - t0)
        rates.append(buf.nbytes / best / 1e9)
        del buf
    return Bandwidth(l2_gbs=rates[0], l3_gbs=rates[1], dram_gbs=rates[2], l2_bytes=l2, l3_bytes=l3)


def _expert(q: str, seed: int = 0) -> Expert:
    torch.manual_seed(seed)
    dim, hidden, classes = PAPER_DIMS
    return Expert(dim, classes, hidden, q, dropout=0.0).eval()


def torch_dynamic_int8(model: nn.Module) -> nn.Module:
    """``model`` with every ptq8 QuantLinear as PyTorch's dynamic int8 Linear (comparison)."""
    out = copy.deepcopy(model).eval()
    for module in list(out.modules()):
        for name, child in module.named_children():
            if isinstance(child, QuantLinear):
                setattr(module, name, child.config.torch_dynamic_linear(child))
    return out.requires_grad_(False)


def numpy_latency(fn: Callable[[np.ndarray], object], rows: np.ndarray, runs: int = 300,
                  warmup: int = 20) -> LatencyStats:
    """:func:`~qmoe.latency.measure_latency` for a function of numpy rows (no torch per call)."""
    one = [np.ascontiguousarray(rows[i: i + 1]) for i in range(len(rows))]  # (1, D) each
    for i in range(warmup):
        fn(one[i % len(one)])
    times = np.empty(runs)
    for i in range(runs):
        x = one[i % len(one)]
        t0 = time.perf_counter_ns()
        fn(x)
        times[i] = (time.perf_counter_ns() - t0) / 1e3
    return LatencyStats(mean_us=float(times.mean()), std_us=float(times.std(ddof=1)),
                        p50_us=float(np.percentile(times, 50)), p99_us=float(np.percentile(times, 99)), runs=runs)


def kernel_seconds(native: Callable[[np.ndarray], object], x: np.ndarray, min_seconds: float = 0.2) -> float:
    """Seconds per sample of a native model's compiled work: the best of repeated batch calls
    (the call's fixed cost spread over the batch), one thread."""
    native(x)
    best, start = math.inf, time.perf_counter()
    while time.perf_counter() - start < min_seconds:
        t0 = time.perf_counter()
        native(x)
        best = min(best, time.perf_counter() - t0)
    return best / len(x)


def _row(label: str, model: nn.Module, deployed: nn.Module, lat: LatencyStats, thr: float,
         base: tuple[float, float], bw: Bandwidth) -> LatencyRow:
    size = size_report(model)
    n_read = bytes_read(deployed)
    level, gbs = bw.level(n_read)
    return LatencyRow(quantizer=label, form=deploy_form(deployed), p50_us=lat.p50_us, p99_us=lat.p99_us,
                      speedup=base[0] / lat.p50_us, throughput=thr, throughput_ratio=thr / base[1],
                      size_kb=size.size_kb, compression=size.compression, read_kb=n_read / 1000,
                      floor_level=level, floor_us=n_read / gbs / 1e3, floor_dram_us=n_read / bw.dram_gbs / 1e3)


def bench_latency(quantizers: list[str] | None = None, runs: int = 300,
                  bandwidth: Bandwidth | None = None) -> list[LatencyRow]:
    """Batch-1 p50/p99 latency and batch-256 throughput of every deployed form with its memory
    floor, then the compute floor of each native form (kernel alone) and the latency floor
    (one call of a one-weight model, through torch and through numpy)."""
    with torch_threads(1):
        return _bench_latency(quantizers or list_quantizers(), runs, bandwidth or measure_bandwidth())


def _bench_latency(names: list[str], runs: int, bw: Bandwidth) -> list[LatencyRow]:
    x = torch.randn(256, PAPER_DIMS[0])
    fp32 = _expert("fp32")
    eager = deploy(fp32, reference=True)  # torch nn.Linear layers: the baseline of every ratio
    measured: list[tuple[str, nn.Module, nn.Module]] = [(FP32_START, fp32, eager)]
    for q in names:
        model = _expert(q)
        measured.append((q, model, deploy(model)))
        if q == "ptq8":
            measured.append((TORCH_INT8, model, torch_dynamic_int8(model)))
    measured.append((FP32_END, fp32, eager))
    stats = [(label, model, deployed, measure_latency(deployed, x, runs=runs, precision=None),
              measure_throughput(deployed, x))
             for label, model, deployed in measured]
    base = (min(stats[0][3].p50_us, stats[-1][3].p50_us), max(stats[0][4], stats[-1][4]))
    rows = [_row(label, model, deployed, lat, thr, base, bw) for label, model, deployed, lat, thr in stats]
    xn = x.numpy()
    for label, model, deployed in measured[1:-1]:
        native = getattr(deployed._modules.get("net"), "native", None)
        if native is not None:
            seconds = kernel_seconds(native, xn)
            lat = LatencyStats(mean_us=seconds * 1e6, std_us=0.0, p50_us=seconds * 1e6, p99_us=seconds * 1e6, runs=0)
            rows.append(_row(label + KERNEL, model, deployed, lat, 1 / seconds, base, bw))
    torch.manual_seed(0)
    tiny = QuantLinear(1, 1, "q1").eval()
    one = deploy(tiny)
    rows.append(_row(CALL + " (torch)", tiny, one, measure_latency(one, x[:, :1], runs=runs, precision=None),
                     measure_throughput(one, x[:, :1]), base, bw))
    rows.append(_row(CALL + " (numpy)", tiny, one, numpy_latency(one.mlp, xn[:, :1], runs=runs),
                     1 / kernel_seconds(one.mlp, xn[:, :1]), base, bw))
    return rows


def bench_mixture(runs: int = 300) -> list[LatencyRow]:
    """Batch-1 latency of the BitNet-Q4/8 mixture: every expert runs (curiosity needs all of
    their outputs) plus the M = 10 Monte-Carlo router passes: all-torch, deployed (one native
    call through torch) and the same native call from numpy (a torch-free runtime)."""
    with torch_threads(1):
        cfg = TrainConfig.mixture()
        x = torch.randn(256, PAPER_DIMS[0])
        torch.manual_seed(0)
        moe = MixtureOfExperts(PAPER_DIMS[0], PAPER_DIMS[2], MIXTURE, hidden=cfg.hidden, dropout=cfg.dropout,
                               mc_samples=cfg.mc_samples, alpha=0.2).eval()
        reference = deploy(moe, reference=True)  # the same mixture with float fake-quant experts
        deployed = deploy(moe, seed=0)
        label = "moe " + ",".join(MIXTURE)
        stats = [(label + " (torch)", reference, measure_latency(reference, x, runs=runs, precision=None),
                  measure_throughput(reference, x)),
                 (label, deployed, measure_latency(deployed, x, runs=runs, precision=None),
                  measure_throughput(deployed, x)),
                 (label + " (native, numpy)", deployed, numpy_latency(deployed.native, x.numpy(), runs=runs),
                  1 / kernel_seconds(deployed.native, x.numpy()))]
    size = size_report(moe)
    base = stats[0]
    return [LatencyRow(quantizer=name, form=deploy_form(model), p50_us=lat.p50_us, p99_us=lat.p99_us,
                       speedup=base[2].p50_us / lat.p50_us, throughput=thr, throughput_ratio=thr / base[3],
                       size_kb=size.size_kb, compression=size.compression, read_kb=bytes_read(model) / 1000,
                       floor_level="-", floor_us=float("nan"), floor_dram_us=float("nan"))
            for name, model, lat, thr in stats]


def check_targets(rows: list[LatencyRow]) -> list[TargetRow]:
    """Issue 14's targets from one run's rows: batch-1 speed-ups over torch fp32 eager, and
    batch-256 throughput of every deployed form at least torch fp32's."""
    by_name = {r.quantizer: r for r in rows}
    out = []
    for label, names, goal in SPEEDUP_TARGETS:
        for q in names:
            if q in by_name:
                r = by_name[q]
                out.append(TargetRow(label, q, against(r.speedup, goal, at_least=True, digits=1) + "x",
                                     r.speedup >= goal))
    label, goal = THROUGHPUT_TARGET
    for r in rows:
        deployed_form = r.quantizer in list_quantizers() or r.quantizer.startswith("moe ") and "(" not in r.quantizer
        if deployed_form:
            ratio = against(r.throughput_ratio, goal, at_least=True)
            out.append(TargetRow(label, r.quantizer, f"{ratio}x ({r.throughput:.0f}/s)",
                                 r.throughput_ratio >= goal))
    return out


def bench_epochs(quantizers: list[str] | None = None, n: int = 2000, rounds: int = 11
                 ) -> list[EpochRow]:
    """Seconds per training epoch on an ESC-50-sized table (n x 1536, 50 classes, batch 64).

    Each round trains one epoch of every quantizer (a fresh model each), every one of them
    between two fp32 epochs (``fp32, q1, fp32, q2, fp32, ...``): a quantizer's own ratio in a
    round is its epoch over the mean of the fp32 epochs just before and after it, so the load of
    a shared machine, which drifts within a round, hits both sides of each ratio alike (pairing
    each with one fp32 epoch per round gave 2-4x the spread). Time is the thread's CPU time
    (with one torch thread every op runs on this thread), which other processes do not inflate.
    A row's figures: the median epoch over the rounds, and the median of its own ratios; it
    carries every own ratio (the noise of the figure; the QAT target's sign test in
    :func:`qmoe.bench_summary.qat_verdict`), their lowest and highest.
    """
    names = quantizers or list_quantizers()
    dim, hidden, classes = PAPER_DIMS
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(n, dim, generator=gen)
    y = np.asarray(torch.randint(0, classes, (n,), generator=gen))
    cfg = TrainConfig.single().replace(max_epochs=1, patience=1)
    others = [q for q in names if q != "fp32"]

    def epoch(q: str) -> float:
        model = _expert(q)
        start = time.thread_time()
        fit(model, x, y, x[:200], y[:200], cfg, n_classes=classes, seed=0)
        return time.thread_time() - start

    times: dict[str, list[float]] = {q: [] for q in ["fp32", *others]}
    own: dict[str, list[float]] = {"fp32": [], **{q: [] for q in others}}
    with torch_threads(1):
        # one untimed fp32 epoch first: the process's first training pays for warm-up
        # (allocator, kernels), which would flatter every ratio to fp32
        epoch("fp32")
        for _ in range(rounds):
            before = epoch("fp32")
            times["fp32"].append(before)
            own["fp32"].append(1.0)
            for q in others:
                seconds, after = epoch(q), epoch("fp32")
                times[q].append(seconds)
                times["fp32"].append(after)
                own[q].append(seconds / ((before + after) / 2))
                before = after
    return [EpochRow(q, float(np.median(t)), float(np.median(own[q])), min(own[q]), max(own[q]), tuple(own[q]))
            for q, t in times.items()]


@dataclass(frozen=True)
class ImportRow:
    """Resident memory of a fresh Python process after importing ``modules`` (MB, 1 MB = 2^20 B).

    ``anon_mb`` is private memory (heap, and library pages the loader relocated); ``file_mb``
    is library code and read-only data mapped from disk, shared by every process using it.
    """

    what: str
    modules: tuple[str, ...]
    rss_mb: float
    anon_mb: float
    file_mb: float


#: What a trial worker imports, in layers: torch alone, then the trial's stack.
IMPORT_LAYERS = (("python", ()), ("torch", ("torch",)),
                 ("a trial worker (qmoe.trial, numba kernels, ray)",
                  ("qmoe.trial", "qmoe.native.kernels.drivers", "ray")))
_RSS_PROBE = ("import importlib, sys\n"
              "for m in sys.argv[1:]: importlib.import_module(m)\n"
              "f = dict(l.split(':', 1) for l in open('/proc/self/status'))\n"
              "print(*(int(f[k].split()[0]) for k in ('VmRSS', 'RssAnon', 'RssFile')))\n")


def import_memory() -> list[ImportRow]:
    """RSS of fresh processes importing each layer of :data:`IMPORT_LAYERS` (Linux ``/proc``):
    the floor under any trial's peak RSS, whatever the trial itself allocates."""
    import subprocess
    import sys

    rows = []
    for what, modules in IMPORT_LAYERS:
        out = subprocess.run([sys.executable, "-c", _RSS_PROBE, *modules], capture_output=True,
                             text=True, check=True).stdout.split()
        rss, anon, file = (int(v) / 1024 for v in out)
        rows.append(ImportRow(what, modules, rss, anon, file))
    return rows
