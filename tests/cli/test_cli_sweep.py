"""``qmoe sweep``, ``resume`` and ``status`` at the command line: dry runs and bad input.

Sweeps that run trials are tested in tests/sweeps (they need Ray); here nothing starts Ray.
"""

from __future__ import annotations


import pytest

from qmoe.cli.main import main


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.parametrize("args, count", [
    (["sweep", "alpha", "--values", "0.02,0.2,0.3"], 20),
    (["sweep", "alpha", "--values", "0.2,0.3", "--no-baseline", "--folds", "1,3-4"], 6),
    (["sweep", "alpha", "--experts", "bitnet,ptq8"], 20),
    (["sweep", "bits", "--values", "1,2,4,8,16"], 40),
    (["sweep", "moe"], 40),
    (["sweep", "paper", "--dataset", "synth"], 100),
    (["sweep", "run", "sweeps/specs/alpha.toml", "--folds", "2"], 4),
])
def test_dry_run_prints_the_trials_and_their_count(capsys, synth_table, tmp_path, args, count) -> None:
    code, out, err = run(capsys, *args, "--dry-run", "--storage", str(tmp_path / "runs"))
    assert code == 0, err
    assert out.strip().endswith(f"{count} trials")
    assert not (tmp_path / "runs").exists()


def test_paper_notes_unprepared_datasets(capsys, synth_table, tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("QMOE_CACHE", str(tmp_path / "empty-cache"))
    code, out, err = run(capsys, "sweep", "paper", "--dry-run")
    assert code == 1
    assert "none of the datasets esc50, quinn, urbansound8k is prepared" in err


@pytest.mark.parametrize("args, code, needle", [
    (["sweep", "nope"], 2, "nope"),
    (["sweep", "alpha", "--experts", "bitnet,q3"], 1, "'q3'"),
    (["sweep", "alpha", "--experts", "q4"], 1, "--experts"),
    (["sweep", "alpha", "--values", ""], 1, "--values is empty"),
    (["sweep", "alpha", "--values", "0.2,abc"], 1, "'abc'"),
    (["sweep", "alpha", "--values", "0.2,,0.3"], 1, "--values"),
    (["sweep", "alpha", "--values", "-0.1"], 1, "alpha -0.1 is negative"),
    (["sweep", "alpha", "--values=0.3,-1"], 1, "alpha -1.0 is negative"),
    (["sweep", "bits", "--values", "3"], 1, "no 3-bit quantizer"),
    (["sweep", "bits", "--values", "4.5"], 1, "'4.5'"),
    (["sweep", "alpha", "--folds", "7"], 1, "fold 7"),
    (["sweep", "alpha", "--folds", "x"], 1, "--folds"),
    (["sweep", "alpha", "--dataset", "nope"], 1, "synth"),
    (["sweep", "alpha", "--address", "127.0.0.1:9"], 1, "cannot reach"),
    (["sweep", "alpha", "--address", "nonsense"], 1, "--address"),
    (["sweep", "alpha", "--storage", "/proc/qmoe-runs"], 1, "--storage"),
    (["sweep", "alpha", "--name", "../escape"], 1, "--name"),
    (["sweep", "alpha", "--protocol", "sloppy"], 1, "protocol 'sloppy'"),
    (["sweep", "alpha", "--cpus-per-trial", "0"], 2, "--cpus-per-trial"),
    (["sweep", "alpha", "--latency", "foo"], 1, "--latency: 'foo' is unknown; known: in-sweep, isolated"),
    (["sweep", "bits", "--save-models", "--latency", "Isolated"], 1, "--latency: 'Isolated'"),
    (["resume", "nope", "--latency", "isolated"], 2, "--latency"),
    (["sweep", "run", "missing.toml"], 1, "missing.toml"),
    (["resume", "nope"], 1, "no sweep 'nope'"),
    (["status", "nope"], 1, "no sweep 'nope'"),
])
def test_bad_input_is_one_line_nonzero_and_writes_nothing(capsys, synth_table, tmp_path, monkeypatch,
                                                           args, code, needle) -> None:
    monkeypatch.chdir(tmp_path)  # the default --storage ./qmoe-runs lands here
    if "--storage" not in args:
        args = [*args, "--storage", str(tmp_path / "runs")]
    got, out, err = run(capsys, *args)
    assert got == code, err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("qmoe: error:") and needle in lines[0] and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written


def test_bad_spec_and_hparams_files(capsys, synth_table, tmp_path) -> None:
    spec = tmp_path / "s.toml"
    spec.write_text("[[grid]]\nmodels = ['q4']\nalphas = [0.3]\n")
    code, _, err = run(capsys, "sweep", "run", str(spec), "--dry-run")
    assert code == 1 and "mixtures only" in err and str(spec) in err
    hp = tmp_path / "hp.toml"
    hp.write_text("learning_rate = 0.1\n")
    code, _, err = run(capsys, "sweep", "alpha", "--hparams", str(hp), "--dry-run")
    assert code == 1 and "unknown hyper-parameter 'learning_rate'" in err


def test_existing_name_is_refused(capsys, synth_table, tmp_path) -> None:
    (tmp_path / "runs" / "taken").mkdir(parents=True)
    code, _, err = run(capsys, "sweep", "alpha", "--name", "taken", "--storage", str(tmp_path / "runs"))
    assert code == 1 and "qmoe resume taken" in err


class _RecordingRay:
    """Stands in for ``ray``: records that the command started it (and that it was shut down)."""

    def __init__(self) -> None:
        self.started = self.up = False

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs) -> None:
        self.started = self.up = True

    def shutdown(self) -> None:
        self.up = False


@pytest.mark.parametrize("rows, early", [("none", True), ("error", True), ("ok", False), ("locked", False)])
def test_resume_starts_ray_early_only_with_a_trial_left_to_run(capsys, tmp_path, monkeypatch, rows, early) -> None:
    import contextlib
    import sys

    from qmoe import layout
    from qmoe.errors import ConfigError
    from qmoe.record import TrialRecord
    from qmoe.spec import TrialSpec
    from qmoe.sweeps import cluster
    from qmoe.sweeps.store import SweepStore

    spec = TrialSpec(dataset="synth", fold=1, experts=("q4",))
    store = SweepStore(tmp_path, "s")
    store.create({"version": layout.MANIFEST_VERSION, "trials": [spec.to_dict()]})
    if rows in ("error", "ok"):
        row = TrialRecord.failed(spec, "boom").to_row()
        store.upsert([{**row, "status": layout.OK, "error": None} if rows == "ok" else row])
    fake = _RecordingRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    seen = {}

    def fake_resume(name, *, options):
        seen["early"] = cluster._early is not None
        raise ConfigError("stopped by the test")

    monkeypatch.setattr("qmoe.sweeps.runner.resume_sweep", fake_resume)
    with store.lock() if rows == "locked" else contextlib.nullcontext():  # another command holds it
        code, _, err = run(capsys, "resume", "s", "--storage", str(tmp_path))
    assert code == 1 and "stopped by the test" in err
    assert seen == {"early": early} and fake.started is early and not fake.up
    assert [t.trial_key for t in store.unfinished()] == ([] if rows == "ok" else [spec.trial_key])
