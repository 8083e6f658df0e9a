"""Trial timing on the benchmark-sized table: real trials, sane rows (no timing assertion)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from qmoe.bench import Bandwidth
from qmoe.bench_seeds import seed_floors
from qmoe.bench_trial import (DEFAULT_MODELS, MIXTURE_ALPHA, WORKER_IMPORTS, bench_trials, fresh_trial_memory,
                              trial_spec)
from qmoe.data.sized import SizedConfig
from qmoe.errors import QmoeError

TINY = SizedConfig(n_clips=200, dim=64, n_classes=5)


def test_rows_are_sane_for_single_models_and_a_mixture(tmp_path: Path) -> None:
    models = ("fp32", "q4", "bitnet,q4,q8")
    probes: list[int] = []
    rows = bench_trials(tmp_path, models, config=TINY, measure_energy=False, latency_runs=20,
                        between=lambda: probes.append(len(probes)))
    assert [r.model for r in rows] == list(models)
    assert probes == [0, 1, 2]  # called once before each trial
    for r in rows:
        assert r.epochs >= 1 and r.train_seconds > 0
        assert 0 < r.train_seconds < r.seconds
        assert math.isclose(r.measure_seconds, r.seconds - r.train_seconds)
        assert math.isclose(r.seconds_per_epoch, r.train_seconds / r.epochs)
        assert 1 / TINY.n_classes < r.f1_macro <= 1.0  # learns above chance
        assert r.peak_rss_mb > 0
        assert r.batch == trial_spec(r.model).train.batch_size
        assert r.steps % r.epochs == 0 and r.steps >= r.epochs  # whole epochs of whole batches
        # the trial's own peak over what the process held as it started (imports: torch alone ~500 MB)
        assert 0 < r.rss_before_mb and math.isclose(r.peak_increment_mb, r.peak_rss_mb - r.rss_before_mb)
        assert r.peak_increment_mb < r.peak_rss_mb
    # the seed floor from these very rows (qmoe.bench_seeds): one row each, the measured trial
    bw = Bandwidth(l2_gbs=40.0, l3_gbs=20.0, dram_gbs=10.0, l2_bytes=1 << 20, l3_bytes=1 << 30)
    floors = seed_floors(rows, bw, in_dim=TINY.dim, n_classes=TINY.n_classes, gemm_gflops=50.0)
    assert [(f.model, f.trial_seconds, f.steps) for f in floors] == [(r.model, r.seconds, r.steps) for r in rows]
    assert floors[2].gflops_per_step > floors[0].gflops_per_step  # three experts and a router
    assert [r.is_mixture for r in rows] == [False, False, True]
    assert rows[2].meets_target is None and isinstance(rows[0].meets_target, bool)
    assert list(tmp_path.glob("sized/*.parquet"))  # the table went to the cache dir given


def test_specs_use_the_sized_dataset_and_curious_mixtures() -> None:
    single, moe = trial_spec("q8"), trial_spec("bitnet,q4,q8", measure_energy=False)
    assert single.dataset == moe.dataset == "esc50-sized"
    assert single.alpha == 0.0 and single.experts == ("q8",)
    assert moe.alpha == MIXTURE_ALPHA and moe.experts == ("bitnet", "q4", "q8") and not moe.measure_energy
    assert "bitnet,q4,q8" in DEFAULT_MODELS and {"fp32", "ptq8", "binary"} <= set(DEFAULT_MODELS)


def test_unknown_model_is_a_qmoe_error(tmp_path: Path) -> None:
    with pytest.raises(QmoeError, match="q3"):
        bench_trials(tmp_path, ("q3",), config=TINY, measure_energy=False)


def test_fresh_trial_memory_runs_the_capped_trial_in_a_worker_like_process(tmp_path: Path) -> None:
    row = fresh_trial_memory(tmp_path, "q4", config=TINY, epochs=2)
    assert row.model == "q4" and row.epochs == 2  # the cap applied (patience is longer)
    assert row.imported == WORKER_IMPORTS and "ray.tune" in row.imported
    assert row.imports_mb > 100  # torch alone holds more than this in any build
    assert row.peak_mb >= row.imports_mb + row.table_mb
    assert math.isclose(row.increment_mb, row.peak_mb - row.imports_mb - row.table_mb) and row.increment_mb >= 0
    assert list(tmp_path.glob("sized/*.parquet"))  # the child built the table where it was told


def test_a_failing_memory_probe_is_one_qmoe_error(tmp_path: Path) -> None:
    with pytest.raises(QmoeError, match="memory probe of q3 failed"):
        fresh_trial_memory(tmp_path, "q3", config=TINY, epochs=1)
