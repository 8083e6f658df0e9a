"""Trial keys: new fields (split_seed, curiosity) enter only when set, so old keys never move."""

from __future__ import annotations

import pytest

from qmoe.errors import ConfigError
from qmoe.spec import TrialSpec

MIXTURE = dict(dataset="synth", fold=3, experts=("bitnet", "q4", "q8"), alpha=0.2, seed=0)
SINGLE = dict(dataset="synth", fold=1, experts=("q4",), seed=5)


@pytest.mark.parametrize("fields, key, trial_seed", [
    # computed at commit cfb82ae (before seed/split_seed/curiosity axes), with its own qmoe.spec
    (MIXTURE, "5bab69931a689650", 358616262),
    (SINGLE, "fe86f1267b2cea6c", 1137880807),
])
def test_default_trials_keep_the_keys_computed_before_the_new_fields(fields, key, trial_seed) -> None:
    spec = TrialSpec(**fields)
    assert spec.trial_key == key
    assert spec.trial_seed == trial_seed
    assert TrialSpec(**fields, split_seed=None, curiosity="kl").trial_key == key


def test_split_seed_and_curiosity_enter_the_key_only_when_set() -> None:
    base = TrialSpec(**MIXTURE)
    assert "split_seed" not in base.key_fields() and "curiosity" not in base.key_fields()
    split = TrialSpec(**MIXTURE, split_seed=0)  # split seed 0 is a reassignment, not "none"
    entropy = TrialSpec(**MIXTURE, curiosity="entropy")
    assert split.key_fields()["split_seed"] == 0 and entropy.key_fields()["curiosity"] == "entropy"
    assert len({base.trial_key, split.trial_key, entropy.trial_key,
                TrialSpec(**MIXTURE, split_seed=1).trial_key}) == 4


def test_alpha_zero_is_one_trial_whatever_the_variant() -> None:
    plain = TrialSpec(**{**MIXTURE, "alpha": 0.0})
    assert TrialSpec(**{**MIXTURE, "alpha": 0.0}, curiosity="entropy").trial_key == plain.trial_key


def test_round_trip_keeps_new_fields() -> None:
    spec = TrialSpec(**MIXTURE, split_seed=4, curiosity="entropy")
    again = TrialSpec.from_dict(spec.to_dict())
    assert again == spec and again.trial_key == spec.trial_key


@pytest.mark.parametrize("extra, needle", [
    (dict(curiosity="ucb"), "--curiosity 'ucb'"),
    (dict(split_seed=-1), "split seed -1"),
])
def test_bad_new_fields(extra, needle) -> None:
    with pytest.raises(ConfigError, match=needle):
        TrialSpec(**MIXTURE, **extra)


def test_curiosity_needs_a_mixture() -> None:
    with pytest.raises(ConfigError, match="mixtures only"):
        TrialSpec(**SINGLE, curiosity="entropy")
