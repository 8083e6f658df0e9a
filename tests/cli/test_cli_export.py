"""``qmoe trial --save``, ``qmoe export`` and ``qmoe predict`` at the command line: bad input is
one line on stderr, exit 1, no traceback, nothing executed; ``qmoe predict`` never imports torch,
pandas, sklearn or ray."""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from qmoe.cli.main import main
from qmoe.runtime.format import META_KEY, model_header, model_tensors, write_model_file
from tests.qmoe.runtime.test_runtime_format import Boom, mixture

ROOT = Path(__file__).resolve().parents[2]


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A good model file, and every kind of bad one."""
    base = tmp_path_factory.mktemp("files")
    good = base / "good.qmoe"
    write_model_file(good, mixture())
    blob = good.read_bytes()
    header, tensors = model_header(mixture()), model_tensors(mixture())
    out = {"good": good}
    (base / "truncated.qmoe").write_bytes(blob[: len(blob) - 100])
    (base / "random.qmoe").write_bytes(np.random.default_rng(0).bytes(5000))
    (base / "other.qmoe").write_bytes(save({"w": np.zeros(3, np.float32)}, metadata={"format": "pt"}))
    (base / "version.qmoe").write_bytes(save(tensors, metadata={META_KEY: json.dumps({**header, "version": 2})}))
    (base / "missing.qmoe").write_bytes(save({k: v for k, v in tensors.items() if k != "router.masks"},
                                             metadata={META_KEY: json.dumps(header)}))
    shaped = {**tensors, "expert.0.0.weight": np.zeros((8, 11), np.int8)}
    (base / "shape.qmoe").write_bytes(save(shaped, metadata={META_KEY: json.dumps(header)}))
    (base / "pickle.qmoe").write_bytes(pickle.dumps(Boom(base / "pwned")))
    for name in ("truncated", "random", "other", "version", "missing", "shape", "pickle"):
        out[name] = base / f"{name}.qmoe"
    table = base / "table.parquet"
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"clip_id": ["a", "b"], **{f"e{i}": [0.1, 0.2] for i in range(12)}}), table)
    out["table"] = table
    return out


@pytest.mark.parametrize("name, match", [
    ("truncated", "not a qmoe model file"), ("random", "not a qmoe model file"),
    ("other", "a safetensors file, but not a qmoe model"), ("version", "format version 2 is newer"),
    ("missing", "tensor router.masks is missing"), ("shape", r"expert.0.0.weight has shape \(8, 11\)"),
    ("pickle", "not a qmoe model file"),
])
def test_bad_model_files_are_one_line(capsys, files, name: str, match: str) -> None:
    code, out, err = run(capsys, "predict", str(files[name]), "--data", str(files["table"]))
    assert code == 1 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("qmoe: error: ") and str(files[name]) in lines[0], err
    import re

    assert re.search(match, lines[0]), lines[0]
    assert not (files["pickle"].parent / "pwned").exists()


def test_bad_tables_and_out_are_one_line(capsys, files, tmp_path: Path) -> None:
    cases = [
        (["--data", str(tmp_path / "none.parquet")], "no such file"),
        (["--data", str(files["random"])], "not a readable Parquet file"),
        (["--data", str(files["table"]), "--fold", "1"], "no fold column"),
        (["--data", str(files["table"]), "--out", str(tmp_path / "p.txt")], "give a .csv or .parquet file"),
        (["--data", str(files["table"]), "--kernels", "fast"], "--kernels fast: use one of auto, aot, jit"),
    ]
    for args, match in cases:
        code, out, err = run(capsys, "predict", str(files["good"]), *args)
        assert code == 1 and match in err and len(err.strip().splitlines()) == 1, err


def test_export_of_something_that_is_not_a_saved_trial(capsys, tmp_path: Path) -> None:
    code, _, err = run(capsys, "export", str(tmp_path), "--out", str(tmp_path / "m.qmoe"))
    assert code == 1 and "not a saved trial" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, "export", "0123456789abcdef", "--storage", str(tmp_path))
    assert code == 1 and "neither a folder nor a trial key saved under" in err


def test_predict_imports_no_torch_even_on_errors(files) -> None:
    code = ("import json, sys\nfrom qmoe.cli.main import main\n"
            f"rc = main(['predict', {str(files['random'])!r}, '--data', {str(files['table'])!r}])\n"
            "print(json.dumps([rc, [m for m in ('torch', 'pandas', 'sklearn', 'ray') if m in sys.modules]]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    rc, heavy = json.loads(done.stdout.strip().splitlines()[-1])
    assert rc == 1 and heavy == []


def test_trial_save_export_predict_at_the_command_line(capsys, synth_table, tmp_path: Path) -> None:
    from qmoe.export.saved import load_saved_trial
    from qmoe.spec import TrainConfig, TrialSpec
    from qmoe.trial import run_trial

    (tmp_path / "taken").write_text("a file")
    code, _, err = run(capsys, "trial", "--model", "q2", "--save", str(tmp_path / "taken"), "--no-energy")
    assert code == 1 and "--save" in err and "is a file" in err and "training" not in err  # refused first
    spec = TrialSpec(dataset="synth", fold=3, experts=("q2",), train=TrainConfig.single().replace(max_epochs=2),
                     latency_runs=20, measure_energy=False)
    run_trial(spec, synth_table, save_dir=tmp_path / "q2")
    code, out, err = run(capsys, "export", str(tmp_path / "q2"), "--out", str(tmp_path / "q2.qmoe"))
    assert code == 0 and out.startswith(f"{tmp_path / 'q2.qmoe'}  (") and spec.trial_key in err
    code, out, err = run(capsys, "predict", str(tmp_path / "q2.qmoe"), "--data", str(synth_table.source),
                         "--fold", "3")
    assert code == 0 and "accuracy" in err
    lines = out.strip().splitlines()
    assert lines[0].split("\t") == ["clip_id", "pred", "label_name"]
    test = load_saved_trial(tmp_path / "q2").info["test"]
    assert [line.split("\t")[0] for line in lines[1:]] == test["clip_id"]
    assert [int(line.split("\t")[1]) for line in lines[1:]] == test["pred"]
