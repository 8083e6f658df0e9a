"""``qmoe tune`` at the command line: bad input, and ``qmoe report`` on a tuning run (no Ray here)."""

from __future__ import annotations

import json

import pytest

from qmoe.cli.main import main
from qmoe.sweeps.tune.space import default_space
from qmoe.sweeps.tune.study import open_study, optuna_quiet
from qmoe.sweeps.tune.tune_store import TuneStore


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


SPACES = {
    "unknown.toml": ("[params]\nlearning_rate = { low = 1e-4, high = 1e-2 }\n", "[params] learning_rate: unknown parameter"),
    "empty.toml": ("[params]\ndropout = { low = 0.3, high = 0.3 }\n", "[params] dropout: empty range"),
    "inverted.toml": ("[params]\nlr = { low = 1e-2, high = 1e-4 }\n", "[params] lr: low 0.01 > high 0.0001"),
    "type.toml": ("[params]\nbatch_size = { choices = ['big', 64] }\n", "batch_size takes whole numbers"),
}


@pytest.mark.parametrize("args, code, needle", [
    (["tune", "--model", "q4", "--trials", "0"], 1, "--trials 0 is invalid"),
    (["tune", "--model", "q4", "--trials", "-3"], 1, "--trials -3 is invalid"),
    (["tune", "--trials", "5"], 1, "--model is required"),
    (["tune", "--model", "q3"], 1, "unknown quantizer 'q3'"),
    (["tune", "--model", "q4,q4"], 1, "'q4' is given twice"),
    (["tune", "--model", "q4", "--folds", "9"], 1, "fold 9"),
    (["tune", "--model", "q4", "--dataset", "nope"], 1, "nope"),
    (["tune", "--model", "q4", "--space", "missing.toml"], 1, "missing.toml: no such file"),
    (["tune", "--model", "q4", "--name", "../up"], 1, "--name"),
    (["tune", "--model", "q4", "--address", "127.0.0.1:9"], 1, "cannot reach"),
    (["tune", "--resume", "nope"], 1, "no tuning run 'nope'"),
    (["tune", "--resume", "nope", "--model", "q4", "--seed", "2"], 1, "leave out --model, --seed"),
    *[(["tune", "--model", "q4", "--space", name], 1, needle) for name, (_, needle) in SPACES.items()],
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(capsys, synth_table, tmp_path, monkeypatch,
                                                           args, code, needle) -> None:
    monkeypatch.chdir(tmp_path)
    spaces = tmp_path.parent / f"{tmp_path.name}-spaces"
    spaces.mkdir()
    for name, (text, _) in SPACES.items():
        (spaces / name).write_text(text)
    args = [str(spaces / a) if a in SPACES else a for a in args]
    got, out, err = run(capsys, *args, "--storage", str(tmp_path / "runs"))
    assert got == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("qmoe: error:") and needle in lines[0] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def fabricate(storage, name: str = "done") -> TuneStore:
    """A finished 4-trial tuning run, written with the store and Optuna directly (no Ray)."""
    space = default_space(1)
    point = space.default_point(False)
    store = TuneStore(storage, name)
    store.create({"name": name, "kind": "tune", "model": "q4", "experts": ["q4"], "folds": [1, 2], "trials": 4,
                  "seed": 0, "table": {"name": "synth", "dataset": "synth", "data": None, "content_hash": "abc"},
                  "space": space.to_dict(), "default_point": point})
    dists = {p.name: p.distribution() for p in space.params}
    rows = []
    with store.lock(), optuna_quiet():
        study = open_study(store)
        study.enqueue_trial(point)
        for value, status in ((0.70, "complete"), (0.55, "stopped"), (0.78, "complete"), (0.74, "complete")):
            trial = study.ask(dists)
            study.tell(trial, value)
            rows.append({"trial": trial.number, "status": status, "objective": value, "epochs": 5,
                         "is_default": trial.number == 0, "params": space.values_json(trial.params),
                         "fold_f1": json.dumps({"1": value + 0.01, "2": value - 0.01})})
    store.write_best(store.read_manifest(), store.upsert(rows))
    return store


def test_report_of_a_tuning_run(capsys, tmp_path) -> None:
    store = fabricate(tmp_path / "runs")
    code, out, err = run(capsys, "report", "done", "--storage", str(tmp_path / "runs"))
    assert code == 0, err
    assert "Tuning: best so far vs trial number" in out and "Tuning: parameter importances" in out
    assert "| 0 (default) | complete | 0.7000 | 0.7000 |" in out
    assert "| 3 | complete | 0.7400 | 0.7800 |" in out  # best so far carries trial 2's 0.78
    assert "| mean validation macro-F1 | 0.7800 | 0.7000 |" in out
    assert "4 of 4 finished" in out and str(store.best_path) in out
    code, _, err = run(capsys, "report", "done", "--storage", str(tmp_path / "runs"), "--out", str(tmp_path / "r"))
    assert code == 0, err
    assert (tmp_path / "r" / "plots" / "tuning-done.png").stat().st_size > 1000
    assert (tmp_path / "r" / "tuning-importance.csv").is_file()


def test_resume_of_a_finished_run_runs_nothing(capsys, tmp_path) -> None:
    fabricate(tmp_path / "runs")
    code, out, err = run(capsys, "tune", "--resume", "done", "--storage", str(tmp_path / "runs"))
    assert code == 0, err
    assert "4/4 trials finished; nothing left to run" in err
    assert "best: trial 2, mean validation macro-F1 0.7800; default settings (trial 0): 0.7000 (+0.0800)" in out
    code, _, err = run(capsys, "resume", "done", "--storage", str(tmp_path / "runs"))
    assert code == 1 and "is a tuning run, not a sweep: continue it with 'qmoe tune --resume done'" in err
