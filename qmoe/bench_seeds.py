"""The cost floor of training several seeds of one trial together (``qmoe bench``; issue 14 §1:
10 seeds of one ESC-50-sized trial in <= 3x the time of one seed, on one core).

Training S seeds together -- stacked weights, batched matmuls, one process -- can share the
Python overhead, the data and the measurements, but not the arithmetic: every seed still
needs its own forward and weight-gradient matmuls at every step, and its own optimizer update
over its own weights and moments. This module bounds that unavoidable part from below, with
figures measured in the same run:

- matmuls: ``4 B sum(in x out)`` FLOPs per step and seed (forward and weight gradient of
  every Linear layer; the input gradients, router passes, quantization and dropout are left
  out, so the bound stays a bound), at the best single-thread GEMM throughput measured here
  over the trial's shape and larger ones (as a stacked model could run);
- optimizer: AdamW reads a parameter, its gradient and two moments and writes three of them
  back, 28 bytes per parameter per step. One seed's state (16 bytes per parameter: 19 MB for
  the MLP) is touched once per step, with the forward and backward passes in between, so it
  cannot stay in a cache smaller than it: beyond what the core's L2 can hold (counted as
  free), that traffic streams at least at the read bandwidth, measured here, of the level that
  holds one seed's state (L3 here). A bound that used the L2's bandwidth for all of it (as
  this bench did before) reads about 2x too low for state 10x the L2.

``S x steps x (matmul + optimizer)`` over one seed's whole measured trial is the least the
ratio can be, however the seeds are batched; where it exceeds the target, no batching reaches
it on this machine. Below the target it rules nothing out: the real per-step cost is higher
(quantization passes, dropout, input gradients, GEMMs below peak, the optimizer's
writes). Seed-batched training itself is not built: S seeds run as S trials, S x one.

:func:`stacked_step` measures the simplest stacked form outright: one training step of S fp32
MLPs as one model (batched matmuls over a leading seed dimension, one autograd graph, one
optimizer over the stacked weights) against one MLP's step, interleaved in one process.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass

import statistics

import torch
import torch.nn.functional as F
from torch import nn

from qmoe.bench import Bandwidth, measure_bandwidth
from qmoe.bench_targets import SEED_RATIO_TARGET, SEEDS
from qmoe.bench_trial import TrialTimingRow, trial_spec
from qmoe.measure import torch_threads
from qmoe.trial import build_model

ADAMW_BYTES = 28  # per parameter per step: read p, g, m, v (16), write p, m, v (12)
STATE_BYTES = 16  # per parameter held between steps: p, g, m, v
#: GEMM shapes (M, K, N) timed for the best throughput: the single model's first layer at its
#: batch, the mixture's batch, and the first layer of 10 stacked seeds sharing a batch.
GEMM_SHAPES = ((64, 1536, 640), (256, 1536, 640), (64, 1536, 6400), (1024, 1536, 2048))


@dataclass(frozen=True)
class SeedFloorRow:
    """The floor of training :data:`SEEDS` seeds of one model's trial together."""

    model: str
    trial_seconds: float  # one seed's whole trial, measured (qmoe.bench_trial)
    steps: int  # optimizer steps that trial ran
    gflops_per_step: float  # forward + weight-gradient matmuls of one seed's step
    mb_per_step: float  # optimizer traffic of one seed's step (1 MB = 1e6 bytes)
    gemm_gflops: float  # best single-thread GEMM throughput measured
    bandwidth_gbs: float  # read bandwidth of the level holding one seed's optimizer state, measured
    level: str = "L2"  # that level
    cached_mb: float = 0.0  # of mb_per_step, what the faster caches could serve (counted free)
    seeds: int = SEEDS
    probes: int = 1  # measurements the two rates are the best of (:class:`RateProbe`)

    @property
    def floor_seconds(self) -> float:
        """Least time for the arithmetic of ``seeds`` seeds' trainings."""
        streamed_mb = max(self.mb_per_step - self.cached_mb, 0.0)
        per_step = self.gflops_per_step / self.gemm_gflops + streamed_mb / 1e3 / self.bandwidth_gbs
        return self.seeds * self.steps * per_step

    @property
    def floor_ratio(self) -> float:
        """``floor_seconds`` over one seed's whole trial: the best any batching can reach."""
        return self.floor_seconds / self.trial_seconds

    @property
    def ruled_out(self) -> bool:
        """Whether the floor alone exceeds the target (no batching could meet it here)."""
        return self.floor_ratio > SEED_RATIO_TARGET


def best_gemm_gflops(shapes: Sequence[tuple[int, int, int]] = GEMM_SHAPES, min_seconds: float = 0.2) -> float:
    """The best float32 GEMM throughput of one thread over ``shapes`` (GFLOP/s, best pass)."""
    best = 0.0
    gen = torch.Generator().manual_seed(0)
    with torch_threads(1):
        for m, k, n in shapes:
            a, b = torch.randn(m, k, generator=gen), torch.randn(k, n, generator=gen)
            out = torch.empty(m, n)
            torch.mm(a, b, out=out)
            fastest, start = math.inf, time.perf_counter()
            while time.perf_counter() - start < min_seconds:
                t0 = time.perf_counter()
                torch.mm(a, b, out=out)
                fastest = min(fastest, time.perf_counter() - t0)
            best = max(best, 2.0 * m * k * n / fastest / 1e9)
    return best


@dataclass
class RateProbe:
    """The best GEMM rate and L2/L3 read bandwidth seen over probes taken between the timed
    trials (``qmoe bench`` passes :meth:`sample` to :func:`~qmoe.bench_trial.bench_trials`).

    The floor divides work by these rates, so it is a lower bound only if they are not below
    what the core could do while the trials ran. On this shared host one measurement can catch
    a slow phase (L3 read 16-54 GB/s and GEMMs 60-86 GFLOP/s over seven runs of the bench), and
    a floor from it then reads too high: up to "ruled out" where it is not. The best of probes
    spread over the trials' own minutes cannot be lower than the rate of the phase any trial
    ran in, at the probes' moments."""

    bandwidth: Bandwidth  # the bench's first measurement (all levels); the probes raise L2 and L3
    gemm_gflops: float = 0.0
    samples: int = 0
    min_seconds: float = 0.05  # per GEMM shape and per level, each probe

    def sample(self) -> None:
        """One probe: the GEMM rate and the L2 and L3 bandwidth, each kept where it is the best yet."""
        self.gemm_gflops = max(self.gemm_gflops, best_gemm_gflops(min_seconds=self.min_seconds))
        self.bandwidth = self.bandwidth.best(measure_bandwidth(self.min_seconds, dram=False))
        self.samples += 1


def step_work(model: nn.Module, batch: int) -> tuple[float, float]:
    """(GFLOP, MB) one training step of ``model`` at least does: the forward and
    weight-gradient matmuls of its Linear layers, and AdamW's traffic over its parameters."""
    macs = sum(m.in_features * m.out_features for m in model.modules() if isinstance(m, nn.Linear))
    params = sum(p.numel() for p in model.parameters())
    return 4.0 * batch * macs / 1e9, ADAMW_BYTES * params / 1e6


def seed_floor(model: str, model_obj: nn.Module, batch: int, steps: int, trial_seconds: float,
               gemm_gflops: float, bandwidth: Bandwidth, probes: int = 1) -> SeedFloorRow:
    """The floor row of one measured trial (``steps`` optimizer steps in ``trial_seconds``)."""
    gflops, mb = step_work(model_obj, batch)
    state = STATE_BYTES * sum(p.numel() for p in model_obj.parameters())
    level, gbs = bandwidth.level(state)
    # each byte of state the L2 keeps saves at most its share of the step's traffic
    cached = 0.0 if level == "L2" else bandwidth.l2_bytes * ADAMW_BYTES / STATE_BYTES / 1e6
    return SeedFloorRow(model=model, trial_seconds=trial_seconds, steps=steps, gflops_per_step=gflops,
                        mb_per_step=mb, gemm_gflops=gemm_gflops, bandwidth_gbs=gbs, level=level,
                        cached_mb=min(cached, mb), probes=probes)


def seed_floors(rows: Sequence[TrialTimingRow], bandwidth: Bandwidth | RateProbe, in_dim: int, n_classes: int,
                gemm_gflops: float | None = None) -> list[SeedFloorRow]:
    """The floor of every trial timed by :func:`qmoe.bench_trial.bench_trials` on a table of
    ``in_dim`` features and ``n_classes`` classes; ``bandwidth``: the core's read bandwidth by
    level (:func:`qmoe.bench.measure_bandwidth`), or the probes taken between those trials
    (:class:`RateProbe`: its bandwidth and, unless ``gemm_gflops`` is given, its GEMM rate,
    raised by one more probe now)."""
    probes = 1
    if isinstance(bandwidth, RateProbe):
        if gemm_gflops is None:
            bandwidth.sample()
            gemm_gflops = bandwidth.gemm_gflops
        probes, bandwidth = bandwidth.samples, bandwidth.bandwidth
    gemm = best_gemm_gflops() if gemm_gflops is None else gemm_gflops
    out = []
    for r in rows:
        model = build_model(trial_spec(r.model), in_dim, n_classes)
        out.append(seed_floor(r.model, model, r.batch, r.steps, r.seconds, gemm, bandwidth, probes))
    return out


@dataclass(frozen=True)
class StackedStep:
    """One training step of :data:`SEEDS` fp32 MLPs stacked into one model, and of one MLP (ms)."""

    seeds: int
    batch: int
    stacked_ms: float  # median over rounds
    one_ms: float

    @property
    def ratio(self) -> float:
        return self.stacked_ms / self.one_ms


def stacked_step(dims: Sequence[int] = (1536, 640, 320, 50), *, seeds: int = SEEDS, batch: int = 64,
                 dropout: float = 0.1, rounds: int = 5, min_seconds: float = 0.1) -> StackedStep:
    """Time one training step (forward, backward, clipping and AdamW) of ``seeds`` fp32 MLPs
    stacked -- ``torch.baddbmm`` over a leading seed dimension, each seed its own batch, one
    loss, one :class:`~qmoe.optim.AdamW` over the stacked weights -- against one MLP's step
    (:class:`~qmoe.models.Expert`, as trials train it), in interleaved rounds, one thread.

    fp32 is the cheapest case (no quantizer pass), and clipping here spans all seeds at once
    (per-seed clipping, which equal results need, costs more): the stacked time is optimistic.
    """
    from qmoe.models import Expert
    from qmoe.optim import AdamW

    gen = torch.Generator().manual_seed(0)
    with torch_threads(1):
        ws = [nn.Parameter(torch.randn(seeds, i, o, generator=gen) * 0.02) for i, o in zip(dims[:-1], dims[1:])]
        bs = [nn.Parameter(torch.zeros(seeds, 1, o)) for o in dims[1:]]
        opt_stacked = AdamW([*ws, *bs], lr=1e-3)
        x = torch.randn(seeds, batch, dims[0], generator=gen)
        y = torch.randint(0, dims[-1], (seeds, batch), generator=gen)
        one = Expert(dims[0], dims[-1], tuple(dims[1:-1]), "fp32", dropout).train()
        opt_one = AdamW(one.parameters(), lr=1e-3)

        def step_stacked() -> None:
            h = x
            for k, (w, b) in enumerate(zip(ws, bs)):
                h = torch.baddbmm(b, h, w)
                if k < len(ws) - 1:
                    h = F.dropout(F.relu(h), dropout)
            loss = F.cross_entropy(h.reshape(seeds * batch, -1), y.reshape(-1)) * seeds
            opt_stacked.zero_grad()
            loss.backward()
            opt_stacked.clip_and_step(1.0)

        def step_one() -> None:
            loss = F.cross_entropy(one(x[0]), y[0])
            opt_one.zero_grad()
            loss.backward()
            opt_one.clip_and_step(1.0)

        times: dict[str, list[float]] = {"stacked": [], "one": []}
        for _ in range(rounds + 1):  # the first round warms up
            for name, fn in (("stacked", step_stacked), ("one", step_one)):
                n, start = 0, time.perf_counter()
                while n < 2 or time.perf_counter() - start < min_seconds:
                    fn()
                    n += 1
                times[name].append((time.perf_counter() - start) / n)
    return StackedStep(seeds=seeds, batch=batch, stacked_ms=1e3 * statistics.median(times["stacked"][1:]),
                       one_ms=1e3 * statistics.median(times["one"][1:]))
