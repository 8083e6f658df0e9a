"""The seed-batching floor: exact work counts, its arithmetic, a measured GEMM rate, the best
rates of the probes among the trials."""

from __future__ import annotations

import math

import pytest

from qmoe.bench import Bandwidth
from qmoe.bench_seeds import RateProbe, SeedFloorRow, best_gemm_gflops, seed_floor, seed_floors, step_work
from qmoe.bench_targets import SEED_RATIO_TARGET, SEEDS
from qmoe.models import Expert


def test_step_work_counts_the_paper_mlp_exactly() -> None:
    model = Expert(1536, 50, (640, 320), "q4", 0.1)
    gflop, mb = step_work(model, batch=64)
    macs = 1536 * 640 + 640 * 320 + 320 * 50
    params = macs + 640 + 320 + 50  # weights and biases (q4 has no quantizer parameters)
    assert gflop == 4 * 64 * macs / 1e9
    assert mb == 28 * params / 1e6
    bitnet_gflop, bitnet_mb = step_work(Expert(1536, 50, (640, 320), "bitnet", 0.1), batch=64)
    assert bitnet_gflop == gflop and bitnet_mb == 28 * (params + 640 + 320 + 50) / 1e6  # + alpha per row


@pytest.mark.parametrize(("trial_s", "ruled_out"), [(4.0, True), (5.0, False)])
def test_floor_arithmetic(trial_s: float, ruled_out: bool) -> None:
    row = SeedFloorRow(model="q4", trial_seconds=trial_s, steps=500, gflops_per_step=0.3, mb_per_step=34.0,
                       gemm_gflops=150.0, bandwidth_gbs=34.0)
    per_step = 0.3 / 150.0 + 34.0 / 1e3 / 34.0  # 2 ms of matmul, 1 ms of optimizer
    assert math.isclose(row.floor_seconds, SEEDS * 500 * per_step)  # 15 s for 10 seeds: 3.75x a 4 s trial, 3x a 5 s one
    assert math.isclose(row.floor_ratio, SEEDS * 500 * per_step / trial_s)
    assert row.ruled_out is ruled_out and (row.floor_ratio > SEED_RATIO_TARGET) is ruled_out


def test_optimizer_state_beyond_the_l2_streams_from_the_level_that_holds_it() -> None:
    model = Expert(1536, 50, (640, 320), "q4", 0.1)
    params = sum(p.numel() for p in model.parameters())  # 1,205,330: 19.3 MB of state (p, g, m, v)
    bw = Bandwidth(l2_gbs=150.0, l3_gbs=30.0, dram_gbs=15.0, l2_bytes=2_000_000, l3_bytes=100_000_000)
    row = seed_floor("q4", model, batch=64, steps=500, trial_seconds=4.0, gemm_gflops=150.0, bandwidth=bw)
    assert (row.level, row.bandwidth_gbs) == ("L3", 30.0)
    assert math.isclose(row.cached_mb, 2.0 * 28 / 16)  # the 2 MB the L2 may keep, as traffic
    streamed = 28 * params / 1e6 - 3.5
    assert math.isclose(row.floor_seconds, SEEDS * 500 * (row.gflops_per_step / 150.0 + streamed / 1e3 / 30.0))
    small = Bandwidth(l2_gbs=150.0, l3_gbs=30.0, dram_gbs=15.0, l2_bytes=16 * params, l3_bytes=10**9)
    fits = seed_floor("q4", model, batch=64, steps=500, trial_seconds=4.0, gemm_gflops=150.0, bandwidth=small)
    assert (fits.level, fits.bandwidth_gbs, fits.cached_mb) == ("L2", 150.0, 0.0)  # all of it at the L2's rate
    assert fits.floor_seconds < row.floor_seconds
    huge = Bandwidth(l2_gbs=150.0, l3_gbs=30.0, dram_gbs=15.0, l2_bytes=10**9, l3_bytes=2 * 10**9)
    assert seed_floor("q4", model, 64, 500, 4.0, 150.0, huge).level == "L2"


def test_gemm_rate_is_measured() -> None:
    rate = best_gemm_gflops([(32, 64, 48)], min_seconds=0.01)
    assert math.isfinite(rate) and rate > 0.01  # any CPU multiplies 100k FLOPs in under 10 ms


def test_stacked_step_times_both_forms_in_one_run() -> None:
    from qmoe.bench_seeds import StackedStep, stacked_step

    row = stacked_step((16, 12, 8, 3), seeds=3, batch=4, rounds=2, min_seconds=0.001)
    assert isinstance(row, StackedStep) and (row.seeds, row.batch) == (3, 4)
    assert row.stacked_ms > 0 and row.one_ms > 0 and math.isclose(row.ratio, row.stacked_ms / row.one_ms)


def test_probes_keep_each_rate_at_its_best(monkeypatch: pytest.MonkeyPatch) -> None:
    """A probe in a slow phase lowers nothing: the floor divides by the best rates seen, so a
    slow moment cannot raise it to "ruled out"."""
    import qmoe.bench_seeds as bs

    def caches(l2: float, l3: float) -> Bandwidth:
        return Bandwidth(l2_gbs=l2, l3_gbs=l3, dram_gbs=math.nan, l2_bytes=1 << 20, l3_bytes=1 << 30)

    gemms, bws = iter([60.0, 86.0, 70.0]), iter([caches(70.0, 16.0), caches(80.0, 54.0), caches(75.0, 20.0)])
    monkeypatch.setattr(bs, "best_gemm_gflops", lambda min_seconds: next(gemms))
    monkeypatch.setattr(bs, "measure_bandwidth", lambda min_seconds, dram: next(bws))
    probe = RateProbe(Bandwidth(l2_gbs=75.0, l3_gbs=20.0, dram_gbs=14.0, l2_bytes=1 << 20, l3_bytes=1 << 30))
    probe.sample()
    probe.sample()
    assert (probe.gemm_gflops, probe.samples) == (86.0, 2)
    assert (probe.bandwidth.l2_gbs, probe.bandwidth.l3_gbs, probe.bandwidth.dram_gbs) == (80.0, 54.0, 14.0)
    row = SeedFloorRow(model="fp32", trial_seconds=12.2, steps=736, gflops_per_step=0.308, mb_per_step=33.74,
                       gemm_gflops=60.0, bandwidth_gbs=16.0, level="L3", cached_mb=1.575)
    best = SeedFloorRow(model="fp32", trial_seconds=12.2, steps=736, gflops_per_step=0.308, mb_per_step=33.74,
                        gemm_gflops=86.0, bandwidth_gbs=54.0, level="L3", cached_mb=1.575)
    assert row.ruled_out and not best.ruled_out  # the slow probe alone would rule batching out


def test_seed_floors_from_a_probe_take_one_more_sample_and_say_how_many(monkeypatch: pytest.MonkeyPatch) -> None:
    import qmoe.bench_seeds as bs
    from qmoe.bench_trial import TrialTimingRow

    monkeypatch.setattr(bs, "best_gemm_gflops", lambda min_seconds: 80.0)
    monkeypatch.setattr(bs, "measure_bandwidth", lambda min_seconds, dram: Bandwidth(
        l2_gbs=90.0, l3_gbs=40.0, dram_gbs=math.nan, l2_bytes=1 << 20, l3_bytes=1 << 30))
    probe = RateProbe(Bandwidth(l2_gbs=75.0, l3_gbs=20.0, dram_gbs=14.0, l2_bytes=1 << 20, l3_bytes=1 << 30))
    probe.sample()
    trial = TrialTimingRow(model="q4", seconds=10.0, train_seconds=9.0, epochs=20, steps=500, batch=64,
                           seconds_per_epoch=0.45, measure_seconds=1.0, f1_macro=0.7, peak_rss_mb=900.0)
    (row,) = seed_floors([trial], probe, in_dim=1536, n_classes=50)
    assert probe.samples == 2 and row.probes == 2  # one before the trial, one after it
    assert (row.gemm_gflops, row.level, row.bandwidth_gbs) == (80.0, "L3", 40.0)
