"""Search spaces of ``qmoe tune``: the defaults, space files, and their validation."""

from __future__ import annotations

from pathlib import Path

import pytest

from qmoe.errors import ConfigError
from qmoe.spec import TrainConfig
from qmoe.sweeps.tune.space import SearchSpace, default_space, load_space, resolve_space


def write(tmp_path: Path, text: str, name: str = "space.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


@pytest.mark.parametrize("n_experts", [1, 3])
def test_default_space_holds_the_default_settings(n_experts: int) -> None:
    space = default_space(n_experts)
    names = {p.name for p in space.params}
    assert {"lr", "weight_decay", "dropout", "hidden", "batch_size", "label_smoothing"} <= names
    assert ({"router_lr", "top_k", "lb_weight"} <= names) == (n_experts > 1)
    point = space.default_point(n_experts > 1)
    assert point is not None
    # the default point maps back to exactly the default settings (router_lr = lr for mixtures)
    defaults = TrainConfig.defaults(n_experts > 1)
    expected = defaults.replace(router_lr=defaults.lr) if n_experts > 1 else defaults
    assert space.config(n_experts > 1, point) == expected
    lr = next(p for p in space.params if p.name == "lr")
    assert lr.log and lr.kind == "float"


def test_space_file_overrides_the_default_entry_by_entry(tmp_path) -> None:
    space = load_space(write(tmp_path, """
        [params]
        lr = { low = 1e-4, high = 3e-3, log = true }
        patience = { low = 5, high = 30 }
        hidden = { choices = [[640, 320], [128]] }
        [fixed]
        max_epochs = 8
        dropout = 0.1
        [scheduler]
        grace_period = 3
        reduction_factor = 2
    """), n_experts=1)
    by_name = {p.name: p for p in space.params}
    assert by_name["lr"].high == 3e-3 and by_name["patience"].kind == "int"
    assert "dropout" not in by_name and "weight_decay" in by_name  # fixed leaves the search; others stay
    assert by_name["hidden"].choices == ((640, 320), (128,))
    assert space.max_epochs == 8 and space.grace == 3 and space.reduction_factor == 2
    cfg = space.config(False, {"lr": 1e-3, "hidden": "128", "patience": 7})
    assert (cfg.lr, cfg.hidden, cfg.patience, cfg.dropout, cfg.max_epochs) == (1e-3, (128,), 7, 0.1, 8)
    assert SearchSpace.from_dict(space.to_dict()) == space
    assert space.default_point(False)["hidden"] == "640,320"
    assert resolve_space("default", 1) == default_space(1)


def test_defaults_outside_the_space_are_not_a_point(tmp_path) -> None:
    space = load_space(write(tmp_path, "[params]\nlr = { low = 1e-2, high = 1e-1 }\n"), n_experts=1)
    assert space.default_point(False) is None


@pytest.mark.parametrize("text, n, needle", [
    ("[params]\nlrr = { low = 1, high = 2 }\n", 1, "[params] lrr: unknown parameter"),
    ("[params]\nlr = { low = 1e-3, high = 1e-3 }\n", 1, "[params] lr: empty range"),
    ("[params]\nbatch_size = { choices = [] }\n", 1, "[params] batch_size: empty range"),
    ("[params]\nbatch_size = { choices = [64] }\n", 1, "put it in [fixed]"),
    ("[params]\nlr = { low = 1e-2, high = 1e-3 }\n", 1, "[params] lr: low 0.01 > high 0.001"),
    ("[params]\nlr = { low = 'a', high = 1e-3 }\n", 1, "[params] lr.low: lr takes numbers, got 'a'"),
    ("[params]\nbatch_size = { low = 16.5, high = 64 }\n", 1, "batch_size takes whole numbers"),
    ("[params]\nlr = { low = 1e-4 }\n", 1, "needs both low and high"),
    ("[params]\nlr = { lo = 1e-4, high = 1 }\n", 1, "[params] lr: unknown key 'lo'"),
    ("[params]\nlr = 0.01\n", 1, "to hold lr at one value put it in [fixed]"),
    ("[params]\nlr = { low = 0.0, high = 1e-2, log = true }\n", 1, "[params] lr.low: hyper-parameter lr=0.0"),
    ("[params]\nweight_decay = { low = 0.0, high = 1e-2, log = true }\n", 1, "a log range needs low > 0"),
    ("[params]\ndropout = { low = 0.0, high = 1.0 }\n", 1, "dropout=1.0 is invalid"),
    ("[params]\nhidden = { low = 1, high = 2 }\n", 1, "hidden takes choices"),
    ("[params]\nhidden = { choices = [640, 320] }\n", 1, "lists of layer widths"),
    ("[params]\ntop_k = { choices = [1, 2] }\n", 1, "applies to mixtures only"),
    ("[params]\ntop_k = { choices = [1, 4] }\n", 3, "more than the mixture's 3 experts"),
    ("[params]\nlr = { low = 1e-4, high = 1e-2 }\n[fixed]\nlr = 1e-3\n", 1, "also in [fixed]"),
    ("[fixed]\nmax_epoch = 3\n", 1, "[fixed] max_epoch: unknown parameter"),
    ("[fixed]\nmax_epochs = 0\n", 1, "[fixed] max_epochs: hyper-parameter max_epochs=0"),
    ("[scheduler]\ngrace_period = 50\n[fixed]\nmax_epochs = 10\n", 1, "grace_period 50 is more than max_epochs 10"),
    ("[scheduler]\nreduction_factor = 1\n", 1, "reduction_factor must be a number > 1"),
    ("[scheduler]\nbrackets = 2\n", 1, "[scheduler] unknown key 'brackets'"),
    ("[searched]\nlr = 1\n", 1, "unknown key 'searched'"),
    ("params = 3\n", 1, "'params' must be a table"),
    ("[params\n", 1, "invalid TOML"),
])
def test_bad_space_files_fail_with_one_line_naming_file_and_key(tmp_path, text, n, needle) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_space(path, n_experts=n)
    message = str(err.value)
    assert needle in message and str(path) in message and "\n" not in message


def test_missing_space_file(tmp_path) -> None:
    with pytest.raises(ConfigError, match="no such file"):
        resolve_space(str(tmp_path / "nope.toml"), 1)


def test_a_suggested_mixture_setting_trains(synth_table) -> None:
    from qmoe.measure import torch_threads
    from qmoe.cross_validation import CrossValidation

    space = default_space(3)
    suggested = {**space.default_point(True), "router_lr": 3e-3, "top_k": 2, "hidden": "128,64"}
    cfg = space.config(True, suggested).replace(max_epochs=1)
    assert (cfg.router_lr, cfg.top_k, cfg.hidden) == (3e-3, 2, (128, 64))
    with torch_threads(1):
        report = CrossValidation(synth_table, ("bitnet", "q4", "q8"), cfg, (1,), seed=0).step()
    assert report.done and 0.0 <= report.objective <= 1.0 and report.fold_epochs == {1: 1}
