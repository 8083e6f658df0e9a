"""``run_trial(..., save_dir=...)``: the trained model kept on disk, read back exactly, checked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from qmoe.errors import ConfigError, DataError
from qmoe.export.saved import INFO_FILE, MODEL_FILE, check_save_dir, find_saved_trial, load_saved_trial
from qmoe.spec import TrainConfig, TrialSpec
from qmoe.trial import run_trial, standard_stats
from qmoe.data.splits import train_val_test_indices


def quick(model: str, alpha: float = 0.0) -> TrialSpec:
    cfg = TrainConfig.defaults("," in model).replace(max_epochs=3)
    return TrialSpec(dataset="synth", fold=1, experts=tuple(model.split(",")), alpha=alpha, train=cfg,
                     latency_runs=20, measure_energy=False)


@pytest.fixture(scope="module")
def saved(synth_table, tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[TrialSpec, Path, object]]:
    base = tmp_path_factory.mktemp("saved")
    out = {}
    for model, alpha in (("q4", 0.0), ("bitnet,q8", 0.3)):
        spec = quick(model, alpha)
        result = run_trial(spec, synth_table, save_dir=base / model)
        out[model] = (spec, base / model, result)
    return out


@pytest.mark.parametrize("model", ["q4", "bitnet,q8"])
def test_saved_trial_reads_back_what_the_trial_trained(saved, synth_table, model: str) -> None:
    spec, path, result = saved[model]
    assert sorted(p.name for p in path.iterdir()) == [MODEL_FILE, INFO_FILE]
    s = load_saved_trial(path)
    assert s.trial_key == spec.trial_key == result.record.trial_key
    assert s.deploy_seed == spec.trial_seed and s.spec.key_fields() == spec.key_fields()
    assert s.class_names == synth_table.label_names and s.in_dim == synth_table.dim
    split = train_val_test_indices(synth_table, spec.fold, protocol=spec.protocol, seed=spec.trial_seed)
    mean, std = standard_stats(synth_table, split.train)
    np.testing.assert_array_equal(s.mean, mean)
    np.testing.assert_array_equal(s.std, std)
    net = s.build_model()
    assert all(torch.equal(v, s.state_dict[k]) for k, v in net.state_dict().items())
    test = s.info["test"]
    assert test["clip_id"] == [str(c) for c in synth_table.clip_ids[split.test]]
    assert len(test["pred"]) == result.record.n_test
    y = synth_table.y[split.test]
    assert np.mean(np.asarray(test["pred"]) == y) == pytest.approx(result.record.accuracy)  # the deployed preds
    assert ("expert" in test) == ("," in model)
    assert s.info["table"]["content_hash"] == synth_table.content_hash()


def test_a_save_folder_is_checked_before_training(tmp_path: Path, synth_table) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        check_save_dir(tmp_path / "file")
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="holds other files"):
        run_trial(quick("q4"), synth_table, save_dir=tmp_path / "busy")  # refused before training
    assert check_save_dir(tmp_path / "new" / "deeper") == tmp_path / "new" / "deeper"


def test_saving_again_replaces_the_folder(saved, synth_table, tmp_path: Path) -> None:
    spec, path, _ = saved["q4"]
    target = tmp_path / "again"
    target.mkdir()
    (target / INFO_FILE).write_text("{}")  # a previous (broken) save is replaced
    run_trial(spec, synth_table, save_dir=target)
    assert load_saved_trial(target).trial_key == spec.trial_key
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp folders left


def test_an_edited_or_foreign_folder_is_one_line(saved, tmp_path: Path) -> None:
    _, path, _ = saved["q4"]
    with pytest.raises(DataError, match="not a saved trial"):
        load_saved_trial(tmp_path)
    bad = tmp_path / "edited"
    bad.mkdir()
    (bad / MODEL_FILE).write_bytes((path / MODEL_FILE).read_bytes())
    info = json.loads((path / INFO_FILE).read_text())
    info["spec"]["fold"] = 2
    (bad / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(DataError, match="hashes to trial key .* not the stored"):
        load_saved_trial(bad)
    info["spec"]["alpha"] = 0.5  # a single model with curiosity: not a valid spec
    (bad / INFO_FILE).write_text(json.dumps(info))
    with pytest.raises(DataError, match="incomplete or invalid .--alpha applies to mixtures only"):
        load_saved_trial(bad)
    info = json.loads((path / INFO_FILE).read_text())
    (bad / INFO_FILE).write_text(json.dumps({**info, "version": 99}))
    with pytest.raises(DataError, match="saved-trial version 99"):
        load_saved_trial(bad)
    (bad / INFO_FILE).write_text(json.dumps(info))
    (bad / MODEL_FILE).write_bytes(b"garbage")
    with pytest.raises(DataError, match="model.safetensors: unreadable"):
        load_saved_trial(bad)


def test_a_trial_key_is_found_under_the_storage(saved, tmp_path: Path) -> None:
    spec, path, _ = saved["q4"]
    key = spec.trial_key
    (tmp_path / "sweep-a" / "models").mkdir(parents=True)
    (tmp_path / "sweep-a" / "models" / key).symlink_to(path)
    assert find_saved_trial(key, tmp_path) == tmp_path / "sweep-a" / "models" / key
    assert find_saved_trial(str(path), tmp_path / "elsewhere") == path
    for ref in ("0123456789abcdef", "*", key[:8]):
        with pytest.raises(DataError, match="neither a folder nor a trial key saved under"):
            find_saved_trial(ref, tmp_path)
    (tmp_path / "sweep-b" / "models").mkdir(parents=True)
    (tmp_path / "sweep-b" / "models" / key).symlink_to(path)
    with pytest.raises(DataError, match="is saved in 2 sweeps"):
        find_saved_trial(key, tmp_path)


def test_a_save_cut_short_leaves_no_folder_export_would_accept(saved, tmp_path: Path, monkeypatch) -> None:
    import safetensors.torch

    from qmoe.sweeps.store import SweepStore

    spec, path, _ = saved["q4"]
    model = load_saved_trial(path).build_model()
    assert (path / MODEL_FILE).stat().st_mode & 0o777 == (path / INFO_FILE).stat().st_mode & 0o777

    def torn(tensors, filename, metadata=None) -> None:  # half a file, then the process fails
        Path(filename).write_bytes(b"\x00" * 100)
        raise OSError("disk full")

    monkeypatch.setattr(safetensors.torch, "save_file", torn)
    store = SweepStore(tmp_path, "sweep")
    target = store.models_dir / spec.trial_key
    with pytest.raises(OSError, match="disk full"):
        from qmoe.export.saved import save_trial_model

        save_trial_model(target, spec=spec, model=model, mean=np.zeros(3), std=np.ones(3),
                         class_names=("a",), table={}, test={})
    assert not target.exists() and list(store.models_dir.iterdir()) == []
    # A killed process leaves its temporary folder: export never reads it, a sweep deletes it.
    leftover = store.models_dir / f".{spec.trial_key}.123.abcdef12.tmp"
    leftover.mkdir()
    (leftover / INFO_FILE).write_text("{}")
    with pytest.raises(DataError, match="neither a folder nor a trial key"):
        find_saved_trial(spec.trial_key, tmp_path)
    store.prepare_models_dir()
    assert list(store.models_dir.iterdir()) == []
