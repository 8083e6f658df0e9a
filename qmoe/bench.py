"""Side-by-side benchmarks of the science core (``qmoe bench``; DESIGN §12 sizes, issues 8, 14).

Every figure of one report is measured in the same run, on one thread: the memory bandwidth
(for the floors), every deployed form of the 1536-640-320-50 MLP in interleaved rounds with
torch fp32 eager (each ratio paired within its round, :mod:`qmoe.bench_rounds`), torch's own
dynamic int8 for comparison, one deployed mixture, and the training epochs.

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
import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from qmoe.bench_rounds import ROUNDS, kernel_seconds, median, numpy_latency, paired_ratios, time_in_rounds
from qmoe.bench_targets import EPOCH_ROUNDS, SPEEDUP_TARGETS, THROUGHPUT_TARGET, against, sign_verdict
from qmoe.latency import measure_latency
from qmoe.measure import measure_throughput, torch_threads
from qmoe.models import Expert, MixtureOfExperts
from qmoe.quant import QuantLinear, bytes_read, deploy, deploy_form, list_quantizers, size_report
from qmoe.spec import TrainConfig
from qmoe.train import fit

PAPER_DIMS = (1536, (640, 320), 50)  # EfficientNet-B3 embedding -> [640, 320] -> ESC-50
MIXTURE = ("bitnet", "q4", "q8")  # BitNet-Q4/8-QMoE, experts [256, 128, 64], M = 10 router passes
FP32_EAGER = "fp32 eager"  # the baseline of every ratio, timed between the rounds
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

    def best(self, other: Bandwidth) -> Bandwidth:
        """Each level's higher rate of the two (a level ``other`` did not probe, NaN, keeps this one's)."""
        top = lambda a, b: b if math.isnan(a) else a if math.isnan(b) else max(a, b)  # noqa: E731
        return dataclasses.replace(self, l2_gbs=top(self.l2_gbs, other.l2_gbs), l3_gbs=top(self.l3_gbs, other.l3_gbs),
                                   dram_gbs=top(self.dram_gbs, other.dram_gbs))


@dataclass(frozen=True)
class LatencyRow:
    """One deployed form, batch 1 and batch 256, one thread."""

    quantizer: str
    form: str
    p50_us: float
    p99_us: float
    speedup: float  # fp32 eager p50 / this p50: the median of the rounds' own speed-ups
    throughput: float  # samples/s at batch 256 (the median of the rounds')
    throughput_ratio: float  # / fp32 eager samples/s: the median of the rounds' own ratios
    size_kb: float
    compression: float
    read_kb: float  # weights + scales + biases one inference reads (what the kernel reads)
    floor_level: str  # where those bytes sit in a warm loop: L2, L3 or DRAM
    floor_us: float  # read_kb at that level's bandwidth
    floor_dram_us: float  # read_kb at DRAM bandwidth (cold weights)
    speedups: tuple[float, ...] = ()  # every round's own speed-up (qmoe.bench_rounds; the target's sign test)
    throughput_ratios: tuple[float, ...] = ()  # every round's own batch-256 ratio, likewise


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


def measure_bandwidth(min_seconds: float = 0.15, dram: bool = True) -> Bandwidth:
    """Read bandwidth of one core, by summing uint64 buffers of half of L2, half of L3 and
    four times L3 (at least 64 MB; not with ``dram`` False: NaN): the best of repeated passes over each."""
    from qmoe.native.kernels import load

    read_sum = load().drivers.read_sum
    l2, l3 = cache_sizes()
    rates = []
    for n_bytes in (l2 // 2, l3 // 2, max(4 * l3, 64 << 20))[:3 if dram else 2]:
        buf = np.ones(n_bytes // 8, np.uint64)
        read_sum(buf)  # compile/load, and fault the pages in
        best, start = math.inf, time.perf_counter()
        while time.perf_counter() - start < min_seconds:
            t0 = time.perf_counter()
            read_sum(buf)
            best = min(best, time.perf_counter() - t0)
        rates.append(buf.nbytes / best / 1e9)
        del buf
    rates += [math.nan] * (3 - len(rates))
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


def _row(label: str, model: nn.Module, deployed: nn.Module, lat: tuple[float, float], throughput: float,
         ratios: tuple[Sequence[float], Sequence[float]], bw: Bandwidth, *, rounds: bool = True) -> LatencyRow:
    """A form's row: ``lat`` its (p50, p99) µs, ``ratios`` its speed-ups and batch-256 ratios,
    one per round (``rounds``: kept in the row for the targets' sign tests) or one each
    (the floors, timed apart from the rounds); the row's figures are their medians."""
    size = size_report(model)
    n_read = bytes_read(deployed)
    level, gbs = bw.level(n_read)
    kept = (tuple(ratios[0]), tuple(ratios[1])) if rounds else ((), ())
    return LatencyRow(quantizer=label, form=deploy_form(deployed), p50_us=lat[0], p99_us=lat[1],
                      speedup=median(ratios[0]), throughput=throughput, throughput_ratio=median(ratios[1]),
                      size_kb=size.size_kb, compression=size.compression, read_kb=n_read / 1000,
                      floor_level=level, floor_us=n_read / gbs / 1e3, floor_dram_us=n_read / bw.dram_gbs / 1e3,
                      speedups=kept[0], throughput_ratios=kept[1])


def bench_latency(quantizers: list[str] | None = None, runs: int = 300,
                  bandwidth: Bandwidth | None = None, rounds: int = ROUNDS) -> list[LatencyRow]:
    """Batch-1 p50/p99 latency and batch-256 throughput of every deployed form with its memory
    floor, in ``rounds`` interleaved rounds with torch fp32 eager (:mod:`qmoe.bench_rounds`;
    ``runs`` batch-1 calls per form in all), then the compute floor of each native form (kernel
    alone) and the latency floor (one call of a one-weight model, through torch and numpy)."""
    with torch_threads(1):
        return _bench_latency(quantizers or list_quantizers(), runs, bandwidth or measure_bandwidth(), rounds)


def _bench_latency(names: list[str], runs: int, bw: Bandwidth, rounds: int) -> list[LatencyRow]:
    x = torch.randn(256, PAPER_DIMS[0])
    fp32 = _expert("fp32")
    eager = deploy(fp32, reference=True)  # torch nn.Linear layers: the baseline of every ratio
    measured: list[tuple[str, nn.Module, nn.Module]] = [(FP32_EAGER, fp32, eager)]
    for q in names:
        model = _expert(q)
        measured.append((q, model, deploy(model)))
        if q == "ptq8":
            measured.append((TORCH_INT8, model, torch_dynamic_int8(model)))
    turns = time_in_rounds([deployed for _, _, deployed in measured], x, rounds=rounds, runs=-(-runs // rounds))
    base = turns[0]
    itself = (1.0,) * rounds  # the baseline against itself
    rows = [_row(label, model, deployed, (t.p50(), t.p99()), median(t.rates),
                 paired_ratios(base, t) if k else (itself, itself), bw)
            for k, ((label, model, deployed), t) in enumerate(zip(measured, turns))]
    base_us, base_rate = base.p50(), median(base.rates)
    xn = x.numpy()
    for label, model, deployed in measured[1:]:
        native = getattr(deployed._modules.get("net"), "native", None)
        if native is not None:
            seconds = kernel_seconds(native, xn)
            rows.append(_row(label + KERNEL, model, deployed, (seconds * 1e6,) * 2, 1 / seconds,
                             ((base_us / (seconds * 1e6),), (1 / seconds / base_rate,)), bw, rounds=False))
    torch.manual_seed(0)
    tiny = QuantLinear(1, 1, "q1").eval()
    one = deploy(tiny)
    for label, lat, thr in ((CALL + " (torch)", measure_latency(one, x[:, :1], runs=runs, precision=None),
                             measure_throughput(one, x[:, :1])),
                            (CALL + " (numpy)", numpy_latency(one.mlp, xn[:, :1], runs=runs),
                             1 / kernel_seconds(one.mlp, xn[:, :1]))):
        rows.append(_row(label, tiny, one, (lat.p50_us, lat.p99_us), thr,
                         ((base_us / lat.p50_us,), (thr / base_rate,)), bw, rounds=False))
    return rows


def bench_mixture(runs: int = 300, rounds: int = ROUNDS) -> list[LatencyRow]:
    """Batch-1 latency of the BitNet-Q4/8 mixture: every expert runs (curiosity needs all of
    their outputs) plus the M = 10 Monte-Carlo router passes: all-torch (the baseline),
    deployed (one native call through torch) and the same native call from numpy (a torch-free
    runtime), in interleaved rounds as :func:`bench_latency`."""
    with torch_threads(1):
        cfg = TrainConfig.mixture()
        x = torch.randn(256, PAPER_DIMS[0])
        torch.manual_seed(0)
        moe = MixtureOfExperts(PAPER_DIMS[0], PAPER_DIMS[2], MIXTURE, hidden=cfg.hidden, dropout=cfg.dropout,
                               mc_samples=cfg.mc_samples, alpha=0.2).eval()
        reference = deploy(moe, reference=True)  # the same mixture with float fake-quant experts
        deployed = deploy(moe, seed=0)
        label = "moe " + ",".join(MIXTURE)
        forms = [(label + " (torch)", reference, reference), (label, deployed, deployed),
                 (label + " (native, numpy)", deployed, deployed.native)]
        turns = time_in_rounds([fn for _, _, fn in forms], x, rounds=rounds, runs=-(-runs // rounds),
                               numpy=frozenset({2}))
    size = size_report(moe)
    itself = (1.0,) * rounds
    out = []
    for k, ((name, model, _), t) in enumerate(zip(forms, turns)):
        speedups, ratios = paired_ratios(turns[0], t) if k else (itself, itself)
        out.append(LatencyRow(quantizer=name, form=deploy_form(model), p50_us=t.p50(), p99_us=t.p99(),
                              speedup=median(speedups), throughput=median(t.rates), throughput_ratio=median(ratios),
                              size_kb=size.size_kb, compression=size.compression, read_kb=bytes_read(model) / 1000,
                              floor_level="-", floor_us=float("nan"), floor_dram_us=float("nan"),
                              speedups=speedups, throughput_ratios=ratios))
    return out


def check_targets(rows: list[LatencyRow]) -> list[TargetRow]:
    """Issue 14's targets from one run's rows: batch-1 speed-ups over torch fp32 eager, and
    batch-256 throughput of every deployed form at least torch fp32's. A row with its rounds is
    judged by a sign test on them (:func:`qmoe.bench_targets.sign_verdict`: "not shown" where
    they do not decide); one without, on its figure alone."""
    by_name = {r.quantizer: r for r in rows}
    out = []
    for label, names, goal in SPEEDUP_TARGETS:
        for q in names:
            if q in by_name:
                r = by_name[q]
                met, test = _verdict(r.speedups, r.speedup, goal)
                test = f" ({test})" if test else ""
                out.append(TargetRow(label, q, against(r.speedup, goal, at_least=True, digits=1) + "x" + test, met))
    label, goal = THROUGHPUT_TARGET
    for r in rows:
        deployed_form = r.quantizer in list_quantizers() or r.quantizer.startswith("moe ") and "(" not in r.quantizer
        if deployed_form:
            met, test = _verdict(r.throughput_ratios, r.throughput_ratio, goal)
            ratio = against(r.throughput_ratio, goal, at_least=True)
            test = f"; {test}" if test else ""
            out.append(TargetRow(label, r.quantizer, f"{ratio}x ({r.throughput:.0f}/s{test})", met))
    return out


def _verdict(ratios: tuple[float, ...], figure: float, goal: float) -> tuple[bool | None, str]:
    """``(met, how)`` of a figure at least ``goal``: the rounds' sign test, else the figure alone."""
    return sign_verdict(ratios, goal, at_least=True) if ratios else (figure >= goal, "")


def bench_epochs(quantizers: list[str] | None = None, n: int = 2000, rounds: int = EPOCH_ROUNDS
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
