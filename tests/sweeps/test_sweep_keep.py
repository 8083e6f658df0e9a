"""What a sweep keeps of its trials, with the real trial function on synth: ``--save-models``
(then ``qmoe export KEY``) and ``--latency isolated`` (then an interrupted phase resumed)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pandas as pd
import pytest

from qmoe.cli.main import main
from qmoe.latency import MEASURES
from qmoe.sweeps.store import SweepStore

pytestmark = pytest.mark.ray

INSWEEP = [f"latency_insweep_{m}" for m in MEASURES]


def tiny_spec(tmp_path: Path, models: str) -> Path:
    """One fold of synth, two epochs, a short latency round, no energy: seconds per trial."""
    path = tmp_path / "tiny.toml"
    path.write_text(textwrap.dedent(f"""
        datasets = ["synth"]
        folds = [1]
        latency_runs = 20
        measure_energy = false
        [hparams]
        max_epochs = 2
        [[grid]]
        models = [{models}]
    """))
    return path


def cli(capsys, *args: str) -> tuple[int, str, str]:
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_save_models_keeps_each_model_for_export_and_resume_keeps_saving(ray_cluster, synth_table, tmp_path,
                                                                          capsys) -> None:
    storage = tmp_path / "runs"
    code, _, err = cli(capsys, "sweep", "run", str(tiny_spec(tmp_path, '"q2", "q4"')), "--save-models",
                       "--name", "kept", "--storage", str(storage))
    assert code == 0, err
    store = SweepStore(storage, "kept")
    df = store.read_results()
    assert len(df) == 2 and (df["status"] == "ok").all()
    assert (df["latency_mode"] == "in-sweep").all() and df[INSWEEP].isna().all().all()
    assert sorted(p.name for p in store.models_dir.iterdir()) == sorted(df["trial_key"])
    assert json.loads(store.manifest_path.read_text())["spec"]["save_models"] is True
    key = df["trial_key"].iloc[0]
    code, out, err = cli(capsys, "export", key, "--storage", str(storage), "--out", str(tmp_path / "m.qmoe"))
    assert code == 0 and f"exported trial {key}" in err and (tmp_path / "m.qmoe").is_file()

    # A trial cut short (no row, a killed save's temporary folder): resume runs it and saves it again.
    other = df["trial_key"].iloc[1]
    pd.DataFrame(df[df["trial_key"] == key]).to_parquet(store.results_path, index=False)
    (store.models_dir / other).rename(store.models_dir / f".{other}.99.deadbeef.tmp")
    code, _, err = cli(capsys, "resume", "kept", "--storage", str(storage))
    assert code == 0 and "ran 1 trials" in err, err
    assert sorted(p.name for p in store.models_dir.iterdir()) == sorted([key, other])
    assert (store.models_dir / other / "trial.json").is_file()


def test_isolated_latency_interrupted_then_resumed(ray_cluster, synth_table, tmp_path, capsys,
                                                   monkeypatch) -> None:
    import qmoe.sweeps.isolated as isolated

    storage, real, calls = tmp_path / "runs", isolated.time_saved, []

    def cut_after_one(path: Path, table: object) -> object:  # the driver killed during the second timing
        calls.append(path.name)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(path, table)

    monkeypatch.setattr(isolated, "time_saved", cut_after_one)
    code, _, err = cli(capsys, "sweep", "run", str(tiny_spec(tmp_path, '"q2", "q4"')), "--latency", "isolated",
                       "--name", "iso", "--storage", str(storage))
    assert code == 130 and "qmoe resume iso" in err, err
    store = SweepStore(storage, "iso")
    spec = json.loads(store.manifest_path.read_text())["spec"]
    assert spec["latency"] == "isolated" and spec["save_models"] is True  # implied, and kept for resume
    before = store.read_results().set_index("trial_key")
    assert (before["status"] == "ok").all() and len(before) == 2
    first, second = calls
    assert before.loc[first, "latency_mode"] == "isolated" and before.loc[second, "latency_mode"] == "in-sweep"
    assert before.loc[first, INSWEEP].notna().all() and before.loc[second, INSWEEP].isna().all()

    monkeypatch.setattr(isolated, "time_saved", real)
    code, _, err = cli(capsys, "resume", "iso", "--storage", str(storage))
    assert code == 0 and "isolated latency: timed 1 saved model(s) alone" in err and "(1 timed before)" in err
    after = store.read_results().set_index("trial_key")
    assert (after["latency_mode"] == "isolated").all() and after[INSWEEP].notna().all().all()
    # the row timed before the interruption is not timed again; the other keeps its in-sweep figures
    latency = [f"latency_{m}" for m in MEASURES] + INSWEEP
    assert after.loc[first, latency].equals(before.loc[first, latency])
    assert after.loc[second, "latency_insweep_p50_us"] == before.loc[second, "latency_p50_us"]
    assert after.loc[second, "latency_runs"] >= 20 and after.loc[second, "latency_p50_ci_us"] > 0
    assert after.loc[second, "latency_cpu"] >= 0
    code, _, err = cli(capsys, "resume", "iso", "--storage", str(storage))
    assert code == 0 and "nothing to do" in err
    code, out, _ = cli(capsys, "report", "iso", "--storage", str(storage))
    assert code == 0 and "latency mode: isolated" in out
