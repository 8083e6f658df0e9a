"""``qmoe report``: markdown on stdout, files with --out, one-line errors with exit 1."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from qmoe.cli.main import main
from qmoe.record import TrialRecord

F1 = {"fp32": [0.81, 0.84, 0.79, 0.83], "q16": [0.82, 0.85, 0.80, 0.83], "q4": [0.82, 0.84, 0.80, 0.83],
      "q2": [0.78, 0.80, 0.77, 0.79]}


def results(folder: Path, rows: list[dict] | None = None) -> Path:
    """A small results table (4 single models x 4 folds) at ``folder/results.parquet``."""
    if rows is None:
        rows = []
        for model, values in F1.items():
            for fold, f1 in enumerate(values, start=1):
                rows.append({"trial_key": f"{model}-{fold}", "dataset": "synth", "fold": fold, "model": model,
                             "paper_name": f"{model.upper()}-Base", "n_experts": 1, "alpha": 0.0, "top_k": 1,
                             "protocol": "clean", "seed": 0, "status": "ok", "error": "", "f1_macro": f1,
                             "f1_weighted": f1, "accuracy": f1, "latency_p50_us": 100.0 + fold,
                             "latency_p99_us": 130.0 + fold, "size_kb": 100.0, "params": 1000,
                             "n_train": 800, "n_test": 200})
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=TrialRecord.columns()).to_parquet(folder / "results.parquet")
    return folder / "results.parquet"


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_report_path_prints_markdown(capsys, tmp_path: Path) -> None:
    code, out, err = run(capsys, "report", str(results(tmp_path / "bits")))
    assert code == 0, err
    assert out.startswith("# qmoe report: bits")
    assert "## 2. Bit-width ablation (Table 2)" in out and "| synth | Q2-Base |" in out


def test_report_by_name_under_storage_and_env(capsys, tmp_path: Path, monkeypatch) -> None:
    results(tmp_path / "runs" / "bits")
    code, out, _ = run(capsys, "report", "bits", "--storage", str(tmp_path / "runs"), "--correction", "holm")
    assert code == 0 and "p (holm)" in out
    monkeypatch.setenv("QMOE_STORAGE", str(tmp_path / "runs"))
    code, out, _ = run(capsys, "report", "bits")
    assert code == 0 and "p (bonferroni)" in out


def test_report_out_writes_the_files(capsys, tmp_path: Path) -> None:
    out_dir = tmp_path / "report"
    code, out, _ = run(capsys, "report", str(results(tmp_path / "bits")), "--out", str(out_dir))
    assert code == 0
    for name in ("report.md", "report.html", "summary.csv", "bits.csv", "claims.csv"):
        assert (out_dir / name).is_file(), name
    assert str(out_dir / "report.html") in out.splitlines()
    assert "data:image/png;base64," in (out_dir / "report.html").read_text()


def test_names_with_math_html_and_pipes_are_plain_text(capsys, tmp_path: Path) -> None:
    # A dataset and models whose names look like mathtext (an invalid expression: matplotlib's
    # parser would raise), HTML and markdown table syntax: the report is written and shows them
    # as written.
    dataset, model_name = "$x_$ <b>data|set</b>", "<b>$\\nosuch$|Q</b>"
    rows = []
    for model, values in F1.items():
        for fold, f1 in enumerate(values, start=1):
            rows.append({"trial_key": f"{model}-{fold}", "dataset": dataset, "fold": fold, "model": model,
                         "paper_name": f"{model_name} {model}", "n_experts": 1, "alpha": 0.0, "top_k": 1,
                         "protocol": "clean", "seed": 0, "status": "ok", "error": "", "f1_macro": f1,
                         "latency_p50_us": 100.0 + fold, "latency_p99_us": 130.0 + fold, "n_train": 800,
                         "n_test": 200})
    out_dir = tmp_path / "report"
    code, _, err = run(capsys, "report", str(results(tmp_path / "odd", rows)), "--out", str(out_dir), "--margin", "0.02")
    assert code == 0, err
    md = (out_dir / "report.md").read_text()
    page = (out_dir / "report.html").read_text()
    assert "\\$x_\\$ &lt;b&gt;data\\|set&lt;/b&gt;" in md  # in a table cell: HTML, $ and | escaped
    assert "&lt;b&gt;\\$\\\\nosuch\\$\\|Q&lt;/b&gt; q4" in md
    assert "<b>" not in md and "<b>" not in page and "&lt;b&gt;data|set&lt;/b&gt;" in page
    assert "TOST ±0.02" in md
    assert len(list((out_dir / "plots").glob("*.png"))) >= 3  # latency, F1 vs bits, CD diagram


def test_report_format_html_on_stdout(capsys, tmp_path: Path) -> None:
    code, out, _ = run(capsys, "report", str(results(tmp_path / "bits")), "--format", "html")
    assert code == 0 and out.startswith("<!DOCTYPE html>") and "data:image/png;base64," in out


def _bad_inputs(tmp: Path) -> list[tuple[list[str], str]]:
    not_parquet = tmp / "junk" / "results.parquet"
    not_parquet.parent.mkdir()
    not_parquet.write_text("hello")
    other = tmp / "other.parquet"
    pd.DataFrame({"clip_id": ["a"], "e0": [0.1]}).to_parquet(other)
    empty = results(tmp / "empty", rows=[])
    good = str(results(tmp / "good"))
    return [
        (["report", str(tmp / "missing" / "results.parquet")], "missing/results.parquet"),
        (["report", "nosuch", "--storage", str(tmp)], "no sweep 'nosuch'"),
        (["report", str(not_parquet)], "junk/results.parquet is not a Parquet results table"),
        (["report", str(other)], "other.parquet is not a results table"),
        (["report", str(empty)], "has no rows"),
        (["report", good, "--reference", "q3"], "--reference 'q3'"),
        (["report", good, "--correction", "fdr"], "--correction 'fdr'"),
        (["report", good, "--format", "csv"], "give --out DIR"),
        (["report", good, "--margin", "0"], "--margin 0.0"),
    ]


def test_bad_input_is_one_line_on_stderr_and_exit_1(capsys, tmp_path: Path) -> None:
    for args, needle in _bad_inputs(tmp_path):
        code, out, err = run(capsys, *args)
        lines = [line for line in err.splitlines() if line.strip()]
        assert code == 1, (args, err)
        assert len(lines) == 1 and lines[0].startswith("qmoe: error:"), (args, err)
        assert needle in lines[0] and "Traceback" not in err and out == "", (args, err)


@pytest.mark.parametrize("args", [["report"], ["report", "x", "--storage"]])
def test_usage_errors_exit_2(capsys, args: list[str]) -> None:
    code, _, err = run(capsys, *args)
    assert code == 2 and "Traceback" not in err


def test_console_script_bad_path(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "qmoe.cli.main", "report", str(tmp_path / "nope.parquet")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[2])
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.strip().count("\n") == 0 and "nope.parquet" in proc.stderr
