"""Trials run longest first: mixtures before single models, larger tables first, ties in grid order."""

from __future__ import annotations

from qmoe.sweeps.plan import expand, longest_first, plan_sweep
from qmoe.sweeps.grid import spec_from_dict
from tests.sweeps.fakes import FakeTable, fake_resolver

GRID = {"grid": [{"models": ["q4", "fp32"]},
                 {"models": ["bitnet,q4,q8,q16", "bitnet,ptq8", "bitnet,q4,q8"], "alphas": [0.0, 0.3]}],
        "folds": [1, 2]}


def test_plan_puts_the_costliest_trials_first_and_keeps_grid_order_in_ties() -> None:
    tables = {"synth": FakeTable(n_folds=5, source="synth")}
    spec = spec_from_dict(GRID, kind="order", source="test")
    plan = plan_sweep(spec, resolve=fake_resolver(tables))
    experts = [len(t.experts) for t in plan.trials]
    assert experts == sorted(experts, reverse=True) and experts[0] == 4 and experts[-1] == 1
    grid = expand(spec, tables)
    for n in set(experts):  # equal cost: the grid's order
        assert [t for t in plan.trials if len(t.experts) == n] == [t for t in grid if len(t.experts) == n]
    assert sorted(t.trial_key for t in plan.trials) == sorted(t.trial_key for t in grid)


def test_larger_tables_go_first() -> None:
    tables = {"small": FakeTable(n=40, source="small"), "large": FakeTable(n=400, source="large")}
    spec = spec_from_dict({**GRID, "datasets": ["small", "large"]}, kind="order", source="test")
    trials = longest_first(expand(spec, tables), tables)
    singles = [t.dataset for t in trials if len(t.experts) == 1]
    assert singles == ["large"] * 4 + ["small"] * 4
    assert trials[0].dataset == "large" and len(trials[0].experts) == 4
