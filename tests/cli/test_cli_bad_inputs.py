"""Bad input to every command is refused: exit 1 (2 for usage), one line on stderr naming the
culprit and the fix, no traceback, and no file or folder created or changed anywhere we look
(the working folder, the inputs, the storage with its sweeps, the table cache).

Each case is ``(args, exit code, culprit, fix)``: the one stderr line must contain both texts.
``{in}`` is a folder of prepared bad inputs, ``{runs}`` a storage holding the sweep ``done``
(one trial finished, one pending), the sweep ``damaged`` (its manifest is not JSON) and the
sweep ``torn`` (its results table is not Parquet).
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pandas as pd
import pytest

from qmoe.cli.main import main
from qmoe.record import TrialRecord
from qmoe.sweeps import alpha_spec, plan_sweep
from qmoe.sweeps.runner import manifest_for
from qmoe.sweeps.overrides import apply_overrides
from qmoe.sweeps.store import SweepStore
from tests.dataset_layouts import make_esc50

UNREACHABLE = "127.0.0.1:9"  # the discard port: nothing listens there

CASES = [
    # -- qmoe sweep: names, lists and ranges, numbers
    ("sweep-kind", ["sweep", "nope"], 2, "'nope'", "--help"),
    ("sweep-values-word", ["sweep", "alpha", "--values", "0.2,abc"], 1, "'abc'", "e.g. 0.02,0.2,0.3"),
    ("sweep-values-negative", ["sweep", "alpha", "--values", "-0.1"], 1, "alpha -0.1", "must be >= 0"),
    ("sweep-values-hole", ["sweep", "alpha", "--values", "0.2,,0.3"], 1, "empty item", "e.g. 0.02,0.2,0.3"),
    ("sweep-values-nan", ["sweep", "alpha", "--values", "nan"], 1, "'nan'", "finite"),
    ("sweep-folds-reversed", ["sweep", "alpha", "--folds", "3-1"], 1, "'3-1'", "a <= b"),
    ("sweep-folds-word", ["sweep", "alpha", "--folds", "1-x"], 1, "'1-x'", "range like 3-5"),
    ("sweep-folds-absent", ["sweep", "alpha", "--folds", "7"], 1, "fold 7 does not exist", "pass one of them"),
    ("sweep-bits-unknown", ["sweep", "bits", "--values", "3"], 1, "no 3-bit quantizer", "1,2,4,8,16"),
    ("sweep-bits-fraction", ["sweep", "bits", "--values", "4.5"], 1, "'4.5'", "e.g. 1,2,4,8,16"),
    ("sweep-experts-unknown", ["sweep", "alpha", "--experts", "bitnet,q3"], 1, "'q3'", "fp32"),
    ("sweep-dataset-unknown", ["sweep", "alpha", "--dataset", "nope"], 1, "'nope'", "synth"),
    ("sweep-protocol", ["sweep", "alpha", "--protocol", "sloppy"], 1, "'sloppy'", "clean"),
    ("sweep-cpus-zero", ["sweep", "alpha", "--cpus-per-trial", "0"], 2, "--cpus-per-trial", "greater than or equal to 1"),
    ("sweep-concurrent-negative", ["sweep", "alpha", "--max-concurrent", "-2"], 2, "--max-concurrent",
     "greater than or equal to 1"),
    ("sweep-seed-word", ["sweep", "alpha", "--seed", "abc"], 2, "--seed", "--help"),
    ("sweep-seeds-zero", ["sweep", "alpha", "--seeds", "0"], 1, "--seeds: '0'", "e.g. 5 or 0,3,7"),
    ("sweep-seeds-twice", ["sweep", "bits", "--seeds", "0,3,3"], 1, "--seeds: '0,3,3' repeats a seed", "give each"),
    ("sweep-seeds-negative", ["sweep", "alpha", "--seeds", "1,-2"], 1, "--seeds", "e.g. 5 or 0,3,7"),
    ("sweep-repeats-official", ["sweep", "alpha", "--dataset", "esc50", "--repeats", "3"], 1,
     "--repeats: esc50 has official folds", "--seeds N"),
    ("sweep-curiosity-unknown", ["sweep", "moe", "--curiosity", "ucb"], 1, "curiosity 'ucb'", "kl, entropy"),
    # -- qmoe sweep: tables given with --data
    ("sweep-data-missing", ["sweep", "alpha", "--data", "{in}/missing.parquet"], 1, "missing.parquet",
     "qmoe data prepare"),
    ("sweep-data-not-parquet", ["sweep", "alpha", "--data", "{in}/text.parquet"], 1, "text.parquet",
     "pass a .parquet file"),
    ("sweep-data-folder", ["sweep", "alpha", "--data", "{in}"], 1, "no such embedding table", "pass an existing"),
    ("sweep-data-nan", ["sweep", "alpha", "--data", "{in}/nan.parquet"], 1, "NaN", "drop the row"),
    ("sweep-data-no-dims", ["sweep", "alpha", "--data", "{in}/nodims.parquet"], 1, "no embedding columns",
     "expected float columns"),
    ("sweep-data-dims-gap", ["sweep", "alpha", "--data", "{in}/gap.parquet"], 1, "e1 is missing",
     "rebuild the table"),
    ("sweep-data-no-label", ["sweep", "alpha", "--data", "{in}/nolabel.parquet"], 1, "label",
     "an embedding table needs"),
    # -- qmoe sweep run SPEC, --hparams FILE
    ("sweep-spec-missing", ["sweep", "run", "{in}/missing.toml"], 1, "missing.toml: no such file", "check the path"),
    ("sweep-spec-unknown-key", ["sweep", "run", "{in}/unknown.toml"], 1, "unknown key 'datasetz'", "datasets"),
    ("sweep-spec-binary", ["sweep", "run", "{in}/binary.toml"], 1, "binary.toml: not a text TOML file",
     "give a UTF-8 TOML file"),
    ("sweep-spec-folder", ["sweep", "run", "{in}/folder.toml"], 1, "folder.toml: is a folder", "give the file's path"),
    ("sweep-hparams-unknown", ["sweep", "alpha", "--hparams", "{in}/hp-unknown.toml"], 1,
     "unknown hyper-parameter 'learning_rate'", "lr"),
    ("sweep-hparams-negative", ["sweep", "alpha", "--hparams", "{in}/hp-negative.toml"], 1, "lr=-1",
     "a positive number"),
    ("sweep-hparams-missing", ["sweep", "alpha", "--hparams", "{in}/missing.toml"], 1, "missing.toml: no such file",
     "check the path"),
    # -- qmoe sweep: where it runs and where it writes
    ("sweep-address-unreachable", ["sweep", "alpha", "--address", UNREACHABLE], 1, UNREACHABLE,
     "ray start --head"),
    ("sweep-address-malformed", ["sweep", "alpha", "--address", "ray://"], 1, "'ray://'", "HOST:PORT"),
    ("sweep-storage-readonly", ["sweep", "alpha", "--storage", "/proc/qmoe-runs"], 1, "/proc",
     "pick a folder you can write to"),
    ("sweep-storage-under-file", ["sweep", "alpha", "--storage", "{in}/file/runs"], 1, "file is not a folder",
     "pick a folder you can write to"),
    ("sweep-name-parent", ["sweep", "alpha", "--name", "../x"], 1, "'../x'", "e.g. alpha-esc50"),
    ("sweep-name-absolute", ["sweep", "alpha", "--name", "/tmp/x"], 1, "'/tmp/x'", "e.g. alpha-esc50"),
    ("sweep-name-taken", ["sweep", "alpha", "--name", "done"], 1, "'done' already exists", "qmoe resume done"),
    # -- qmoe resume
    ("resume-unknown", ["resume", "nope"], 1, "no sweep 'nope'", "sweeps there: damaged, done, torn"),
    ("resume-name-parent", ["resume", "../done"], 1, "'../done'", "e.g. alpha-esc50"),
    ("resume-damaged", ["resume", "damaged"], 1, "damaged/sweep.json: damaged manifest", "under another --name"),
    ("resume-results-damaged", ["resume", "torn"], 1, "torn/results.parquet", "delete it"),
    ("resume-unreachable", ["resume", "done", "--address", UNREACHABLE], 1, UNREACHABLE, "ray start --head"),
    ("resume-failures-negative", ["resume", "done", "--max-failures", "-1"], 2, "--max-failures",
     "greater than or equal to 0"),
    ("resume-storage-missing", ["resume", "done", "--storage", "{in}/nowhere"], 1, "no sweep 'done'",
     "check --storage"),
    # -- qmoe status
    ("status-unknown", ["status", "nope"], 1, "no sweep 'nope'", "sweeps there"),
    ("status-name-absolute", ["status", "/etc"], 1, "'/etc'", "e.g. alpha-esc50"),
    ("status-damaged", ["status", "damaged"], 1, "damaged/sweep.json: damaged manifest", "under another --name"),
    ("status-results-damaged", ["status", "torn"], 1, "torn/results.parquet", "delete it"),
    # -- qmoe report
    ("report-unknown", ["report", "nope"], 1, "'nope'", "--storage"),
    ("report-not-parquet", ["report", "{in}/text.parquet"], 1, "text.parquet", "results.parquet"),
    ("report-not-results", ["report", "{in}/nan.parquet"], 1, "not a results table", "results.parquet"),
    ("report-format", ["report", "done", "--format", "pdf"], 1, "'pdf'", "md"),
    ("report-correction", ["report", "done", "--correction", "nope"], 1, "'nope'", "holm"),
    # -- qmoe trial
    ("trial-model", ["trial", "--model", "q3", "--no-energy"], 1, "'q3'", "fp32"),
    ("trial-fold-negative", ["trial", "--fold", "-1", "--no-energy"], 1, "fold -1", "its folds"),
    ("trial-alpha-word", ["trial", "--alpha", "abc"], 2, "--alpha", "--help"),
    ("trial-alpha-negative", ["trial", "--model", "bitnet,q4", "--alpha", "-1", "--no-energy"], 1, "alpha", ">= 0"),
    ("trial-threads-zero", ["trial", "--threads", "0"], 2, "--threads", "greater than or equal to 1"),
    ("trial-data-nan", ["trial", "--data", "{in}/nan.parquet", "--no-energy"], 1, "NaN", "drop the row"),
    ("trial-protocol", ["trial", "--protocol", "sloppy", "--no-energy"], 1, "'sloppy'", "clean"),
    # -- qmoe data
    ("data-command", ["data", "nope"], 2, "'nope'", "--help"),
    ("data-prepare-unknown", ["data", "prepare", "nope", "--root", "{in}"], 1, "'nope'", "esc50"),
    ("data-prepare-root-missing", ["data", "prepare", "esc50", "--root", "{in}/missing", "--in-process"], 1,
     "missing", "--root"),
    ("data-prepare-root-file", ["data", "prepare", "esc50", "--root", "{in}/file", "--in-process"], 1,
     "file", "--root"),
    ("data-prepare-root-layout", ["data", "prepare", "esc50", "--root", "{in}"], 1, "meta/esc50.csv not found",
     "did you mean --root"),
    ("data-prepare-backbone", ["data", "prepare", "esc50", "--root", "{in}/ESC-50", "--backbone", "nope"], 1,
     "'nope'", "melstats"),
    ("data-prepare-weights", ["data", "prepare", "esc50", "--root", "{in}/ESC-50", "--backbone",
                              "mobilenetv3_large_100", "--weights", "{in}/missing.pth"], 1, "missing.pth",
     "give a local state dict"),
    ("data-prepare-classes", ["data", "prepare", "esc50", "--root", "{in}/ESC-50", "--classes", "nope"], 1,
     "no class 'nope'", "known: "),
    ("data-prepare-clip-seconds", ["data", "prepare", "esc50", "--root", "{in}/ESC-50", "--clip-seconds", "-1"], 1,
     "--clip-seconds", "must be > 0"),
    ("data-prepare-folds", ["data", "prepare", "quinn", "--root", "{in}", "--n-folds", "1"], 2, "--n-folds",
     "greater than or equal to 2"),
    ("data-prepare-unreachable", ["data", "prepare", "esc50", "--root", "{in}/ESC-50", "--address", UNREACHABLE],
     1, UNREACHABLE, "ray start --head"),
    ("data-synth-seed", ["data", "synth", "--seed", "x"], 2, "--seed", "--help"),
    # -- qmoe tune
    ("tune-model", ["tune", "--model", "q3"], 1, "'q3'", "fp32"),
    ("tune-trials-zero", ["tune", "--model", "q4", "--trials", "0"], 1, "--trials", "1"),
    ("tune-folds", ["tune", "--model", "q4", "--folds", "x"], 1, "'x'", "range like 3-5"),
    ("tune-space-missing", ["tune", "--model", "q4", "--space", "{in}/missing.toml"], 1, "missing.toml: no such file",
     "check the path"),
    ("tune-space-unknown-key", ["tune", "--model", "q4", "--space", "{in}/unknown.toml"], 1, "datasetz", "params"),
    ("tune-address", ["tune", "--model", "q4", "--address", UNREACHABLE], 1, UNREACHABLE, "ray start --head"),
    ("tune-resume-unknown", ["tune", "--resume", "nope"], 1, "'nope'", "--storage"),
    ("tune-name-parent", ["tune", "--model", "q4", "--name", "../x"], 1, "'../x'", "e.g. alpha-esc50"),
]


#: The sweep cases refused only by the tables (loaded while an embedded Ray starts): every other
#: bad sweep input is refused before Ray starts, without waiting for it to come up and go down.
REFUSED_BY_A_TABLE = {"sweep-folds-absent", "sweep-dataset-unknown"} | {c[0] for c in CASES
                                                                       if c[0].startswith("sweep-data-")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory, synth_table) -> tuple[Path, Path]:
    """``{in}`` (bad files of every kind) and ``{runs}`` (a storage with two sweeps)."""
    base = tmp_path_factory.mktemp("bad-inputs")
    bad, runs = base / "in", base / "runs"
    bad.mkdir()
    good = pd.read_parquet(synth_table.source).iloc[:60].reset_index(drop=True)
    nan = good.copy()
    nan.loc[3, "e0"] = float("nan")
    nan.to_parquet(bad / "nan.parquet")
    good.drop(columns=[c for c in good.columns if c.startswith("e") and c[1:].isdigit()]).to_parquet(
        bad / "nodims.parquet")
    good.drop(columns=["e1"]).to_parquet(bad / "gap.parquet")
    good.drop(columns=["label"]).to_parquet(bad / "nolabel.parquet")
    (bad / "text.parquet").write_text("clip_id,label\nc1,0\n")
    (bad / "unknown.toml").write_text("datasetz = ['synth']\n[[grid]]\nmodels = ['q4']\n")
    (bad / "binary.toml").write_bytes(b"\xff\xfe\x00\x9c garbage \x00")
    (bad / "folder.toml").mkdir()
    (bad / "hp-unknown.toml").write_text("learning_rate = 0.1\n")
    (bad / "hp-negative.toml").write_text("lr = -1\n")
    (bad / "file").write_text("not a folder\n")
    make_esc50(bad / "ESC-50")

    plan = plan_sweep(apply_overrides(alpha_spec((0.3,)), folds=(1,)))  # two trials
    done = SweepStore(runs, "done")
    done.create(manifest_for(plan, "done"))
    done.upsert([TrialRecord(**TrialRecord.identity(plan.trials[0]), f1_macro=0.8, accuracy=0.8,
                             status="ok", node="n", started_at="s", finished_at="f").to_row()])
    with done.lock():
        pass
    damaged = SweepStore(runs, "damaged")
    damaged.create({"name": "damaged", "trials": []})
    damaged.manifest_path.write_text('{"version": 1, "trials": [')
    torn = SweepStore(runs, "torn")
    torn.create(manifest_for(plan, "torn"))
    torn.results_path.write_bytes(b"PAR1 not a whole table")
    return bad, runs


def snapshot(*roots: Path) -> dict[str, tuple]:
    """Every file and folder under ``roots``: kind, size, mtime and content digest of files."""
    out: dict[str, tuple] = {}
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):
            for d in dirnames:
                out[os.path.join(dirpath, d)] = ("dir",)
            for f in filenames:
                path = os.path.join(dirpath, f)
                st = os.lstat(path)
                digest = hashlib.sha256(Path(path).read_bytes()).hexdigest() if os.path.isfile(path) else ""
                out[path] = ("file", st.st_size, st.st_mtime_ns, digest)
    return out


@pytest.mark.parametrize("args, code, culprit, fix", [pytest.param(*c[1:], id=c[0]) for c in CASES])
def test_bad_input_is_refused_in_one_line_and_changes_nothing(inputs, tmp_path, monkeypatch, capsys, request,
                                                               args, code, culprit, fix) -> None:
    from qmoe.sweeps import cluster

    started = []

    class RecordedStart(cluster.EarlyStart):
        def __init__(self, kwargs) -> None:
            started.append(kwargs)
            super().__init__(kwargs)

    monkeypatch.setattr(cluster, "EarlyStart", RecordedStart)
    bad, runs = inputs
    monkeypatch.chdir(tmp_path)  # the default --storage ./qmoe-runs would land here
    args = [a.replace("{in}", str(bad)) for a in args]
    if args[0] in ("sweep", "resume", "status", "report", "tune") and "--storage" not in args:
        args += ["--storage", str(runs)]
    cache = Path(os.environ["QMOE_CACHE"])
    before = snapshot(tmp_path, bad, runs, cache)
    got = main(args)
    out, err = capsys.readouterr()
    assert err.count("\n") == 1 and err.endswith("\n"), err  # one line, no blank ones around it
    line = err.rstrip("\n")
    assert got == code, line
    assert line.startswith("qmoe: error: ") and "Traceback" not in err
    assert culprit in line, f"culprit {culprit!r} not named: {line}"
    assert fix in line, f"fix {fix!r} not given: {line}"
    assert snapshot(tmp_path, bad, runs, cache) == before  # nothing created, changed or removed
    if request.node.callspec.id not in REFUSED_BY_A_TABLE:
        assert not started, "Ray was started before the input was checked"


def test_there_are_cases_for_every_command() -> None:
    commands = {c[1][0] for c in CASES}
    assert commands == {"sweep", "resume", "status", "report", "trial", "data", "tune"}
    assert len(CASES) >= 20


@pytest.mark.slow
@pytest.mark.parametrize("case", ["sweep-address-unreachable", "resume-results-damaged", "data-prepare-unreachable",
                                  "tune-space-unknown-key"])
def test_a_real_process_prints_the_same_one_line(inputs, tmp_path, case) -> None:
    """As a console script (real stderr, logging configured, no pytest capture)."""
    import subprocess
    import sys

    _, args, code, culprit, fix = next(c for c in CASES if c[0] == case)
    bad, runs = inputs
    args = [a.replace("{in}", str(bad)) for a in args]
    if args[0] in ("sweep", "resume", "tune"):
        args += ["--storage", str(runs)]
    before = snapshot(tmp_path, bad, runs, Path(os.environ["QMOE_CACHE"]))
    proc = subprocess.run([sys.executable, "-m", "qmoe.cli.main", *args], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == code, proc.stderr
    assert proc.stderr.count("\n") == 1 and culprit in proc.stderr and fix in proc.stderr, proc.stderr
    assert proc.stdout == ""
    assert snapshot(tmp_path, bad, runs, Path(os.environ["QMOE_CACHE"])) == before
