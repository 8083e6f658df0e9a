"""The run's targets in one list: each figure against its target, parts that did not run left out."""

from __future__ import annotations

import dataclasses

from qmoe.bench import EpochRow, TargetRow
from qmoe.bench_seeds import StackedStep
from qmoe.bench_summary import qat_verdict, summary_rows
from qmoe.bench_trial import TrialTimingRow
from qmoe.sweeps.bench.jobs import RunTimes, TrialTime
from qmoe.sweeps.bench.sweep_efficiency import ShortBench, SizedBench


def _times(seconds: list[float], wall: float | None = None) -> RunTimes:
    return RunTimes(label="t", wall_seconds=wall,
                    trials=tuple(TrialTime(trial_key=str(i), model="q4", seconds=s) for i, s in enumerate(seconds)))


def _trial(model: str, seconds: float, rss: float) -> TrialTimingRow:
    return TrialTimingRow(model=model, seconds=seconds, train_seconds=seconds / 2, epochs=10, steps=300, batch=64,
                          seconds_per_epoch=seconds / 20, measure_seconds=seconds / 2, f1_macro=0.5, peak_rss_mb=rss)


def test_every_target_of_a_full_run_is_listed_and_judged() -> None:
    deployed = [TargetRow("1-bit >= 20x", "q1", "17.1x", False)]
    epochs = [EpochRow("fp32", 0.2, 1.0), EpochRow("q4", 0.23, 1.15), EpochRow("bitnet", 0.3, 1.5),
              EpochRow("ptq8", 0.21, 1.05)]  # ptq8 quantizes after training: no QAT target
    trials = [_trial("q4", 8.0, 1100.0), _trial("fp32", 61.0, 1000.0), _trial("bitnet,q4,q8", 90.0, 1300.0)]
    short = ShortBench(serial=_times([5.0] * 8), ours=_times([5.5] * 8, wall=23.0),
                       defaults=_times([9.0] * 8, wall=60.0), first_trial=9.5, command_wall=35.0, slots=2)
    sized = SizedBench(reference=_times([40.0] * 15), ours=_times([42.0] * 15, wall=330.0), serial=True,
                       command_wall=400.0, table_name="t", slots=2)
    rows = summary_rows(deployed=deployed, epochs=epochs, trials=trials,
                        stacked=StackedStep(seeds=10, batch=64, stacked_ms=200.0, one_ms=20.0), short=short, sized=sized)
    got = {(r.target, r.quantizer): (r.measured, r.met) for r in rows}
    assert got[("1-bit >= 20x", "q1")] == ("17.1x", False)
    assert got[("QAT epoch <= 1.2x fp32", "q4")] == ("1.15x", True)
    assert got[("QAT epoch <= 1.2x fp32", "bitnet")] == ("1.50x", False)
    assert not any(q == "ptq8" for _, q in got)
    assert got[("single-model trial <= 60 s", "slowest: fp32")] == ("61.0 s", False)  # mixtures have no such target
    assert got[("trial peak RSS <= 600 MB", "highest (bench process): bitnet,q4,q8")] == ("1300 MB", False)
    assert got[("10 seeds <= 3x one seed's trial", "all")][1] is False
    assert "10.00x one step" in got[("10 seeds <= 3x one seed's trial", "all")][0]
    assert got[("sweep efficiency, 8 short trials >= 0.85", "qmoe sweep")] == ("0.87", True)
    assert got[("first trial running <= 8 s after the command", "qmoe sweep")] == ("9.5 s", False)
    assert got[("sweep efficiency, ESC-50-sized Table 1 >= 0.9", "qmoe sweep")] == ("0.91", True)
    assert got[("paper grid on 2 slots <= 2 h", "qmoe sweep")] == ("1.38 h (10 seeds: 13.8 h)", True)
    assert len(rows) == 11  # 1 deployed + 2 QAT + single trial + RSS + seeds + 3 short sweep + 2 sized sweep


def test_the_short_efficiency_row_carries_the_workers_import_ceiling() -> None:
    short = ShortBench(serial=_times([5.0] * 8), ours=_times([5.5] * 8, wall=30.0),
                       defaults=_times([9.0] * 8, wall=60.0), first_trial=7.0, command_wall=35.0, slots=2,
                       worker_imports=4.0)  # 20 s of trials per slot after 4 s of imports: 0.83 at most
    row = {r.target: r for r in summary_rows(short=short)}["sweep efficiency, 8 short trials >= 0.85"]
    assert row.measured == ("0.67; every worker imports Ray Tune and the trial's code after the run starts (>= 4.00 s): "
                            "at most 0.83: ruled out") and not row.met
    quick = dataclasses.replace(short, worker_imports=1.0)  # 0.95 at most: the target is not ruled out
    row = {r.target: r for r in summary_rows(short=quick)}["sweep efficiency, 8 short trials >= 0.85"]
    assert row.measured.endswith("(>= 1.00 s): at most 0.95") and "ruled out" not in row.measured


def test_the_first_trial_row_carries_rays_start_and_the_workers_imports() -> None:
    short = ShortBench(serial=_times([5.0] * 8), ours=_times([5.5] * 8, wall=30.0),
                       defaults=_times([9.0] * 8, wall=60.0), first_trial=14.0, command_wall=35.0, slots=2,
                       worker_imports=5.0, ray_start=4.5)
    target = "first trial running <= 8 s after the command"
    row = {r.target: r for r in summary_rows(short=short)}[target]
    assert row.measured == "14.0 s; Ray's start 4.50 s, then a worker's imports 5.00 s: at least 9.50 s: ruled out"
    assert row.met is False
    quick = dataclasses.replace(short, worker_imports=3.0)  # 7.5 s at least: not ruled out
    row = {r.target: r for r in summary_rows(short=quick)}[target]
    assert row.measured.endswith("at least 7.50 s") and row.met is False
    row = {r.target: r for r in summary_rows(short=dataclasses.replace(short, ray_start=None))}[target]
    assert row.measured == "14.0 s"  # Ray's start not timed (the sweeps joined a running Ray): no floor


def test_the_seeds_row_carries_the_floor_of_any_batching() -> None:
    from qmoe.bench_seeds import SeedFloorRow

    def floor(model: str, trial_s: float) -> SeedFloorRow:  # 10 x 500 x 1 ms = 5 s
        return SeedFloorRow(model=model, trial_seconds=trial_s, steps=500, gflops_per_step=0.1, mb_per_step=0.0,
                            gemm_gflops=100.0, bandwidth_gbs=30.0, level="L3")

    stacked = StackedStep(seeds=10, batch=64, stacked_ms=200.0, one_ms=20.0)
    row = summary_rows(stacked=stacked, floors=[floor("q4", 1.25), floor("fp32", 1.0)])[0]
    assert row.measured.endswith("; any batching >= 4.00x (q4): ruled out for every model") and row.met is False
    row = summary_rows(stacked=stacked, floors=[floor("q4", 2.5), floor("fp32", 1.0)])[0]
    assert row.measured.endswith("; any batching >= 2.00x (q4): not ruled out for all")
    assert summary_rows(stacked=stacked)[0].measured.endswith("one step")


def test_parts_that_did_not_run_leave_their_targets_out() -> None:
    assert summary_rows() == []
    assert [r.target for r in summary_rows(epochs=[EpochRow("fp32", 0.2, 1.0)])] == []


def test_the_rss_target_is_judged_on_worker_like_processes_with_its_floor() -> None:
    from qmoe.bench_trial import TrialMemoryRow

    def mem(model: str, imports: float, peak: float) -> TrialMemoryRow:
        return TrialMemoryRow(model=model, imports_mb=imports, table_mb=80.0, peak_mb=peak, epochs=3)

    trials = [_trial("q4", 8.0, 1300.0)]  # the bench process's own peak: not what is judged
    row = summary_rows(trials=trials, memory=[mem("q4", 785.0, 970.0), mem("bitnet,q4,q8", 785.0, 1000.0)])[1]
    assert (row.target, row.quantizer) == ("trial peak RSS <= 600 MB", "highest, fresh worker-like process: bitnet,q4,q8")
    assert row.measured == "1000 MB = imports 785 + table 80 + trial 135; imports alone 785 MB: ruled out"
    assert row.met is False
    row = summary_rows(memory=[mem("q4", 300.0, 590.0)])[0]
    assert row.measured == "590 MB = imports 300 + table 80 + trial 210" and row.met is True  # no floor note
    row = summary_rows(trials=trials)[1]  # no fresh processes: the in-process peaks, said so
    assert row.quantizer == "highest (bench process): q4" and row.measured == "1300 MB"


def test_a_qat_row_shows_the_spread_of_its_rounds() -> None:
    rows = summary_rows(epochs=[EpochRow("fp32", 0.2, 1.0, 1.0, 1.0), EpochRow("q4", 0.24, 1.2, 1.17, 1.24)])
    assert [(r.measured, r.met) for r in rows] == [("1.20x (rounds 1.17-1.24)", True)]
    assert summary_rows(epochs=[EpochRow("q4", 0.24, 1.25)])[0].measured == "1.25x"  # no rounds given


def _rounds(*ratios: float) -> EpochRow:
    ratio = sorted(ratios)[len(ratios) // 2]
    return EpochRow("q4", 0.2 * ratio, ratio, min(ratios), max(ratios), ratios)


def test_the_qat_target_is_a_sign_test_on_the_rounds() -> None:
    from scipy.stats import binomtest

    # 9 of 11 rounds at or under 1.2x: one-sided sign test p = P(X >= 9), X ~ Bin(11, 1/2) = 67/2048
    met, how = qat_verdict(_rounds(*[1.15] * 8, 1.2, 1.21, 1.3))
    assert met is True and how == "9 of 11 rounds <= 1.2x: sign test p = 0.033"
    assert 67 / 2048 == binomtest(9, 11, 0.5, alternative="greater").pvalue
    # 8 of 11 is not enough (p = 0.11): the same rounds with one more above
    met, how = qat_verdict(_rounds(*[1.15] * 8, 1.21, 1.21, 1.3))
    assert met is None and how == "8 of 11 rounds <= 1.2x: not shown, sign test p = 0.11 (least possible 0.00049)"
    met, how = qat_verdict(_rounds(*[1.4] * 10, 1.19))  # 10 of 11 above
    assert met is False and how == "1 of 11 rounds <= 1.2x: sign test p = 0.0059"
    # 4 rounds can never decide (0.5^4 > 0.05), even all on one side
    met, how = qat_verdict(_rounds(1.1, 1.1, 1.1, 1.1))
    assert met is None and how.endswith("(least possible 0.062)")
    assert qat_verdict(EpochRow("q4", 0.24, 1.19)) == (True, "")  # no rounds recorded: the figure alone


def test_a_qat_row_that_cannot_decide_says_so() -> None:
    rows = summary_rows(epochs=[_rounds(1.17, 1.18, 1.19, 1.21, 1.22)])
    assert [(r.measured, r.met) for r in rows] == [
        ("1.19x (rounds 1.17-1.22; 3 of 5 rounds <= 1.2x: not shown, sign test p = 0.5 (least possible 0.031))", None)]


def test_the_summary_shows_near_misses_with_enough_digits() -> None:
    short = ShortBench(serial=_times([5.0] * 8), ours=_times([5.0] * 8, wall=20.0 / 0.8495),
                       defaults=_times([9.0] * 8, wall=60.0), first_trial=8.04, command_wall=35.0, slots=2)
    got = {r.target: (r.measured, r.met) for r in summary_rows(short=short)}
    assert got["sweep efficiency, 8 short trials >= 0.85"] == ("0.8495", False)
    assert got["first trial running <= 8 s after the command"] == ("8.04 s", False)
