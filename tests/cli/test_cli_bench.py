"""The tables of `qmoe bench` (qmoe.cli.bench_tables): the figures of one run, targets marked."""

from __future__ import annotations

import dataclasses

from qmoe.sweeps.bench.jobs import RunTimes, TrialTime
from qmoe.sweeps.bench.sweep_efficiency import ShortBench, SizedBench


def cells(table) -> dict[str, list[str]]:
    return {c.header: c._cells for c in table.columns}  # noqa: SLF001 - rich keeps cells per column


def times(label: str, seconds: list[float], wall: float | None = None) -> RunTimes:
    return RunTimes(label=label, wall_seconds=wall,
                    trials=tuple(TrialTime(trial_key=str(i), model="q4", seconds=s) for i, s in enumerate(seconds)))


def test_short_table_compares_ours_with_the_defaults() -> None:
    from qmoe.cli.bench_tables import short_table

    serial = times("one by one", [5.0] * 8)  # 40 s: 20 s of wall at best on 2 slots
    table = short_table(ShortBench(serial=serial, ours=times("ours", [5.5] * 8, wall=25.0),
                                   defaults=times("defaults", [9.0] * 8, wall=60.0), first_trial=8.0,
                                   command_wall=35.0, slots=2))
    got = cells(table)
    assert got["run"] == ["one by one, 1 process", "qmoe sweep (ours)", "Ray Tune defaults"]
    assert got["efficiency"] == ["-", "0.8", "0.3333"]
    assert got["vs one by one"] == ["1.00x", "1.10x", "1.80x"]
    assert "ours / defaults = 2.40x (target >= 2x: yes)" in table.caption
    assert "our efficiency 0.8 (target >= 0.85: NO)" in table.caption
    assert "first trial running 8 s after our command started (target <= 8 s: yes)" in table.caption
    assert "Ceiling" not in table.caption  # the imports were not timed


def test_short_table_states_the_ceiling_the_workers_imports_leave() -> None:
    from qmoe.cli.bench_tables import short_table

    table = short_table(ShortBench(serial=times("one by one", [5.0] * 8), ours=times("ours", [5.5] * 8, wall=25.0),
                                   defaults=times("defaults", [9.0] * 8, wall=60.0), first_trial=8.0,
                                   command_wall=35.0, slots=2, worker_imports=4.0))
    assert "at least 4 s (the least of 3 fresh processes)" in table.caption
    assert "wall >= that + sum / 2, so efficiency <= 0.8333: the target 0.85 is ruled out here" in table.caption
    assert "Floor" not in table.caption  # Ray's start was not timed


def test_short_table_states_the_first_trials_floor() -> None:
    from qmoe.cli.bench_tables import short_table

    short = ShortBench(serial=times("one by one", [5.0] * 8), ours=times("ours", [5.5] * 8, wall=25.0),
                       defaults=times("defaults", [9.0] * 8, wall=60.0), first_trial=14.0, command_wall=35.0,
                       slots=2, worker_imports=5.0, ray_start=4.5)
    caption = short_table(short).caption
    assert ("Floor: Tune asks for a worker only once Ray is up, 4.5 s after a fresh process starts (the least of 2), "
            "and the worker's imports follow, so the first trial runs >= 9.5 s after the command started: "
            "the target 8 s is ruled out here.") in caption
    quick = short_table(dataclasses.replace(short, ray_start=2.0)).caption  # 7 s: not ruled out
    assert ">= 7 s after the command started." in quick and "8 s is ruled out" not in quick


def test_sized_table_extrapolates_the_paper_grid() -> None:
    from qmoe.cli.bench_tables import sized_table

    serial = times("one by one", [40.0] * 15)  # 600 s: 300 s of wall at best
    table = sized_table(SizedBench(reference=serial, ours=times("ours", [41.0] * 15, wall=300.0 / 0.96), serial=True,
                                   command_wall=400.0, table_name="t.parquet", slots=2))
    got = cells(table)
    assert got["efficiency"] == ["0.96"] and got["full grid (15 slices) h"] == ["1.302"]
    assert got["vs trials in sweep"] == ["0.984"]  # 307.5 s a slot inside the sweep in 312.5 s of wall
    assert got["mean in sweep vs one by one"] == ["1.02x"]
    assert "what start-up, gaps and the tail cost" in table.caption
    assert "target >= 0.9: yes" in table.caption and "target <= 2 h: yes" in table.caption
    quick = sized_table(SizedBench(reference=serial, ours=times("ours", [42.0] * 15, wall=700.0), serial=False,
                                   command_wall=720.0, table_name="t.parquet", slots=2))
    assert "sum in sweep s (reference)" in cells(quick) and "NO" in quick.caption


def test_memory_table_shows_a_fresh_trials_increment_over_its_imports_and_table() -> None:
    from qmoe.bench import ImportRow
    from qmoe.bench_trial import TrialMemoryRow
    from qmoe.cli.bench_tables import memory_table

    fresh = TrialMemoryRow(model="q4", imports_mb=790.0, table_mb=80.0, peak_mb=1070.0, epochs=3)
    assert fresh.increment_mb == 200.0
    table = memory_table([ImportRow(what="torch", modules=("torch",), rss_mb=510.0, anon_mb=281.0, file_mb=229.0)],
                         [1357.0, 1391.0], [fresh])
    got = cells(table)
    assert got["RSS"] == ["510", "1357-1391", "790; +80; 1070 (+200)"]
    assert "one q4 trial (3 epochs) alone in a fresh process: after ray.tune" in got["process"][2]
    assert got["process"][2].endswith("target met: NO")  # judged on the worker-like process
    assert "target met" not in got["process"][1]  # not on the bench process's own peaks
    alone = cells(memory_table([], [500.0], []))
    assert alone["process"][0].endswith("target met: yes)")  # without fresh trials, on what there is


def test_undecided_targets_read_not_shown_and_are_counted_apart() -> None:
    from qmoe.bench import EpochRow, TargetRow
    from qmoe.cli.bench_tables import epochs_table, summary_table

    rows = [TargetRow("a", "q1", "1x", True), TargetRow("b", "q2", "2x", False), TargetRow("c", "q4", "3x", None)]
    table = summary_table(rows)
    assert table.title == "All targets of this run: 1 of 3 met, 1 not shown (the measurement could not decide)"
    assert cells(table)["met"] == ["yes", "NO", "not shown"]
    assert summary_table(rows[:2]).title == "All targets of this run: 1 of 2 met"
    epochs = [EpochRow("fp32", 0.2, 1.0, 1.0, 1.0, (1.0,) * 5),
              EpochRow("q4", 0.24, 1.19, 1.17, 1.22, (1.17, 1.18, 1.19, 1.21, 1.22)),  # both sides
              EpochRow("q8", 0.23, 1.15, 1.14, 1.16, (1.14, 1.15, 1.15, 1.16, 1.16)),  # all 5 under: p 1/32
              EpochRow("ptq8", 0.2, 1.0)]  # post-training: no QAT target
    table = epochs_table(epochs, 5)
    assert cells(table)["QAT <= 1.2x fp32"] == ["-", "not shown", "yes", "-"]
    assert "between two fp32 epochs" in table.caption and "p <= 0.05" in table.caption
