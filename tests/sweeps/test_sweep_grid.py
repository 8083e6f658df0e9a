"""Sweep specs: the built-ins, validation errors, and the grid expansion (counts)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import pytest

from qmoe.errors import ConfigError, DataError, UnknownNameError
from qmoe.spec import TrialSpec
from qmoe.sweeps import SPECS, alpha_spec, bits_spec, builtin_spec, load_spec, moe_spec, paper_spec, plan_sweep
from qmoe.sweeps.plan import expand
from qmoe.sweeps.overrides import apply_overrides, load_hparams
from tests.sweeps.fakes import FakeTable, fake_resolver


def write(tmp_path: Path, text: str, name: str = "my.toml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_builtins_are_registered_and_valid() -> None:
    assert SPECS.names() == ["alpha", "bits", "moe", "paper"]
    for name in SPECS:
        assert builtin_spec(name).kind == name
    with pytest.raises(UnknownNameError, match="alpha, bits, moe, paper"):
        builtin_spec("nope")


def test_alpha_sweep_is_3_plus_1_alphas_times_5_folds(resolver) -> None:
    plan = plan_sweep(alpha_spec((0.02, 0.2, 0.3)), resolve=resolver)
    assert len(plan.trials) == (3 + 1) * 5 == 20
    assert len({t.trial_key for t in plan.trials}) == 20
    assert sorted({t.alpha for t in plan.trials}) == [0.0, 0.02, 0.2, 0.3]
    assert {t.experts for t in plan.trials} == {("bitnet", "q4", "q8")}
    assert {t.fold for t in plan.trials} == {1, 2, 3, 4, 5}


def test_alpha_options(resolver) -> None:
    assert len(plan_sweep(alpha_spec((0.2, 0.3), baseline=False), resolve=resolver).trials) == 10
    spec = alpha_spec((0.0, 0.3), ("bitnet", "ptq8"))  # 0 given and baseline: counted once
    assert spec.group("mixture").alphas == (0.0, 0.3)
    assert spec.group("mixture").models == (("bitnet", "ptq8"),)
    with pytest.raises(UnknownNameError, match="--experts.*'q3'.*fp32"):
        alpha_spec(None, ("bitnet", "q3"))
    with pytest.raises(ConfigError, match="at least two"):
        alpha_spec(None, ("q4",))
    with pytest.raises(ConfigError, match="--values: alpha -0.1 is negative"):
        alpha_spec((-0.1,))
    assert alpha_spec((0.0,), baseline=False).group("mixture").alphas == (0.0,)


def test_bits_moe_paper_counts(resolver) -> None:
    assert len(plan_sweep(bits_spec(), resolve=resolver).trials) == (5 + 3) * 5
    assert len(plan_sweep(bits_spec((4, 8)), resolve=resolver).trials) == (2 + 3) * 5
    with pytest.raises(UnknownNameError, match="no 3-bit quantizer.*1,2,4,8,16"):
        bits_spec((3,))
    assert len(plan_sweep(moe_spec(), resolve=resolver).trials) == 4 * 2 * 5
    assert len(plan_sweep(moe_spec((0.2, 0.3)), resolve=resolver).trials) == 4 * 3 * 5
    tables = {"esc50": FakeTable(5, "esc50"), "quinn": FakeTable(5, "quinn"), "urbansound8k": FakeTable(10, "us8k")}
    plan = plan_sweep(paper_spec(), resolve=fake_resolver(tables))
    assert len(plan.trials) == (8 + 4 * 3) * (5 + 5 + 10) == 400
    assert len({t.trial_key for t in plan.trials}) == 400


def test_paper_leaves_out_unprepared_datasets() -> None:
    plan = plan_sweep(paper_spec(), resolve=fake_resolver({"quinn": FakeTable(5, "quinn")}))
    assert set(plan.skipped) == {"esc50", "urbansound8k"} and "not prepared" in plan.skipped["esc50"]
    assert {t.dataset for t in plan.trials} == {"quinn"}
    with pytest.raises(DataError, match="none of the datasets"):
        plan_sweep(paper_spec(), resolve=fake_resolver({}))
    # named on the command line: required
    with pytest.raises(DataError, match="esc50"):
        plan_sweep(apply_overrides(paper_spec(), datasets=("esc50",)), resolve=fake_resolver({}))


def test_folds_override_and_missing_fold(resolver) -> None:
    spec = apply_overrides(alpha_spec(), folds=(1, 3))
    assert {t.fold for t in plan_sweep(spec, resolve=resolver).trials} == {1, 3}
    with pytest.raises(DataError, match="no fold 7"):
        plan_sweep(apply_overrides(alpha_spec(), folds=(1, 7)), resolve=resolver)


def test_trial_dict_round_trip_keeps_the_key(resolver) -> None:
    for trial in plan_sweep(bits_spec(), resolve=resolver).trials[:3]:
        assert TrialSpec.from_dict(trial.to_dict()) == trial
        assert TrialSpec.from_dict(json.loads(json.dumps(trial.to_dict()))).trial_key == trial.trial_key


def test_seed_and_hparams_change_keys(tmp_path, resolver) -> None:
    base = {t.trial_key for t in plan_sweep(alpha_spec(), resolve=resolver).trials}
    seeded = {t.trial_key for t in plan_sweep(apply_overrides(alpha_spec(), seed=1), resolve=resolver).trials}
    assert not base & seeded
    hp = write(tmp_path, "lr = 0.002\nmax_epochs = 5\n", "best.toml")
    spec = apply_overrides(alpha_spec(), hparams_file=hp)
    trials = plan_sweep(spec, resolve=resolver).trials
    assert trials[0].train.lr == 0.002 and trials[0].train.max_epochs == 5
    assert trials[0].hparams_source == str(hp)
    assert load_hparams(write(tmp_path, "[hparams]\nlr = 0.01\n[tune]\nbest = 0.8\n", "t.toml")) == {"lr": 0.01}


@pytest.mark.parametrize("body, needle", [
    ("[[grid]]\nmodels = ['q4']\nalpah = [0.1]\n", "unknown key 'alpah'"),
    ("datasetz = ['synth']\n[[grid]]\nmodels = ['q4']\n", "unknown key 'datasetz'"),
    ("[[grid]]\nmodels = []\n", "'models' is empty"),
    ("[[grid]]\nmodels = ['bitnet,q4']\nalphas = []\n", "'alphas' is empty"),
    ("datasets = []\n[[grid]]\nmodels = ['q4']\n", "'datasets' is empty"),
    ("description = 'x'\n", "no [[grid]]"),
    ("[[grid]]\nmodels = ['q4']\nalphas = [0.2]\n", "mixtures only"),
    ("[[grid]]\nmodels = ['bitnet,q4']\nalphas = [-0.2]\n", "must be >= 0"),
    ("[[grid]]\nmodels = ['bitnet,q4']\nalphas = ['x']\n", "must hold numbers"),
    ("[[grid]]\nmodels = ['q5']\n", "unknown quantizer 'q5'"),
    ("[[grid]]\nbits = [4.5]\n", "whole numbers"),
    ("[[grid]]\nid = 'x'\n", "give 'models'"),
    ("folds = 'some'\n[[grid]]\nmodels = ['q4']\n", "'folds'"),
    ("protocol = 'sloppy'\n[[grid]]\nmodels = ['q4']\n", "protocol 'sloppy'"),
    ("seed = 'one'\n[[grid]]\nmodels = ['q4']\n", "'seed' must be a int"),
    ("[hparams]\nlrr = 1\n[[grid]]\nmodels = ['q4']\n", "unknown hyper-parameter 'lrr'"),
    ("[hparams]\nlr = -1\n[[grid]]\nmodels = ['q4']\n", "lr=-1"),
    ("[[grid]]\nmodels = ['q4'\n", "invalid TOML"),
])
def test_spec_errors_name_file_and_key(tmp_path, body, needle) -> None:
    path = write(tmp_path, body)
    with pytest.raises(ConfigError) as err:
        load_spec(path)
    assert needle in str(err.value) and str(path) in str(err.value)


def test_spec_file_expands(tmp_path, resolver) -> None:
    path = write(tmp_path, """
        description = "mine"
        folds = "1,3-4"
        seed = 3
        [hparams]
        max_epochs = 7
        [[grid]]
        bits = [2, 4]
        [[grid]]
        models = ["bitnet,q8", ["q4", "ptq8"]]
        alphas = [0.0, 0.5]
    """)
    spec = load_spec(path)
    assert spec.kind == "my" and spec.seed == 3
    trials = plan_sweep(spec, resolve=resolver).trials
    assert len(trials) == (2 + 2 * 2) * 3
    assert {t.train.max_epochs for t in trials} == {7}
    with pytest.raises(ConfigError, match="no such file"):
        load_spec(tmp_path / "missing.toml")


def test_expand_dedups_keys(resolver, fake_tables) -> None:
    spec = builtin_spec("bits").replace_group("bits", models=(("q4",), ("q4",)))
    assert len(expand(spec, fake_tables)) == (1 + 3) * 5


def test_save_models_and_latency_from_spec_and_flags_not_in_trial_keys(tmp_path, resolver) -> None:
    from qmoe.sweeps.overrides import Overrides

    plain = alpha_spec((0.3,))
    assert (plain.save_models, plain.latency, plain.keeps_models) == (False, "in-sweep", False)
    path = write(tmp_path, """
        save_models = true
        latency = "isolated"
        [[grid]]
        models = ["q4"]
    """)
    spec = load_spec(path)
    assert spec.save_models and spec.latency == "isolated" and spec.keeps_models
    flags = Overrides(save_models=True).apply(plain)
    assert flags.save_models and flags.latency == "in-sweep" and flags.to_dict()["save_models"] is True
    isolated = Overrides(latency="isolated").apply(plain)  # isolated needs the models: it keeps them
    assert isolated.keeps_models and isolated.to_dict()["save_models"] is True
    assert isolated.to_dict()["latency"] == "isolated"
    assert Overrides().apply(spec).keeps_models  # no flag never turns the spec's saving off
    keys = [t.trial_key for t in plan_sweep(plain, resolve=resolver).trials]
    assert [t.trial_key for t in plan_sweep(isolated, resolve=resolver).trials] == keys
    with pytest.raises(ConfigError, match="^--latency: 'foo' is unknown; known: in-sweep, isolated$"):
        Overrides(latency="foo").apply(plain)
    for body, needle in (('latency = "fast"', "latency (--latency): 'fast' is unknown"),
                         ('save_models = "yes"', "'save_models' must be a bool")):
        with pytest.raises(ConfigError, match=None) as err:
            load_spec(write(tmp_path, f"{body}\n[[grid]]\nmodels = ['q4']\n", "bad.toml"))
        assert needle in str(err.value) and "bad.toml" in str(err.value)


def test_builtin_quantizer_names_are_the_registry_and_others_are_looked_up(monkeypatch) -> None:
    from qmoe.quant import QUANTIZERS, get_quantizer
    from qmoe.quant_names import BUILTIN_QUANTIZERS
    from qmoe.sweeps import grid

    assert set(BUILTIN_QUANTIZERS) <= set(QUANTIZERS)  # each built-in name is registered ...
    code = "from qmoe.quant import list_quantizers; print(' '.join(list_quantizers()))"
    import subprocess
    import sys

    fresh = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert tuple(fresh) == BUILTIN_QUANTIZERS  # ... and a fresh registry holds exactly them
    assert not grid.is_quantizer("q3")
    monkeypatch.setitem(QUANTIZERS._items, "q3", get_quantizer("q4"))  # a name registered at run time
    assert grid.is_quantizer("q3")
    grid.check_experts(("q3", "q4"), "test")
    assert bits_spec((3,)).group("bits").models == (("q3",),)
