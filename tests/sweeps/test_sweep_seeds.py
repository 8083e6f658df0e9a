"""Seeds, repeats and curiosity variants as sweep axes: expansion, keys, spec files."""

from __future__ import annotations

import textwrap
from collections import Counter

import pytest

from qmoe.errors import ConfigError
from qmoe.sweeps import alpha_spec, bits_spec, load_spec, moe_spec, plan_sweep
from qmoe.sweeps.overrides import Overrides, apply_overrides
from tests.sweeps.fakes import fake_resolver


def keys(spec, resolver) -> set[str]:
    return {t.trial_key for t in plan_sweep(spec, resolve=resolver).trials}


def test_one_seed_is_todays_sweep(resolver) -> None:
    """The default (one seed, no repeats, kl) expands to exactly the trials a sweep had before."""
    plain = plan_sweep(alpha_spec((0.2, 0.3)), resolve=resolver).trials
    assert keys(apply_overrides(alpha_spec((0.2, 0.3)), seeds=1), resolver) == {t.trial_key for t in plain}
    assert {(t.seed, t.split_seed, t.curiosity) for t in plain} == {(0, None, "kl")}


def test_seeds_count_starts_at_the_sweep_seed(resolver) -> None:
    spec = Overrides(seeds="10", seed=3).apply(alpha_spec((0.2, 0.3)))
    trials = plan_sweep(spec, resolve=resolver).trials
    assert len(trials) == 3 * 5 * 10 == 150  # (alpha 0, 0.2, 0.3) x 5 folds x 10 seeds
    assert Counter(t.seed for t in trials) == {s: 15 for s in range(3, 13)}
    assert len({t.trial_key for t in trials}) == 150
    # seed 3 alone is the sweep with --seed 3: the same keys, so a grown sweep resumes
    assert {t.trial_key for t in trials if t.seed == 3} == keys(apply_overrides(alpha_spec((0.2, 0.3)), seed=3),
                                                               resolver)


def test_seeds_list(resolver) -> None:
    trials = plan_sweep(Overrides(seeds="0,3,7").apply(bits_spec()), resolve=resolver).trials
    assert Counter(t.seed for t in trials) == {0: len(trials) // 3, 3: len(trials) // 3, 7: len(trials) // 3}
    assert {t.trial_key for t in trials if t.seed == 0} == keys(bits_spec(), resolver)


def test_curiosity_variants_apply_to_alpha_above_zero_only(resolver) -> None:
    trials = plan_sweep(Overrides(curiosity="kl,entropy").apply(alpha_spec((0.2,))), resolve=resolver).trials
    assert Counter((t.alpha, t.curiosity) for t in trials) == {(0.0, "kl"): 5, (0.2, "kl"): 5, (0.2, "entropy"): 5}
    entropy_only = plan_sweep(Overrides(curiosity="entropy").apply(alpha_spec((0.2,))), resolve=resolver).trials
    assert Counter((t.alpha, t.curiosity) for t in entropy_only) == {(0.0, "kl"): 5, (0.2, "entropy"): 5}
    assert keys(moe_spec(), resolver) <= keys(Overrides(curiosity="kl,entropy").apply(moe_spec()), resolver)


def test_repeats_reassign_folds_by_split_seed(synth_table) -> None:
    resolver = fake_resolver({"synth": synth_table})
    spec = Overrides(repeats="2", seed=4).apply(alpha_spec((0.2,)))
    plan = plan_sweep(spec, resolve=resolver)
    assert Counter(t.split_seed for t in plan.trials) == {4: 10, 5: 10}
    assert not keys(alpha_spec((0.2,)), resolver) & {t.trial_key for t in plan.trials}
    (ref,) = plan.refs
    assert set(ref.folds) == {"4", "5"} and ref.folds["4"] != ref.folds["5"]
    again = plan_sweep(Overrides(repeats="4,5", seed=4).apply(alpha_spec((0.2,))), resolve=resolver)
    assert {t.trial_key for t in again.trials} == {t.trial_key for t in plan.trials}
    assert again.refs[0].folds == ref.folds  # the same split seeds rebuild the same folds


def test_repeats_on_official_folds_is_an_error(resolver) -> None:
    spec = Overrides(repeats="3", datasets="esc50").apply(alpha_spec())
    with pytest.raises(ConfigError, match=r"--repeats: esc50 has official folds.*--seeds N"):
        plan_sweep(spec, resolve=resolver)


def test_spec_file_seeds_repeats_curiosity(tmp_path, resolver) -> None:
    path = tmp_path / "s.toml"
    path.write_text(textwrap.dedent("""
        seeds = [1, 2]
        curiosity = ["kl", "entropy"]
        [[grid]]
        models = ["bitnet,q4"]
        alphas = [0.2]
    """))
    trials = plan_sweep(load_spec(path), resolve=resolver).trials
    assert Counter((t.seed, t.curiosity) for t in trials) == {(1, "kl"): 5, (1, "entropy"): 5,
                                                              (2, "kl"): 5, (2, "entropy"): 5}


@pytest.mark.parametrize("body, needle", [
    ("seeds = 0\n", "seeds \\(--seeds\\): 0 is not a count >= 1"),
    ("seeds = [1, 1]\n", "listed twice"),
    ("seeds = [-1]\n", "whole numbers >= 0"),
    ("repeats = -1\n", "repeats \\(--repeats\\)"),
    ("curiosity = 'ucb'\n", "curiosity 'ucb' is unknown"),
])
def test_spec_file_errors(tmp_path, body, needle) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(body + "[[grid]]\nmodels = ['bitnet,q4']\n")
    with pytest.raises(ConfigError, match=needle):
        load_spec(path)


def test_status_counts_by_replicate_and_averages_seeds_per_fold(tmp_path, resolver) -> None:
    from qmoe.record import TrialRecord
    from qmoe.sweeps.runner import manifest_for
    from qmoe.sweeps.status import sweep_status, summary_by_config
    from qmoe.sweeps.store import SweepStore

    plan = plan_sweep(Overrides(seeds="2", folds="1,2").apply(bits_spec((4,))), resolve=resolver)
    store = SweepStore(tmp_path, "s")
    store.create(manifest_for(plan, "s"))
    q4 = [t for t in plan.trials if t.experts == ("q4",)]
    # fold 1: seeds 0 and 1 (F1 0.6, 0.8); fold 2: seed 0 only (F1 0.9) -> per-fold means 0.7, 0.9
    f1 = {(1, 0): 0.6, (1, 1): 0.8, (2, 0): 0.9}
    store.upsert([TrialRecord(**TrialRecord.identity(t), f1_macro=f1[t.fold, t.seed], status="ok").to_row()
                  for t in q4 if (t.fold, t.seed) in f1])
    st = sweep_status("s", tmp_path)
    reps = st.by_replicate.set_index("seed")
    assert reps.loc[0, "ok"] == 2 and reps.loc[1, "ok"] == 1
    assert reps["trials"].sum() == len(plan.trials)
    line = summary_by_config(st.results).set_index("model").loc["q4"]
    assert line["trials_ok"] == 3
    assert line["f1_macro_mean"] == pytest.approx(0.8, abs=1e-12)  # mean of the fold means, exact in float64
    assert line["f1_macro_std"] == pytest.approx(0.1414213562, abs=1e-9)  # std of (0.7, 0.9), ddof 1
