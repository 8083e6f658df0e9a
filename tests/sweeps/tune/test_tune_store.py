"""The tuning folder: its table, best.toml, and reconciling the study after a kill (no Ray)."""

from __future__ import annotations

import json
import tomllib

import pytest

from qmoe.errors import ConfigError
from qmoe.sweeps.tune.space import default_space
from qmoe.sweeps.overrides import apply_overrides, load_hparams
from qmoe.sweeps.builtin import bits_spec
from qmoe.sweeps.tune.best_toml import toml_value
from qmoe.sweeps.tune.study import open_study, optuna_quiet, reconcile
from qmoe.sweeps.tune.tune_store import TuneStore
from qmoe.sweeps.tune.tuning_table import counted


def manifest(trials: int = 4) -> dict:
    space = default_space(1)
    return {"name": "t", "kind": "tune", "model": "q4", "experts": ["q4"], "folds": [1, 2], "trials": trials,
            "seed": 0, "table": {"name": "synth", "dataset": "synth", "data": None, "content_hash": "abc"},
            "space": {**space.to_dict(), "fixed": {"max_epochs": 7}}, "default_point": space.default_point(False)}


def row(trial: int, status: str, objective: float | None, **kw) -> dict:
    params = {"lr": 1e-3 * (trial + 1), "weight_decay": 1e-4, "dropout": 0.1, "label_smoothing": 0.0,
              "hidden": [320, 160], "batch_size": 128}
    return {"trial": trial, "status": status, "objective": objective, "params": json.dumps(params),
            "fold_f1": json.dumps({"1": 0.7, "2": 0.8}), "is_default": trial == 0, **kw}


@pytest.fixture
def store(tmp_path) -> TuneStore:
    s = TuneStore(tmp_path / "runs", "t")
    s.create(manifest())
    return s


def test_best_toml_is_what_sweeps_read(store) -> None:
    rows = store.upsert([row(0, "complete", 0.70), row(1, "stopped", 0.81), row(2, "error", None, error="diverged"),
                         row(3, "interrupted", None), row(4, "complete", 0.75)])
    assert counted(rows) == 4  # the interrupted trial does not use up the budget
    path = store.write_best(manifest(), rows)
    doc = tomllib.loads(path.read_text())
    assert doc["tune"]["score"] == 0.81 and doc["tune"]["trial"] == 1 and doc["tune"]["default_score"] == 0.70
    assert doc["tune"]["folds"] == [1, 2] and doc["tune"]["fold_f1"] == {"1": 0.7, "2": 0.8}
    hparams = load_hparams(path)  # the [hparams] table only: fixed settings + the best trial's values
    assert hparams == {"max_epochs": 7, "lr": 2e-3, "weight_decay": 1e-4, "dropout": 0.1, "label_smoothing": 0.0,
                       "hidden": [320, 160], "batch_size": 128}
    spec = apply_overrides(bits_spec((4,)), hparams_file=path)
    cfg = spec.train_config(False)
    assert (cfg.lr, cfg.hidden, cfg.max_epochs) == (2e-3, (320, 160), 7)
    assert spec.hparams_source == str(path.resolve())


def test_upsert_replaces_a_trial_and_keeps_the_rest(store) -> None:
    store.upsert([row(0, "complete", 0.7), row(1, "complete", 0.6)])
    rows = store.upsert([row(1, "stopped", 0.65)])
    assert list(rows["trial"]) == [0, 1] and list(rows["status"]) == ["complete", "stopped"]


def test_toml_values_parse_back() -> None:
    values = {"a": 1, "b": 2.5e-05, "c": "x \"y\"", "d": [640, 320], "e": True, "f": {"1": 0.5}}
    text = "\n".join(f"{k} = {toml_value(v)}" for k, v in values.items())
    assert tomllib.loads(text) == values


def test_reconcile_makes_the_study_agree_with_the_table(store) -> None:
    from optuna.trial import TrialState

    space = default_space(1)
    dists = {p.name: p.distribution() for p in space.params}
    point = manifest()["default_point"]
    with store.lock(), optuna_quiet():
        study = open_study(store)
        study.enqueue_trial(point)
        done = study.ask(dists)  # finished and recorded
        study.tell(done, 0.7)
        told_not_recorded = study.ask(dists)  # killed after telling Optuna, before our row
        study.tell(told_not_recorded, 0.6)
        recorded_not_told = study.ask(dists)  # killed after our row, before telling Optuna
        cut_short = study.ask(dists)  # killed while running
        store.upsert([row(done.number, "complete", 0.7), row(recorded_not_told.number, "stopped", 0.65)])
        assert reconcile(store, manifest(), run="run-1") == 1
        study = open_study(store)
    states = {t.number: (t.state, t.value) for t in study.trials}
    assert states[recorded_not_told.number] == (TrialState.COMPLETE, 0.65)
    assert states[cut_short.number][0] == TrialState.FAIL
    assert not any(s == TrialState.RUNNING for s, _ in states.values())
    rows = store.read_rows().set_index("trial")
    assert rows.loc[cut_short.number, "status"] == "interrupted"
    assert rows.loc[told_not_recorded.number, "status"] == "complete"
    assert rows.loc[told_not_recorded.number, "objective"] == 0.6
    assert bool(rows.loc[done.number, "is_default"])  # the enqueued default point
    assert counted(store.read_rows()) == 3


def test_names_and_kinds_are_told_apart(store, tmp_path) -> None:
    with pytest.raises(ConfigError, match="already exists.*qmoe tune --resume t"):
        store.check_new()
    with pytest.raises(ConfigError, match="no tuning run 'nope'.*tuning runs there: t"):
        TuneStore(tmp_path / "runs", "nope").read_manifest()
    from qmoe.sweeps.store import SweepStore

    with pytest.raises(ConfigError, match="is a tuning run, not a sweep.*qmoe tune --resume t"):
        SweepStore(tmp_path / "runs", "t").read_manifest()
