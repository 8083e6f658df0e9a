"""``qmoe data prepare`` and ``qmoe data list`` at the command line (no Ray: ``--in-process``)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch

from qmoe.cli.main import main
from tests.dataset_layouts import make_esc50, make_quinn, make_urbansound8k


def run(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    cache = tmp_path / "cache"
    monkeypatch.setenv("QMOE_CACHE", str(cache))
    return cache


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("folders")
    esc = make_esc50(base / "esc50")
    broken = Path(shutil.copytree(esc, base / "esc50-broken"))
    (broken / "audio" / "4-100004-A-0.wav").write_bytes(b"RIFF broken")
    missing = Path(shutil.copytree(esc, base / "esc50-missing"))
    for name in ("1-100001-B-0.wav", "5-141005-A-41.wav", "5-141005-B-41.wav"):
        (missing / "audio" / name).unlink()
    weights = base / "mobilenet.pth"
    import timm

    torch.save(timm.create_model("mobilenetv3_large_100", pretrained=False, num_classes=0).state_dict(), weights)
    return {"esc50": esc, "broken": broken, "missing": missing, "weights": weights,
            "urbansound8k": make_urbansound8k(base / "us8k"), "quinn": make_quinn(base / "quinn")}


def test_prepare_then_list(capsys, folders, _cache: Path) -> None:
    code, out, err = run(capsys, "data", "prepare", "esc50", "--root", str(folders["esc50"]), "--in-process")
    assert code == 0, err
    table = _cache / "tables" / "esc50-melstats.parquet"
    assert out.startswith(str(table)) and "30 clips, 3 classes, folds 1-5, 512-d melstats" in out
    assert "embedded 30, cached 0, skipped 0" in out
    code, out, err = run(capsys, "data", "prepare", "esc50", "--root", str(folders["esc50"]), "--in-process")
    assert code == 0 and "embedded 0, cached 30" in out
    code, out, _ = run(capsys, "data", "prepare", "quinn", "--root", str(folders["quinn"]), "--in-process",
                       "--n-folds", "3", "--quiet")
    assert code == 0 and "folds 1-3" in out

    code, out, err = run(capsys, "data", "list")
    assert code == 0, err
    assert "urbansound8k" in out and "esc50-melstats.parquet" in out and "built in" in out
    code, out, _ = run(capsys, "data", "list", "--json")
    listing = json.loads(out)
    tables = {t["dataset"]: t for t in listing["tables"]}
    assert tables["esc50"] == {**tables["esc50"], "backbone": "melstats", "rows": 30, "classes": 3,
                               "folds": [1, 2, 3, 4, 5], "dim": 512, "random_init": False}
    assert tables["quinn"]["folds"] == [1, 2, 3]
    prepared = {d["name"]: d["prepared"] for d in listing["datasets"]}
    assert prepared["esc50"] == ["melstats"] and prepared["urbansound8k"] == []


def test_prepare_subset_to_a_file_with_a_timm_backbone(capsys, folders, tmp_path: Path) -> None:
    out_file = tmp_path / "esc10.parquet"
    code, out, err = run(capsys, "data", "prepare", "esc50", "--root", str(folders["esc50"]), "--in-process",
                         "--classes", "esc10", "--backbone", "mobilenetv3_large_100", "--random-init",
                         "--quiet", "--out", str(out_file))
    assert code == 0, err
    assert "20 clips, 2 classes" in out and "1280-d mobilenetv3_large_100" in out and out_file.is_file()


def test_skip_mode_reports_on_stderr(capsys, folders, _cache: Path) -> None:
    code, out, err = run(capsys, "data", "prepare", "esc50", "--root", str(folders["broken"]), "--in-process",
                         "--on-bad-audio", "skip", "--quiet")
    assert code == 0, err
    assert "29 clips" in out and "skipped 1" in out
    assert "skipped 1 unreadable file(s) (first: 4-100004-A-0.wav: unreadable audio" in err


BAD = [
    (["esc50", "--root", "{urbansound8k}"], "is not a ESC-50 folder: meta/esc50.csv not found"),
    (["urbansound8k", "--root", "{esc50}"], "is not a UrbanSound8K folder"),
    (["quinn", "--root", "{esc50}"], "is not a Quinn folder"),
    (["esc50", "--root", "{missing}"], "3 of 30 files named in column 'filename' are missing under"),
    (["esc50", "--root", "{broken}"], "4-100004-A-0.wav: unreadable audio"),
    (["esc50", "--root", "{esc50}", "--backbone", "efficientnet_b3"], "pass --weights pretrained"),
    (["esc50", "--root", "{esc50}", "--backbone", "efficientnet_b3", "--weights", "{weights}"],
     "does not match backbone efficientnet_b3"),
    (["esc50", "--root", "{esc50}", "--backbone", "resnet50"], "unknown backbone 'resnet50'; known:"),
    (["esc50", "--root", "{esc50}", "--on-bad-audio", "ignore"], "--on-bad-audio 'ignore' is invalid"),
    (["esc50", "--root", "{esc50}", "--classes", "cat"], "esc50 has no class 'cat'"),
    (["esc5", "--root", "{esc50}"], "unknown dataset adapter 'esc5'; known: esc50, quinn, urbansound8k"),
    (["synth", "--root", "{esc50}"], "qmoe data synth"),
    (["esc50", "--root", "/nonexistent/esc"], "no such folder"),
]


@pytest.mark.parametrize("args, needle", BAD, ids=[f"{a[0]}-{n[:24]}" for a, n in BAD])
def test_bad_input_is_one_line_exit_1_and_writes_nothing(capsys, folders, tmp_path: Path, _cache: Path,
                                                         args: list[str], needle: str) -> None:
    out_file = tmp_path / "out.parquet"
    argv = ["data", "prepare", *[a.format(**folders) for a in args], "--in-process", "--out", str(out_file)]
    code, out, err = run(capsys, *argv)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 1 and len(lines) == 1, err
    assert lines[0].startswith("qmoe: error:") and needle in lines[0] and "Traceback" not in err
    assert not out_file.exists() and not list(tmp_path.glob("*.parquet"))
    assert not (_cache / "tables").exists()


def test_usage_errors_exit_2(capsys, folders) -> None:
    code, _, err = run(capsys, "data", "prepare", "esc50")
    assert code == 2 and "--root" in err
    code, _, err = run(capsys, "data", "prepare", "esc50", "--root", str(folders["esc50"]), "--n-folds", "1")
    assert code == 2


def test_in_process_and_address_exclude_each_other(capsys, folders) -> None:
    code, _, err = run(capsys, "data", "prepare", "esc50", "--root", str(folders["esc50"]), "--in-process",
                       "--address", "auto")
    assert code == 1 and "exclude each other" in err
