"""``--weights pretrained``: timm's own pretrained loading, read from a local Hugging Face cache.

No network: each test builds a hub cache in a temporary ``HF_HOME`` in the layout
``huggingface_hub`` reads offline (``hub/models--timm--NAME.TAG/refs/main`` naming a snapshot,
``snapshots/REV/model.safetensors``), holding weights we made (random init), and runs in a fresh
process with ``HF_HUB_OFFLINE=1`` (``huggingface_hub`` reads ``HF_HOME`` and ``HF_HUB_OFFLINE``
once, at import).
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from qmoe.data import load_table
from qmoe.data.prepare import PrepareConfig, prepare_dataset
from qmoe.errors import ConfigError
from tests.dataset_layouts import make_esc50

ROOT = Path(__file__).resolve().parents[3]
NAME = "mobilenetv3_large_100"
TAG = "timm/mobilenetv3_large_100.ra_in1k"  # timm's default pretrained tag of NAME
REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A hub cache holding NAME's weights (seeded random init, with a 1000-class classifier,
    as the real checkpoint has), an empty hub cache, and a tiny ESC-50 folder."""
    import timm
    from safetensors.torch import save_file

    base = tmp_path_factory.mktemp("hub")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(7)
        net = timm.create_model(NAME, pretrained=False)  # with its classifier
    repo = base / "hf-home" / "hub" / ("models--" + TAG.replace("/", "--"))
    (repo / "refs").mkdir(parents=True)
    (repo / "refs" / "main").write_text(REVISION)
    snapshot = repo / "snapshots" / REVISION
    snapshot.mkdir(parents=True)
    weights = snapshot / "model.safetensors"
    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(weights))
    (base / "empty-home").mkdir()
    esc = make_esc50(base / "esc", classes=((0, "dog", True), (10, "rain", True)), folds=2, per_fold=1)
    return {"home": base / "hf-home", "empty": base / "empty-home", "weights": weights, "esc50": esc}


def run_offline(code: str, home: Path, tmp_path: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HF_HOME": str(home), "HF_HUB_OFFLINE": "1", "QMOE_CACHE": str(tmp_path / "cache")}
    env.pop("HF_HUB_CACHE", None)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env,
                          timeout=600)


def test_timm_pretrained_loading_reads_exactly_the_cached_weights(hub, tmp_path: Path) -> None:
    code = f"""
import json, torch
from safetensors.torch import load_file
from qmoe.data.image_backbones import load_pretrained
w = load_pretrained({NAME!r})
ref = load_file({str(hub["weights"])!r})
same = [k for k, v in w.state_dict.items() if torch.equal(v, ref[k])]
print(json.dumps({{"tag": w.tag, "revision": w.revision, "file": str(w.file), "sha256": w.sha256,
                  "n": len(w.state_dict), "same": len(same),
                  "classifier": any(k.startswith("classifier.") for k in w.state_dict)}}))
"""
    out = run_offline(code, hub["home"], tmp_path)
    assert out.returncode == 0, out.stderr
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["tag"] == TAG and got["revision"] == REVISION
    assert Path(got["file"]) == hub["weights"]
    assert got["sha256"] == hashlib.sha256(hub["weights"].read_bytes()).hexdigest()
    assert got["same"] == got["n"] > 100 and not got["classifier"]  # every tensor, classifier dropped


def test_prepare_with_pretrained_records_tag_and_sha_and_equals_the_same_file(hub, tmp_path: Path) -> None:
    out_pre = tmp_path / "pretrained.parquet"
    cli = ["-m", "qmoe.cli.main", "data", "prepare", "esc50", "--root", str(hub["esc50"]), "--backbone", NAME,
           "--weights", "pretrained", "--in-process", "--quiet", "--out", str(out_pre)]
    env = {**os.environ, "HF_HOME": str(hub["home"]), "HF_HUB_OFFLINE": "1", "QMOE_CACHE": str(tmp_path / "c")}
    done = subprocess.run([sys.executable, *cli], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 0, done.stderr
    t = load_table(out_pre)
    assert t.meta["weights"] == "pretrained" and t.meta["weights_tag"] == TAG
    assert t.meta["weights_revision"] == REVISION and t.meta["random_init"] is False
    assert t.meta["weights_sha256"] == hashlib.sha256(hub["weights"].read_bytes()).hexdigest()
    # the same bytes given as a local file embed alike (this process, no hub involved)
    ref = prepare_dataset("esc50", hub["esc50"], PrepareConfig(backbone=NAME, weights=hub["weights"]),
                          out=tmp_path / "file.parquet", cache_dir=tmp_path / "c2").table
    np.testing.assert_array_equal(t.X, ref.X)


def test_offline_and_not_cached_is_one_line(hub, tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    cli = ["-m", "qmoe.cli.main", "data", "prepare", "esc50", "--root", str(hub["esc50"]), "--backbone",
           "efficientnet_b3", "--pretrained", "--in-process", "--quiet", "--out", str(out)]
    env = {**os.environ, "HF_HOME": str(hub["empty"]), "HF_HUB_OFFLINE": "1", "QMOE_CACHE": str(tmp_path / "c")}
    done = subprocess.run([sys.executable, *cli], capture_output=True, text=True, cwd=ROOT, env=env, timeout=600)
    assert done.returncode == 1 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in done.stderr
    assert lines[0].startswith("qmoe: error: --weights pretrained: timm/efficientnet_b3.ra2_in1k")
    assert "HF_HUB_OFFLINE=1" in lines[0] and str(hub["empty"]) in lines[0] and not out.exists()


def test_pretrained_excludes_a_file_and_random_init(hub, capsys) -> None:
    from qmoe.cli.main import main

    code = main(["data", "prepare", "esc50", "--root", str(hub["esc50"]), "--weights", "pretrained",
                 "--in-process", "--quiet"])
    assert code == 1 and "backbone melstats has no weights" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="excludes --weights FILE and --random-init"):
        PrepareConfig(backbone=NAME, pretrained=True, weights=hub["weights"])
    with pytest.raises(ConfigError, match="excludes --weights FILE and --random-init"):
        PrepareConfig(backbone=NAME, pretrained=True, random_init=True)
    with pytest.raises(ConfigError, match="melstats has no weights"):
        prepare_dataset("esc50", hub["esc50"], PrepareConfig(pretrained=True))
