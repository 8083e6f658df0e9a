"""The seed-batching table of ``qmoe bench``: the target is never marked met (not built), and
the bound says whether it rules batching out."""

from __future__ import annotations

from rich.console import Console

from qmoe.bench_seeds import SeedFloorRow
from qmoe.cli.bench_tables import seeds_table


def _render(rows: list[SeedFloorRow]) -> str:
    console = Console(width=250, record=True)
    console.print(seeds_table(rows))
    return console.export_text()


def test_seed_table_marks_the_target_not_met_and_the_bound() -> None:
    common = dict(steps=500, gflops_per_step=0.3, mb_per_step=34.0, gemm_gflops=150.0, bandwidth_gbs=34.0)
    text = _render([SeedFloorRow(model="q4", trial_seconds=4.0, **common),
                    SeedFloorRow(model="bitnet,q4,q8", trial_seconds=50.0, **common)])
    q4 = next(line for line in text.splitlines() if " q4 " in line)
    moe = next(line for line in text.splitlines() if "bitnet,q4,q8" in line)
    assert "3.75x" in q4 and "yes" in q4 and "NO" in q4  # bound above 3x: ruled out; not met
    assert "0.30x" in moe and "NO" in moe and "yes" not in moe  # bound below: nothing ruled out, still not met
    assert "150 GFLOP/s" in text and "not built" in text
    assert "both rates measured here" in " ".join(text.split())
    probed = " ".join(_render([SeedFloorRow(model="q4", trial_seconds=4.0, probes=11, **common)]).split())
    assert "both rates the best of 11 probes, before each trial above and after the last" in probed


def test_seed_table_carries_the_measured_stacked_step() -> None:
    from qmoe.bench_seeds import StackedStep

    console = Console(width=400, record=True)
    common = dict(steps=500, gflops_per_step=0.3, mb_per_step=34.0, gemm_gflops=150.0, bandwidth_gbs=34.0)
    console.print(seeds_table([SeedFloorRow(model="fp32", trial_seconds=4.0, **common)],
                              StackedStep(seeds=10, batch=64, stacked_ms=210.0, one_ms=20.0)))
    text = " ".join(console.export_text().split())
    assert "10 MLPs stacked into one model" in text and "210.0 ms, 10.5x one MLP's step (20.0 ms)" in text
