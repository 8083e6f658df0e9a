"""``qmoe tune`` under the session's Ray: a small real tune, resume to a budget, best.toml to a sweep."""

from __future__ import annotations

import io
import json
import tomllib

import pandas as pd
import pytest

from qmoe.cli.main import main
from qmoe.sweeps import RunOptions
from qmoe.sweeps.tune.space import load_space
from qmoe.sweeps.tune.study import open_study, optuna_quiet
from qmoe.sweeps.tune.tune_runner import TuneSpec, resume_tune, run_tune
from qmoe.sweeps.tune.tune_store import TuneStore

pytestmark = pytest.mark.ray

SPACE = """
[fixed]          # quick: a narrow network, 3 epochs
max_epochs = 3
patience = 2
hidden = [128]
[scheduler]
grace_period = 1
"""


@pytest.fixture(scope="module")
def tuned(ray_cluster, synth_table, tmp_path_factory):
    """A 4-trial tune of q4 on synth folds 1,2: (outcome, storage, progress text)."""
    root = tmp_path_factory.mktemp("tune")
    (root / "space.toml").write_text(SPACE)
    spec = TuneSpec(experts=("q4",), folds=(1, 2), trials=4, space=load_space(root / "space.toml", 1), seed=0)
    stream = io.StringIO()
    outcome = run_tune(spec, name="small", options=RunOptions(storage=root / "runs", progress_stream=stream))
    return outcome, root / "runs", stream.getvalue()


def test_tune_runs_the_budget_and_records_every_trial(tuned) -> None:
    outcome, storage, progress = tuned
    rows = outcome.rows
    assert (outcome.requested, outcome.finished, outcome.ran) == (4, 4, 4)
    assert list(rows["trial"]) == [0, 1, 2, 3] and rows["status"].isin(["complete", "stopped"]).all()
    assert rows.loc[0, "is_default"] and not rows.loc[1:, "is_default"].any()  # the defaults go first
    for r in rows.itertuples():
        assert set(json.loads(r.fold_f1)) == {"1", "2"} and 1 <= r.epochs <= 3
        assert r.objective == pytest.approx(sum(json.loads(r.fold_f1).values()) / 2)
        assert json.loads(r.hparams)["max_epochs"] == 3 and json.loads(r.hparams)["hidden"] == [128]
    assert outcome.best["objective"] >= outcome.default["objective"]
    # the Optuna study holds the same trials with the same values (our table is the record)
    store = TuneStore(storage, "small")
    with store.lock(), optuna_quiet():
        study = open_study(store)
    assert sorted((t.number, t.value) for t in study.trials) == \
        sorted(zip(rows["trial"], rows["objective"]))
    best = tomllib.loads((storage / "small" / "best.toml").read_text())
    assert best["tune"]["score"] == outcome.best["objective"]
    assert best["tune"]["default_score"] == outcome.default["objective"]
    assert best["hparams"]["max_epochs"] == 3 and best["hparams"]["hidden"] == [128]
    assert "4/4 done" in progress and "best" in progress


def test_resume_reaches_a_new_budget_and_never_more(tuned) -> None:
    _, storage, _ = tuned
    options = RunOptions(storage=storage, quiet=True)
    more = resume_tune("small", trials=5, options=options)
    assert (more.requested, more.finished, more.ran) == (5, 5, 1)
    assert list(more.rows["trial"]) == [0, 1, 2, 3, 4] and more.rows["is_default"].sum() == 1
    again = resume_tune("small", options=options)
    assert (again.finished, again.ran) == (5, 0)


def test_a_bits_sweep_takes_the_best_toml(tuned, monkeypatch, capsys) -> None:
    _, storage, _ = tuned
    best = storage / "small" / "best.toml"
    hparams = tomllib.loads(best.read_text())["hparams"]
    monkeypatch.setenv("QMOE_TRIAL_FN", "tests.sweeps.fakes:fast_trial")  # the rows' identity is real
    code = main(["sweep", "bits", "--values", "4", "--folds", "1", "--hparams", str(best), "--name", "bits",
                 "--storage", str(storage), "--quiet"])
    assert code == 0, capsys.readouterr().err
    df = pd.read_parquet(storage / "bits" / "results.parquet")
    assert len(df) == 4 and (df["hparams_source"] == str(best.resolve())).all()
    for used in map(json.loads, df["hparams"]):
        assert {k: used[k] for k in hparams} == hparams
