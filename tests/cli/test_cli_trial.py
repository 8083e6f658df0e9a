"""``qmoe trial`` and the error boundary of the CLI."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from qmoe.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_trial_json_prints_one_record(capsys, synth_table) -> None:
    code, out, _ = run(capsys, "trial", "--model", "q8", "--fold", "2", "--no-energy", "--json")
    assert code == 0
    row = json.loads(out)
    assert row["model"] == "q8" and row["fold"] == 2 and row["status"] == "ok"
    assert 0 < row["f1_macro"] <= 1


@pytest.mark.parametrize("args, code, needle", [
    (["trial", "--model", "q3", "--no-energy"], 1, "--model"),
    (["trial", "--model", "bitnet,q4", "--alpha", "-1", "--no-energy"], 1, "--alpha"),
    (["trial", "--fold", "9", "--no-energy"], 1, "fold 9"),
    (["trial", "--data", "/nonexistent/t.parquet", "--no-energy"], 1, "t.parquet"),
    (["trial", "--dataset", "nope", "--no-energy"], 1, "synth"),
    (["trial", "--fold", "x"], 2, "--fold"),
    (["trial", "--model", "q4,,q8"], 1, "--model"),
    (["nosuchcommand"], 2, "nosuchcommand"),
])
def test_bad_input_is_one_line_and_nonzero(capsys, args, code, needle) -> None:
    got, out, err = run(capsys, *args)
    assert got == code
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert needle in lines[0] and "Traceback" not in err
    assert lines[0].startswith("qmoe: error:")


def test_console_script_exit_code_and_no_traceback(tmp_path) -> None:
    bad = tmp_path / "bad.parquet"
    bad.write_text("not parquet")
    proc = subprocess.run([sys.executable, "-m", "qmoe.cli.main", "trial", "--data", str(bad)],
                          capture_output=True, text=True)
    assert proc.returncode == 1
    assert "bad.parquet" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize("energy, warmed", [("--energy", 1), ("--no-energy", 0)])
def test_trial_starts_the_energy_probe_first_only_when_it_measures_energy(capsys, monkeypatch, energy,
                                                                          warmed) -> None:
    from qmoe.energy import EnergyMeter

    calls = []
    monkeypatch.setattr(EnergyMeter, "warm_up", classmethod(lambda cls: calls.append(cls)))
    code, _, err = run(capsys, "trial", "--dataset", "nope", energy)
    assert code == 1 and "nope" in err and len(calls) == warmed  # started before the table loads
