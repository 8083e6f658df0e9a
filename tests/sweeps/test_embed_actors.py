"""Feature extraction on Ray (``qmoe.sweeps.embed_actors``) and a bits sweep on a prepared ESC-50-layout folder."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import ray

from qmoe.cli.main import main
from qmoe.data.prepare import PrepareConfig, prepare_dataset
from qmoe.errors import DataError
from qmoe.sweeps.embed_actors import ray_runner
from tests.dataset_layouts import make_esc50

pytestmark = pytest.mark.ray


@pytest.fixture(scope="module")
def esc50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_esc50(tmp_path_factory.mktemp("ray-esc") / "ESC-50-master")


def test_ray_extraction_equals_in_process(ray_cluster, esc50: Path, tmp_path: Path) -> None:
    seen: list[tuple[str, int, int]] = []
    config = PrepareConfig(batch_size=4)  # 8 batches over the 2 actors
    local = prepare_dataset("esc50", esc50, config, cache_dir=tmp_path / "a")
    on_ray = prepare_dataset("esc50", esc50, config, cache_dir=tmp_path / "b", runner=ray_runner(),
                             progress=lambda *a: seen.append(a))
    assert list(on_ray.table.clip_ids) == list(local.table.clip_ids)
    np.testing.assert_allclose(on_ray.table.X, local.table.X, rtol=1e-5, atol=1e-5)
    embeds = [s for s in seen if s[0] == "embed"]
    assert len(embeds) == 8 and embeds[-1][1:] == (30, 30)
    again = prepare_dataset("esc50", esc50, config, cache_dir=tmp_path / "b", runner=ray_runner())
    assert (again.embedded, again.cached) == (0, 30)


def test_unreadable_audio_on_ray_stops_the_run(ray_cluster, esc50: Path, tmp_path: Path) -> None:
    import shutil

    root = Path(shutil.copytree(esc50, tmp_path / "esc"))
    (root / "audio" / "5-100005-B-0.wav").write_bytes(b"\x00" * 100)
    out = tmp_path / "t.parquet"
    with pytest.raises(DataError, match=r"5-100005-B-0\.wav: unreadable audio"):
        prepare_dataset("esc50", root, PrepareConfig(batch_size=4), out=out, cache_dir=tmp_path / "c",
                        runner=ray_runner())
    assert not out.exists()
    # the actors were killed: their CPUs come back
    deadline = time.monotonic() + 20
    while ray.available_resources().get("CPU", 0) < ray.cluster_resources()["CPU"] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert ray.available_resources().get("CPU", 0) == ray.cluster_resources()["CPU"]


@pytest.mark.slow
def test_cli_prepare_on_ray_then_a_bits_sweep_runs_end_to_end(ray_cluster, esc50: Path, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("QMOE_CACHE", str(tmp_path / "cache"))
    code = main(["data", "prepare", "esc50", "--root", str(esc50), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "30 clips, 3 classes, folds 1-5, 512-d melstats; embedded 30" in out

    code = main(["sweep", "bits", "--dataset", "esc50", "--values", "4,8", "--folds", "1,2", "--name", "bits",
                 "--storage", str(tmp_path / "runs"), "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    df = pd.read_parquet(tmp_path / "runs" / "bits" / "results.parquet")
    assert (df["status"] == "ok").all() and set(df["dataset"]) == {"esc50"}
    assert {"q4", "q8"} <= set(df["model"]) and set(df["fold"]) == {1, 2}
    assert df["f1_macro"].between(0, 1).all()
