"""Finding and reading a results table; errored rows are kept apart; bad input is a DataError."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from analysis_fakes import F1, MIX, frame, make_row, ok_row

from qmoe.analysis.load import load_results, resolve_source
from qmoe.analysis.report import build_report
from qmoe.errors import DataError
from qmoe.record import TrialRecord


def test_resolve_by_name_folder_and_file(write_table, tmp_path: Path) -> None:
    path = write_table([ok_row("q4", 1, 0.8)], name="alpha")
    assert resolve_source("alpha", tmp_path) == path
    assert resolve_source(path.parent, "/nonexistent") == path
    assert resolve_source(str(path), "/nonexistent") == path


@pytest.mark.parametrize("target, needle", [
    ("nosuch", "no sweep 'nosuch' in"),
    ("some/dir/results.parquet", "no results table at some/dir/results.parquet"),
])
def test_missing_sweep_or_path_names_it_and_the_fix(write_table, tmp_path: Path, target: str, needle: str) -> None:
    write_table([ok_row("q4", 1, 0.8)], name="alpha")
    with pytest.raises(DataError, match=needle) as err:
        resolve_source(target, tmp_path)
    assert "\n" not in str(err.value)
    if target == "nosuch":
        assert "sweeps there: alpha" in str(err.value) and "--storage" in str(err.value)


def test_sweep_folder_without_results(tmp_path: Path) -> None:
    (tmp_path / "half").mkdir()
    with pytest.raises(DataError, match="qmoe resume half"):
        resolve_source("half", tmp_path)


def test_a_file_that_is_not_parquet(tmp_path: Path) -> None:
    bad = tmp_path / "results.parquet"
    bad.write_text("not parquet")
    with pytest.raises(DataError, match=f"{bad} is not a Parquet results table"):
        load_results(bad)


def test_a_parquet_that_is_not_a_results_table(tmp_path: Path) -> None:
    other = tmp_path / "emb.parquet"
    pd.DataFrame({"clip_id": ["a"], "label": [0], "e0": [0.1]}).to_parquet(other)
    with pytest.raises(DataError, match="is not a results table: column.*trial_key"):
        load_results(other)


def test_an_empty_table(tmp_path: Path) -> None:
    empty = tmp_path / "results.parquet"
    frame([]).to_parquet(empty)
    with pytest.raises(DataError, match="has no rows"):
        build_report(empty, plots=False)


def test_errored_rows_are_counted_and_listed_never_averaged(write_table) -> None:
    rows = [ok_row("q4", f, F1["q4"][f - 1]) for f in (1, 2, 3, 4)]
    # An error row that (wrongly) carries a number: it must still not be averaged in.
    rows.append(make_row(model="q4", fold=5, status="error", error="RuntimeError: NaN loss\nTraceback ...",
                         f1_macro=0.0))
    report = build_report(write_table(rows), plots=False)
    summary = report.section("summary").tables[0].data
    assert summary["f1_macro_n"].iloc[0] == 4 and summary["n_errored"].iloc[0] == 1
    assert summary["f1_macro_mean"].iloc[0] == pytest.approx(np.mean(F1["q4"][:4]))
    errors = report.section("errors").tables[0].display
    assert list(errors["fold"]) == ["5"] and "RuntimeError: NaN loss Traceback" in errors["error"].iloc[0]
    assert any("1 errored" in h for h in report.header)


def test_duplicate_rows_keep_the_latest(write_table) -> None:
    rows = [ok_row("q4", 1, 0.5, trial_key="a", finished_at="2024-01-01T00:00:00"),
            ok_row("q4", 1, 0.7, trial_key="b", finished_at="2024-01-02T00:00:00")]
    results = load_results(write_table(rows))
    assert len(results.ok) == 1 and results.ok["f1_macro"].iloc[0] == 0.7
    assert any("duplicate" in n for n in results.notes)


def test_labels_and_missing_columns(tmp_path: Path) -> None:
    rows = frame([ok_row("q4", 1, 0.8), ok_row("bitnet,q4,q8", 1, 0.7, alpha=0.2)])
    path = tmp_path / "results.parquet"
    rows.drop(columns=["peak_rss_mb", "paper_name"]).to_parquet(path)
    results = load_results(path)
    assert sorted(results.ok["label"]) == ["BitNet-Q4/8-QMoE-C α=0.2", "Q4-Base"]
    assert list(results.ok["kind"]) == ["single", "mixture"]
    assert results.ok["bits"].iloc[0] == 4
    assert any("peak_rss_mb" in n for n in results.notes)
    assert set(TrialRecord.columns()) <= set(results.ok.columns)


def test_variants_of_one_model_get_distinct_labels_and_seeds_are_replicates(write_table) -> None:
    rows = [ok_row("q4", 1, 0.8, hparams_source="default"), ok_row("q4", 1, 0.81, hparams_source="tuned", trial_key="t"),
            ok_row("q4", 1, 0.82, seed=1, trial_key="s1"),
            ok_row(MIX, 1, 0.7, alpha=0.2, curiosity="kl", trial_key="k"),
            ok_row(MIX, 1, 0.71, alpha=0.2, curiosity="entropy", trial_key="e")]
    ok = load_results(write_table(rows)).ok
    assert sorted(ok["label"].unique()) == ["BitNet-Q4/8-QMoE-C α=0.2 [entropy]", "BitNet-Q4/8-QMoE-C α=0.2 [kl]",
                                            "Q4-Base [hp default]", "Q4-Base [hp tuned]"]
    # a second seed is a replicate of the same configuration, not a configuration of its own
    default = ok[ok["label"] == "Q4-Base [hp default]"]
    assert default["config"].nunique() == 1 and sorted(default["seed"]) == [0, 1]


def test_a_table_without_split_seed_or_curiosity_has_one_split_and_kl(write_table) -> None:
    ok = load_results(write_table([ok_row(MIX, f, 0.7, alpha=0.2) for f in (1, 2)])).ok
    assert list(ok["split_seed"]) == [0, 0] and list(ok["curiosity"]) == ["kl", "kl"]
    assert "[kl]" not in ok["label"].iloc[0]  # one variant: no suffix


def test_cells_differing_in_seed_or_split_are_not_duplicates(write_table) -> None:
    rows = [ok_row("q4", 1, 0.8, seed=s, split_seed=x, trial_key=f"{s}-{x}") for s in (0, 1) for x in (0, 1)]
    assert len(load_results(write_table(rows)).ok) == 4


def test_a_table_of_only_errors_says_there_is_nothing_to_analyse(write_table) -> None:
    rows = [make_row(model="q4", fold=f, status="error", error="killed") for f in (1, 2)]
    report = build_report(write_table(rows), plots=False)
    assert len(report.section("errors").tables[0].data) == 2
    assert "none of the 2 trial(s) finished" in report.section("results").reason


def test_analysis_imports_no_ray_sweeps_cli_and_no_matplotlib_without_plots(write_table) -> None:
    import subprocess
    import sys

    path = write_table([ok_row("q4", f, v) for f, v in enumerate(F1["q4"], 1)])
    code = ("import sys; from qmoe.analysis.report import build_report; from qmoe.analysis.render import to_markdown; "
            f"to_markdown(build_report({str(path)!r}, plots=False)); "
            "print(sorted(m for m in ('ray', 'qmoe.sweeps', 'qmoe.cli', 'matplotlib', 'torch') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "[]"
