"""The built-in synth dataset: shape, determinism, groups, and its difficulty band."""

from __future__ import annotations

import dataclasses
import itertools

import numpy as np
import pytest

from qmoe.data import CLASS_NAMES, EmbeddingTable, SynthConfig, generate_clips
from qmoe.errors import ConfigError

TINY = SynthConfig(n_classes=12, sources_per_class_per_fold=1, variants_per_source=2)


def test_default_config_shape() -> None:
    cfg = SynthConfig()
    assert cfg.n_classes >= 12 and cfg.n_folds == 5
    assert cfg.n_clips == cfg.n_classes * 5 * 4 * 4 == 960
    assert len(CLASS_NAMES) >= cfg.n_classes and len(set(CLASS_NAMES)) == len(CLASS_NAMES)


def test_clips_cover_classes_and_folds() -> None:
    clips = list(generate_clips(TINY))
    assert len(clips) == TINY.n_clips
    assert {c.label for c in clips} == set(range(12))
    assert {c.fold for c in clips} == {1, 2, 3, 4, 5}
    assert len({c.clip_id for c in clips}) == len(clips)
    for c in clips:
        assert c.label_name == CLASS_NAMES[c.label]
        assert c.sample_rate == 16000
        assert c.waveform.dtype == np.float32 and c.waveform.shape == (int(1.5 * 16000),)
        assert np.isfinite(c.waveform).all() and 0 < np.abs(c.waveform).max() <= 1.0


def test_same_seed_same_clips_different_seed_different() -> None:
    a = list(generate_clips(TINY))
    b = list(generate_clips(TINY))
    c = list(generate_clips(dataclasses.replace(TINY, seed=1)))
    for x, y in zip(a, b, strict=True):
        assert x.clip_id == y.clip_id
        np.testing.assert_array_equal(x.waveform, y.waveform)
    assert all(not np.array_equal(x.waveform, z.waveform) for x, z in zip(a, c, strict=True))


def test_a_clip_does_not_depend_on_how_many_are_generated() -> None:
    cfg = SynthConfig(n_classes=2, sources_per_class_per_fold=1, variants_per_source=1)
    small = {c.clip_id: c.waveform for c in generate_clips(cfg)}
    big = {c.clip_id: c.waveform for c in generate_clips(TINY) if c.clip_id in small}
    assert small.keys() == big.keys()
    for k in small:
        np.testing.assert_array_equal(small[k], big[k])


def test_variants_of_a_source_share_group_and_fold() -> None:
    clips = list(generate_clips(SynthConfig(n_classes=12, sources_per_class_per_fold=2, variants_per_source=3)))
    by_group: dict[str, set[int]] = {}
    for c in clips:
        by_group.setdefault(c.group, set()).add(c.fold)
    assert all(len(f) == 1 for f in by_group.values())
    assert len(by_group) == 12 * 5 * 2
    sizes = {g: sum(c.group == g for c in clips) for g in by_group}
    assert set(sizes.values()) == {3}
    # variants differ (new onset, background, level), they are not copies
    first = [c.waveform for c in clips if c.group == clips[0].group]
    for x, y in itertools.combinations(first, 2):
        assert not np.array_equal(x, y)


def test_synth_table_has_twelve_classes_five_folds(synth_small: EmbeddingTable) -> None:
    assert synth_small.n_classes == 12 and synth_small.fold_ids == [1, 2, 3, 4, 5]
    assert synth_small.dim == 512
    assert synth_small.meta["dataset"] == "synth"
    for g in np.unique(synth_small.groups):
        assert len(np.unique(synth_small.folds[synth_small.groups == g])) == 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"n_classes": 1}, "n_classes"),
        ({"n_classes": 99}, "n_classes"),
        ({"n_folds": 1}, "n_folds"),
        ({"variants_per_source": 0}, "variants_per_source"),
        ({"snr_db": (20.0, 5.0)}, "snr_db"),
        ({"clip_seconds": 0.1}, "clip_seconds"),
        ({"seed": -1}, "seed"),
    ],
)
def test_config_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        SynthConfig(**kwargs)


def test_config_round_trips_through_a_dict() -> None:
    cfg = SynthConfig(snr_db=(1, 2), seed=3)
    assert SynthConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.to_dict()["snr_db"] == [1.0, 2.0]


@pytest.mark.slow
def test_difficulty_band_with_the_mlp_proxy(tmp_path) -> None:
    """A float MLP on standardised melstats must be neither lost nor saturated.

    DESIGN proxy: sklearn MLPClassifier((640, 320), early_stopping) trained on 4 folds,
    tested on the 5th; mean macro-F1 over the folds in [0.65, 0.90] (measured ~0.78).
    """
    from sklearn.metrics import f1_score
    from sklearn.neural_network import MLPClassifier
    from sklearn.preprocessing import StandardScaler

    from qmoe.data import load_table, synth_table_path

    table = load_table(synth_table_path(tmp_path))
    scores = []
    for fold in table.fold_ids:
        tr, te = table.folds != fold, table.folds == fold
        scaler = StandardScaler().fit(table.X[tr])
        mlp = MLPClassifier(hidden_layer_sizes=(640, 320), early_stopping=True, random_state=0)
        mlp.fit(scaler.transform(table.X[tr]), table.y[tr])
        scores.append(f1_score(table.y[te], mlp.predict(scaler.transform(table.X[te])), average="macro"))
    assert 0.65 <= float(np.mean(scores)) <= 0.90, scores
