"""Fault 7: trials whose training diverges (NaN loss) are recorded as errors with that reason.

The real trial function (``qmoe.trial.run_trial``) runs in Ray workers with a learning rate
of 1e30, so the loss becomes NaN in the first batch. Each trial gets a row with status
``error``, the reason, its identity and no measurement at all (not a row of garbage numbers);
the command finishes and exits 1 pointing at ``qmoe status``.

Why not diverging *data*: run_trial standardises every column with the training rows' mean and
std (in float64), so no finite table can blow up the loss; tables with NaN or values beyond
float32 are refused when loaded (tests/cli/test_cli_bad_inputs.py).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from qmoe.cli.main import main
from qmoe.sweeps import sweep_status
from qmoe.sweeps.store import SCHEMA

pytestmark = pytest.mark.ray

#: Columns that describe the trial (its identity and bookkeeping); all others are measurements.
IDENTITY = {
    "trial_key", "dataset", "fold", "model", "paper_name", "n_experts", "alpha", "top_k", "protocol",
    "seed", "split_seed", "curiosity", "trial_seed", "hparams", "hparams_source", "status", "error", "node", "started_at",
    "finished_at", "qmoe_version", "torch_version", "ray_version"}
MEASUREMENTS = [c for c in SCHEMA if c not in IDENTITY]


def test_diverging_trials_are_error_rows_with_the_reason(ray_cluster, synth_table, tmp_path, capsys) -> None:
    spec = tmp_path / "two.toml"
    spec.write_text("folds = '1'\n[[grid]]\nmodels = ['q4']\n[[grid]]\nmodels = ['bitnet,q4,q8']\nalphas = [0.3]\n")
    hparams = tmp_path / "hot.toml"
    hparams.write_text("lr = 1e30\n")
    storage = tmp_path / "runs"
    code = main(["sweep", "run", str(spec), "--hparams", str(hparams), "--name", "hot", "--storage",
                 str(storage), "--quiet"])
    _, err = capsys.readouterr()
    assert code == 1, err
    assert "sweep hot: 0 ok, 2 errors, 0 pending" in err and "qmoe status hot" in err

    df = pd.read_parquet(storage / "hot" / "results.parquet")
    assert len(df) == 2 and df["trial_key"].is_unique
    assert set(df["model"]) == {"q4", "bitnet,q4,q8"}
    assert (df["status"] == "error").all()
    for reason in df["error"]:
        assert reason.startswith("training diverged: the loss became nan at epoch 1 (lr=1e+30)"), reason
        assert "lower the learning rate" in reason
    assert all(json.loads(h)["lr"] == 1e30 for h in df["hparams"])  # the cause is in the row
    assert (df["node"] != "").all() and (df["finished_at"] >= df["started_at"]).all()
    garbage = {c: df[c].tolist() for c in MEASUREMENTS if df[c].notna().any()}
    assert not garbage, f"measurements on a diverged trial: {garbage}"
    assert {"f1_macro", "accuracy", "latency_p50_us", "train_energy_wh", "size_kb", "routing"} <= set(MEASUREMENTS)

    status = sweep_status("hot", storage)  # what `qmoe status` shows, re-run by `qmoe resume`
    assert (status.ok, status.error, status.pending) == (0, 2, 0)
    assert status.errors["error"].str.startswith("training diverged").all()

