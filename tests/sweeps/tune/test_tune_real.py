"""The real thing: a seeded 12-trial ``qmoe tune`` on synth, then a bits sweep with its best.toml."""

from __future__ import annotations

import json
import tomllib

import pandas as pd
import pytest

from qmoe.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]

SPACE = """
[fixed]          # the default space, with a shorter training budget
max_epochs = 12
patience = 6
"""


def test_twelve_trial_tune_then_a_bits_sweep_with_its_settings(ray_cluster, synth_table, tmp_path, capsys) -> None:
    (tmp_path / "space.toml").write_text(SPACE)
    storage = str(tmp_path / "runs")
    code = main(["tune", "--model", "q4", "--dataset", "synth", "--folds", "1,2", "--trials", "12", "--seed", "0",
                 "--space", str(tmp_path / "space.toml"), "--name", "q4", "--storage", storage])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "12/12 trials finished" in err
    rows = pd.read_parquet(tmp_path / "runs" / "q4" / "tuning.parquet")
    assert len(rows) == 12 and rows["status"].isin(["complete", "stopped"]).all()
    best = tomllib.loads((tmp_path / "runs" / "q4" / "best.toml").read_text())
    score, default = best["tune"]["score"], best["tune"]["default_score"]
    # The defaults are trial 0 (points_to_evaluate): best >= default holds by construction.
    assert score >= default and rows.loc[rows["trial"] == 0, "is_default"].item()
    with capsys.disabled():
        print(f"\n12-trial tune, q4 on synth folds 1,2: best mean validation macro-F1 {score:.4f} "
              f"(trial {best['tune']['trial']}), default settings {default:.4f}")

    hp = tmp_path / "runs" / "q4" / "best.toml"
    code = main(["sweep", "bits", "--values", "4", "--folds", "1", "--hparams", str(hp), "--name", "bits",
                 "--storage", storage, "--quiet"])
    out, err = capsys.readouterr()
    assert code == 0, err
    results = pd.read_parquet(tmp_path / "runs" / "bits" / "results.parquet")
    assert len(results) == 4 and (results["status"] == "ok").all()
    assert (results["hparams_source"] == str(hp.resolve())).all()
    for used in map(json.loads, results["hparams"]):
        assert {k: used[k] for k in best["hparams"]} == best["hparams"]
    assert (results["epochs"] <= best["hparams"]["max_epochs"]).all()
