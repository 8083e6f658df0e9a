"""The real thing: ``qmoe sweep alpha --values 0.02,0.2,0.3`` on synth with qmoe.trial.run_trial."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from qmoe.cli.main import main

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_alpha_sweep_on_synth(ray_cluster, synth_table, tmp_path, capsys) -> None:
    code = main(["sweep", "alpha", "--values", "0.02,0.2,0.3", "--name", "alpha",
                 "--storage", str(tmp_path)])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert "20 ok, 0 errors, 0 pending" in err and "BitNet-Q4/8-QMoE-C" in out
    df = pd.read_parquet(tmp_path / "alpha" / "results.parquet")
    assert len(df) == (3 + 1) * 5 == 20 and df["trial_key"].is_unique
    assert (df["status"] == "ok").all() and df["f1_macro"].between(0, 1).all()
    assert sorted(df["alpha"].unique()) == [0.0, 0.02, 0.2, 0.3]

    def shares(alpha: float) -> pd.Series:
        rows = [json.loads(r) for r in df.loc[df["alpha"] == alpha, "routing"]]
        return pd.DataFrame([{e: s["share"] for e, s in r.items()} for r in rows]).mean()

    plain, curious = shares(0.0), shares(0.3)
    assert (plain - curious).abs().max() > 0.02, (plain, curious)
    samples = pd.read_parquet(tmp_path / "alpha" / "routing" / f"{df['trial_key'].iloc[0]}.parquet")
    assert {"clip_id", "expert", "confidence", "uncertainty", "correct"} <= set(samples.columns)
