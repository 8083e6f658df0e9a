"""``qmoe bench`` pieces: bandwidth probe, floors, target checks, bytes read (quick), the
whole command (slow)."""

from __future__ import annotations

import math
import statistics
from dataclasses import replace

import pytest
import torch

from qmoe.bench import (IMPORT_LAYERS, Bandwidth, EpochRow, LatencyRow, bench_epochs, bench_latency, bench_mixture,
                        cache_sizes, check_targets, import_memory, measure_bandwidth)
from qmoe.models import Expert
from qmoe.quant import bytes_read, deploy


def test_cache_sizes_are_plausible() -> None:
    l2, l3 = cache_sizes()
    assert 64 << 10 <= l2 <= 64 << 20 and l2 <= l3 <= 4 << 30


def test_bandwidth_probe_is_positive_and_levels_are_ordered() -> None:
    bw = measure_bandwidth(min_seconds=0.02)
    assert 0 < bw.dram_gbs and 0 < bw.l3_gbs and 0 < bw.l2_gbs
    assert bw.level(1000) == ("L2", bw.l2_gbs)
    assert bw.level(bw.l2_bytes + 1) == ("L3", bw.l3_gbs)
    assert bw.level(bw.l3_bytes + 1) == ("DRAM", bw.dram_gbs)


def test_bandwidth_without_dram_and_the_best_of_two() -> None:
    caches = measure_bandwidth(min_seconds=0.01, dram=False)  # no 4 x L3 buffer to fill
    assert 0 < caches.l2_gbs and 0 < caches.l3_gbs and math.isnan(caches.dram_gbs)
    a = Bandwidth(l2_gbs=100.0, l3_gbs=20.0, dram_gbs=15.0, l2_bytes=1 << 20, l3_bytes=32 << 20)
    b = Bandwidth(l2_gbs=90.0, l3_gbs=45.0, dram_gbs=math.nan, l2_bytes=1 << 20, l3_bytes=32 << 20)
    assert a.best(b) == Bandwidth(l2_gbs=100.0, l3_gbs=45.0, dram_gbs=15.0, l2_bytes=1 << 20, l3_bytes=32 << 20)
    assert b.best(a) == a.best(b)  # a level one of them did not probe takes the other's


def test_bytes_read_counts_what_the_kernels_read() -> None:
    torch.manual_seed(0)
    n_weights = 1536 * 640 + 640 * 320 + 320 * 50
    n_out = 640 + 320 + 50
    scales = 4 * (2 * n_out + 3)  # float32 rscale + bias per output, one extra per layer
    fp32 = deploy(Expert(1536, 50, (640, 320), "fp32", 0.0))  # panels of 16 outputs pad 50 to 64 on AVX2
    assert bytes_read(fp32) == sum(low.w.nbytes + low.fp.nbytes for low in fp32.net.native.lowered)
    assert 4 * (n_weights + n_out) <= bytes_read(fp32) <= 4 * (n_weights + 15 * (1536 + 640 + 320) + n_out)
    assert bytes_read(Expert(1536, 50, (640, 320), "fp32", 0.0)) == 4 * (n_weights + n_out)  # torch too
    binary = deploy(Expert(1536, 50, (640, 320), "binary", 0.0))
    words = 24 * 640 + 10 * 320 + 5 * 50  # 64-bit words of the packed sign bits
    assert bytes_read(binary) == 8 * words + scales
    q4 = deploy(Expert(1536, 50, (640, 320), "q4", 0.0))
    native = q4.net.native  # 4-bit values read as nibbles (AVX2) or bytes, rows padded
    assert bytes_read(q4) == sum(low.w.nbytes + low.fp.nbytes for low in native.lowered)
    assert n_weights / 2 + scales <= bytes_read(q4) <= 1.1 * n_weights + scales


def _row(name: str, p50: float, floor: float = 1.0, thr: float = 1.0) -> LatencyRow:
    return LatencyRow(quantizer=name, form="f", p50_us=p50, p99_us=p50, speedup=120.0 / p50,
                      throughput=thr, throughput_ratio=thr, size_kb=1.0, compression=1.0,
                      read_kb=1.0, floor_level="L2", floor_us=floor, floor_dram_us=4 * floor)


def test_targets_are_judged_against_the_goals() -> None:
    rows = [_row("binary", 6.0), _row("q1", 10.0), _row("bitnet", 12.0), _row("q8", 39.0),
            _row("ptq8", 41.0), _row("q4 (kernel alone)", 1.0), _row("moe bitnet,q4,q8", 50.0, thr=0.9)]
    got = {(t.target, t.quantizer): t.met for t in check_targets(rows)}
    assert got[("1-bit >= 20x", "binary")] and not got[("1-bit >= 20x", "q1")]  # 20x and 12x
    assert got[("ternary >= 10x", "bitnet")]
    assert got[("int8 >= 3x", "q8")] and not got[("int8 >= 3x", "ptq8")]
    assert ("2-bit >= 10x", "q2") not in got  # quantizers not benchmarked are not judged
    assert got[("batch 256 >= torch fp32", "q8")] and not got[("batch 256 >= torch fp32", "moe bitnet,q4,q8")]
    assert ("batch 256 >= torch fp32", "q4 (kernel alone)") not in got  # floors are not forms


def test_targets_with_rounds_are_a_sign_test_on_them() -> None:
    """A median over the goal does not make a target met: the rounds must show it."""
    def row(name: str, speedups: tuple[float, ...], ratios: tuple[float, ...]) -> LatencyRow:
        return replace(_row(name, 1.0), speedup=statistics.median(speedups), speedups=speedups,
                       throughput_ratio=statistics.median(ratios), throughput_ratios=ratios)

    rows = [row("binary", (21.0,) * 12 + (19.0,) * 3, (5.0,) * 15),  # 12 of 15 over: p = 0.018
            row("q1", (21.0,) * 9 + (19.0,) * 6, (1.1,) * 8 + (0.9,) * 7),  # 9 of 15, median over: undecided
            row("q8", (2.9,) * 15, (0.5,) * 15)]
    got = {(t.target, t.quantizer): t for t in check_targets(rows)}
    binary, q1 = got[("1-bit >= 20x", "binary")], got[("1-bit >= 20x", "q1")]
    assert binary.met is True and binary.measured == "21.0x (12 of 15 rounds >= 20x: sign test p = 0.018)"
    assert q1.met is None and q1.measured.startswith("21.0x (9 of 15 rounds >= 20x: not shown, sign test p = 0.3")
    assert got[("int8 >= 3x", "q8")].met is False
    assert got[("batch 256 >= torch fp32", "q1")].met is None
    assert got[("batch 256 >= torch fp32", "q8")].measured == "0.50x (1/s; 0 of 15 rounds >= 1x: sign test p = 3.1e-05)"


def test_bench_latency_rows_side_by_side() -> None:
    bw = Bandwidth(l2_gbs=100.0, l3_gbs=50.0, dram_gbs=20.0, l2_bytes=1 << 20, l3_bytes=32 << 20)
    rows = bench_latency(["binary", "ptq8"], runs=200, bandwidth=bw, rounds=4)
    names = [r.quantizer for r in rows]
    assert names == ["fp32 eager", "binary", "ptq8", "ptq8 (torch dynamic int8)",
                     "binary (kernel alone)", "ptq8 (kernel alone)", "call alone (torch)", "call alone (numpy)"]
    by = {r.quantizer: r for r in rows}
    assert by["binary"].form == "numba-xnor-popcount" and by["binary"].floor_level == "L2"
    assert by["ptq8"].form == "numba-int8-dot"
    assert by["ptq8 (torch dynamic int8)"].form == "torch-dynamic-int8"
    assert by["fp32 eager"].form == "torch-fp32"
    assert by["fp32 eager"].floor_level == "L3"  # 4.8 MB of float32 weights
    assert by["binary"].floor_us == pytest.approx(by["binary"].read_kb * 1000 / 100e9 * 1e6)
    for r in rows:
        assert r.p50_us > 0 and r.throughput > 0 and math.isfinite(r.speedup)
    for r in rows[:4]:  # the forms: one ratio per round each, their medians the figures
        assert len(r.speedups) == len(r.throughput_ratios) == 4
        assert r.speedup == pytest.approx(statistics.median(r.speedups))
        assert r.throughput_ratio == pytest.approx(statistics.median(r.throughput_ratios))
    assert rows[0].speedups == (1.0,) * 4 and rows[0].speedup == 1.0  # the baseline against itself
    for r in rows[4:]:  # the floors: timed apart, no rounds, judged by no target
        assert r.speedups == () and r.throughput_ratios == ()
    assert by["binary (kernel alone)"].p50_us < by["binary"].p50_us  # no call in it


def test_bench_mixture_rows_in_rounds() -> None:
    rows = bench_mixture(runs=200, rounds=2)
    assert [r.quantizer for r in rows] == ["moe bitnet,q4,q8 (torch)", "moe bitnet,q4,q8",
                                           "moe bitnet,q4,q8 (native, numpy)"]
    assert rows[0].speedup == 1.0 and all(len(r.speedups) == 2 for r in rows)
    assert all(r.p50_us > 0 and r.throughput > 0 for r in rows)


def test_bench_epochs_round_robin_rows() -> None:
    rows = bench_epochs(["q4", "binary"], n=128, rounds=2)
    assert [r.quantizer for r in rows] == ["fp32", "q4", "binary"]
    assert rows[0].ratio == 1.0 and rows[0].ratios == (1.0, 1.0)  # fp32 against itself, every round
    for r in rows:  # every round's own ratio, kept for the QAT target's sign test; the figure is their median
        assert r.seconds_per_epoch > 0 and len(r.ratios) == 2
        assert (min(r.ratios), max(r.ratios)) == (r.ratio_low, r.ratio_high)
        assert r.ratio == pytest.approx(sum(r.ratios) / 2)  # the median of two


def test_bench_epochs_brackets_each_quantizer_between_fp32_epochs(monkeypatch: pytest.MonkeyPatch) -> None:
    """A round runs fp32, q4, fp32, binary, fp32; each own ratio is over the mean of its neighbours."""
    import qmoe.bench

    runs: list[str] = []
    seconds = {"fp32": iter([9.0, 1.0, 3.0, 5.0, 1.0, 1.0, 3.0]), "q4": iter([4.0, 1.0]), "binary": iter([8.0, 2.0])}

    def fake_fit(model, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003, ANN202
        runs.append(model.name)
        clock[0] += next(seconds[model.name])

    clock = [0.0]
    monkeypatch.setattr(qmoe.bench, "_expert", lambda q: type("M", (), {"name": q})())
    monkeypatch.setattr(qmoe.bench, "fit", fake_fit)
    monkeypatch.setattr(qmoe.bench.time, "thread_time", lambda: clock[0])
    rows = {r.quantizer: r for r in bench_epochs(["q4", "binary"], n=8, rounds=2)}
    assert runs == ["fp32"] + ["fp32", "q4", "fp32", "binary", "fp32"] * 2  # an untimed warm-up first
    # round 1: fp32 1, q4 4, fp32 3, binary 8, fp32 5; round 2: fp32 1, q4 1, fp32 1, binary 2, fp32 3
    assert rows["q4"].ratios == (4.0 / 2.0, 1.0 / 1.0) and rows["binary"].ratios == (8.0 / 4.0, 2.0 / 2.0)
    assert rows["q4"].ratio == 1.5 and rows["q4"].seconds_per_epoch == 2.5
    assert rows["fp32"].seconds_per_epoch == 2.0 and rows["fp32"].ratios == (1.0, 1.0)  # median of its 6 epochs


def test_an_epoch_rows_middle_half_ignores_one_outlying_round() -> None:
    row = EpochRow("q4", 0.2, 1.19, 1.10, 6.6, (1.10, 1.18, 1.19, 1.20, 6.6))
    assert row.spread == "1.10-6.60" and row.quartiles == "1.18-1.20"  # numpy's linear quartiles
    assert EpochRow("q4", 0.2, 1.19).quartiles == ""  # no rounds recorded


def test_import_memory_layers_grow() -> None:
    rows = import_memory()
    assert [r.modules for r in rows] == [m for _, m in IMPORT_LAYERS]
    python, torch_row, worker = rows
    assert python.rss_mb < torch_row.rss_mb < worker.rss_mb
    for r in rows:  # RSS is private plus file-backed (shared memory is not used here)
        assert r.anon_mb + r.file_mb == pytest.approx(r.rss_mb, abs=2.0)


@pytest.mark.slow
def test_qmoe_bench_prints_every_table(capsys) -> None:
    from qmoe.cli.main import main

    assert main(["bench", "--rounds", "1", "--no-sweep", "--no-extraction"]) == 0
    out = capsys.readouterr().out.replace("\n", "").replace("│", "").replace(" ", "")
    for needle in ("Readbandwidth", "numba-xnor-popcount", "numba-bitplane", "kernelalone", "callalone",
                   "numba-int8-dot", "torch-dynamic-int8", "targets", "secondsperepoch",
                   "ESC-50-sizedtable", "bitnet,q4,q8", "Memory(MB)"):
        assert needle in out

