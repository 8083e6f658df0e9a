"""The Ray parts of `qmoe bench`: the sweep-efficiency tables (fake trials unless marked slow)."""

from __future__ import annotations

import pytest

from sweeps.bench_jobs import RunTimes, TrialTime

FAKE = {"QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "0.05"}


def cells(table) -> dict[str, list[str]]:
    return {c.header: c._cells for c in table.columns}  # noqa: SLF001 - rich keeps cells per column


def times(label: str, seconds: list[float], wall: float | None = None) -> RunTimes:
    return RunTimes(label=label, wall_seconds=wall,
                    trials=tuple(TrialTime(trial_key=str(i), model="q4", seconds=s) for i, s in enumerate(seconds)))


def test_short_table_compares_ours_with_the_defaults() -> None:
    from cli.bench_sweep import short_table

    serial = times("one by one", [5.0] * 8)  # 40 s: 20 s of wall at best on 2 slots
    table = short_table(serial, times("ours", [5.5] * 8, wall=25.0), times("defaults", [9.0] * 8, wall=60.0),
                        first_trial=8.0, command_wall=35.0)
    got = cells(table)
    assert got["run"] == ["one by one, 1 process", "qmoe sweep (ours)", "Ray Tune defaults"]
    assert got["efficiency"] == ["-", "0.8", "0.3333"]
    assert got["vs one by one"] == ["1.00x", "1.10x", "1.80x"]
    assert "ours / defaults = 2.40x (target >= 2x: yes)" in table.caption


def test_sized_table_extrapolates_the_paper_grid() -> None:
    from cli.bench_sweep import sized_table

    serial = times("one by one", [40.0] * 15)  # 600 s: 300 s of wall at best
    table = sized_table(serial, times("ours", [42.0] * 15, wall=375.0), serial=True, command_wall=400.0,
                        table_name="t.parquet")
    got = cells(table)
    assert got["efficiency"] == ["0.8"] and got["full grid (15 slices) h"] == ["1.562"]
    assert "target >= 0.8: yes" in table.caption and "target <= 2 h: yes" in table.caption
    quick = sized_table(serial, times("ours", [42.0] * 15, wall=700.0), serial=False, command_wall=720.0,
                        table_name="t.parquet")
    assert "sum in sweep s (reference)" in cells(quick) and "NO" in quick.caption


@pytest.mark.ray
def test_sweep_bench_runs_the_three_ways_with_fake_trials(ray_cluster, synth_table, monkeypatch) -> None:
    from cli.bench_sweep import sweep_bench

    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)
    got = cells(sweep_bench(address=ray_cluster))
    assert got["trials"] == ["8", "8", "8"]
    assert all(float(e) > 0 for e in got["efficiency"][1:]) and float(got["first trial running after s"][1]) > 0


@pytest.mark.ray
def test_sized_bench_runs_the_table1_slice_with_fake_trials(ray_cluster, tmp_path, monkeypatch) -> None:
    from cli.bench_sweep import sized_bench
    from qmoe.data.sized import SizedConfig, sized_table_path

    for key, value in FAKE.items():
        monkeypatch.setenv(key, value)
    tiny = sized_table_path(tmp_path, SizedConfig(n_clips=50, dim=8, n_classes=5, latent=4))
    got = cells(sized_bench(data=tiny, address=ray_cluster))
    assert got["trials"] == ["15"] and 0 < float(got["efficiency"][0])


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_bench_with_real_trials() -> None:
    from cli.bench_sweep import sweep_bench

    got = cells(sweep_bench())
    assert got["trials"] == ["8", "8", "8"]
    assert all(0 < float(e) <= 1.05 for e in got["efficiency"][1:])
