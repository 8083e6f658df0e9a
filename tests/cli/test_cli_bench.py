"""The Ray parts of `qmoe bench`."""

from __future__ import annotations

import pytest


@pytest.mark.slow
@pytest.mark.ray
def test_sweep_bench_runs_the_real_command_and_reads_its_figures() -> None:
    from cli.bench_sweep import sweep_bench

    table = sweep_bench()
    cells = [c._cells for c in table.columns]  # noqa: SLF001 - rich keeps cells per column
    assert cells[0] == ["8"]
    efficiency, first = float(cells[4][0]), float(cells[5][0])
    assert 0 < efficiency <= 1.05 and first > 0
