"""``prepare_dataset``: folders -> tables, content caching, bad audio, timm backbones and weights."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import qmoe
from qmoe.data import build_manifest, load_table, prepared_table_path, resolve_table
from qmoe.data.cache import FileHasher
from qmoe.data.image_backbones import (INPUT_SIZES, TIMM_BACKBONES, WeightsError, build_timm,
                                       load_state_dict_file, mel_image)
from qmoe.data.prepare import PrepareConfig, prepare_dataset
from qmoe.errors import ConfigError, DataError
from tests.dataset_layouts import make_esc50, make_quinn, make_urbansound8k, tone, write_audio

MAKERS = {"esc50": make_esc50, "urbansound8k": make_urbansound8k, "quinn": make_quinn}


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {name: make(base / name) for name, make in MAKERS.items()}


@pytest.fixture
def esc50(layouts, tmp_path: Path) -> Path:
    """A private copy of the tiny ESC-50 folder (tests change its files)."""
    return Path(shutil.copytree(layouts["esc50"], tmp_path / "ESC-50-master"))


@pytest.fixture(scope="module")
def tiny_esc50(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """2 classes x 2 folds x 1 clip: enough for the (slow) timm networks."""
    return make_esc50(tmp_path_factory.mktemp("tiny") / "esc", classes=((0, "dog", True), (10, "rain", True)),
                      folds=2, per_fold=1)


def never_called(*args, **kwargs):
    raise AssertionError("the runner was called, but everything should come from the cache")


@pytest.mark.parametrize("dataset", sorted(MAKERS))
def test_prepare_each_layout_with_melstats(layouts, dataset: str, _private_cache: Path) -> None:
    manifest = build_manifest(dataset, layouts[dataset])
    result = prepare_dataset(dataset, layouts[dataset])
    t = result.table
    assert result.path == prepared_table_path(dataset, "melstats") and result.path.is_relative_to(_private_cache)
    assert len(t) == len(manifest) and t.dim == 512 and t.n_classes == 3
    assert t.label_names == manifest.label_names
    assert list(t.clip_ids) == [c.clip_id for c in manifest.clips]
    assert list(t.y) == [c.label for c in manifest.clips]
    assert list(t.folds) == [c.fold for c in manifest.clips]
    assert list(t.groups) == [c.group for c in manifest.clips]
    assert np.isfinite(t.X).all() and np.unique(t.X, axis=0).shape[0] == len(t)
    meta = t.meta
    assert meta["dataset"] == dataset and meta["backbone"] == "melstats" and meta["root"] == str(layouts[dataset])
    assert meta["sample_rate"] == 16000 and meta["mel"]["n_mels"] == 128 and meta["mel"]["n_fft"] == 2048
    assert meta["weights_sha256"] is None and meta["random_init"] is False
    assert meta["qmoe_version"] == qmoe.__version__ and meta["clip_seconds"] == manifest.clip_seconds
    assert (result.embedded, result.cached, result.skipped) == (len(t), 0, ())
    # sweeps and trials now find it by name
    assert resolve_table(dataset, None).content_hash() == t.content_hash()


def test_same_tone_in_different_formats_and_rates_embeds_alike(tmp_path: Path) -> None:
    root = tmp_path / "q"
    for cls, freq in (("Biophony", 3000), ("Geophony", 300)):
        for i, (ext, rate) in enumerate(((".wav", 44100), (".flac", 22050), (".ogg", 32000))):
            write_audio(root / cls / f"r{i}_0{ext}", tone(freq, 2.0, rate, seed=i), rate)
    t = prepare_dataset("quinn", root, PrepareConfig(k=3)).table
    same = [np.linalg.norm(t.X[i] - t.X[j]) for i, j in ((0, 1), (0, 2), (3, 4))]
    other = np.linalg.norm(t.X[0] - t.X[3])
    assert max(same) < 0.5 * other


def test_second_run_is_served_from_the_cache_and_a_changed_file_is_embedded_again(esc50: Path) -> None:
    first = prepare_dataset("esc50", esc50)
    assert (first.embedded, first.cached) == (30, 0)
    start = time.perf_counter()
    again = prepare_dataset("esc50", esc50, runner=never_called)
    assert time.perf_counter() - start < 5
    assert (again.embedded, again.cached) == (0, 30)
    assert again.table.content_hash() == first.table.content_hash()

    changed = esc50 / "audio" / "3-110003-A-10.wav"
    write_audio(changed, tone(2500, 5.0, 22050, seed=99), 22050)
    third = prepare_dataset("esc50", esc50)
    assert (third.embedded, third.cached) == (1, 29)
    row = list(third.table.clip_ids).index("3-110003-A-10.wav")
    diff = np.abs(third.table.X - first.table.X).max(axis=1)
    assert diff[row] > 0.1 and np.delete(diff, row).max() == 0


def test_other_settings_are_other_cache_entries(esc50: Path) -> None:
    prepare_dataset("esc50", esc50)
    small = prepare_dataset("esc50", esc50, PrepareConfig(n_mels=64, sample_rate=22050))
    assert small.embedded == 30 and small.table.dim == 256
    assert small.table.meta["sample_rate"] == 22050 and small.table.meta["mel"]["n_mels"] == 64


def test_file_hasher_trusts_an_unchanged_stat_and_rehashes_a_changed_file(tmp_path: Path) -> None:
    path = tmp_path / "a.wav"
    path.write_bytes(b"one")
    old = time.time() - 3600
    os.utime(path, (old, old))
    index = tmp_path / "index.json"
    h1 = FileHasher(index)
    digest = h1.hash(path)
    h1.save()
    h2 = FileHasher(index)
    assert h2.hash(path) == digest and h2.reads == 0  # served from the stat index
    path.write_bytes(b"two")  # same size, new content
    os.utime(path, (old + 10, old + 10))
    assert h2.hash(path) != digest and h2.reads == 1
    fresh = tmp_path / "b.wav"
    fresh.write_bytes(b"new")  # mtime = now: too recent to trust next time
    h2.hash(fresh)
    h2.save()
    h3 = FileHasher(index)
    h3.hash(fresh)
    assert h3.reads == 1


def test_unreadable_audio_fails_by_default_and_writes_nothing(esc50: Path) -> None:
    (esc50 / "audio" / "2-100002-B-0.wav").write_bytes(b"RIFF broken")
    with pytest.raises(DataError, match=r"2-100002-B-0\.wav: unreadable audio .*--on-bad-audio skip") as err:
        prepare_dataset("esc50", esc50)
    assert "\n" not in str(err.value)
    assert not prepared_table_path("esc50").exists()

    result = prepare_dataset("esc50", esc50, PrepareConfig(on_bad_audio="skip"))
    assert result.embedded == 0 and result.cached == 29  # the good clips were cached by the failed run
    assert len(result.table) == 29 and "2-100002-B-0.wav" not in set(result.table.clip_ids)
    assert result.skipped[0][0] == "2-100002-B-0.wav"
    meta = load_table(result.path).meta
    assert meta["n_skipped"] == 1 and meta["skipped"][0]["clip_id"] == "2-100002-B-0.wav"


def test_skipping_every_clip_of_a_class_is_an_error(esc50: Path) -> None:
    for f in (esc50 / "audio").glob("*-41.wav"):
        f.write_bytes(b"")
    with pytest.raises(DataError, match="every clip of class 'chainsaw' is unreadable"):
        prepare_dataset("esc50", esc50, PrepareConfig(on_bad_audio="skip"))
    assert not prepared_table_path("esc50").exists()


def test_timm_backbones_refuse_without_weights(tiny_esc50: Path) -> None:
    with pytest.raises(ConfigError, match=r"needs its ImageNet weights: pass --weights pretrained .* or --weights FILE"):
        prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="efficientnet_b3"))
    with pytest.raises(ConfigError, match="melstats has no weights"):
        prepare_dataset("esc50", tiny_esc50, PrepareConfig(random_init=True))
    with pytest.raises(ConfigError, match="--on-bad-audio 'maybe' is invalid"):
        PrepareConfig(on_bad_audio="maybe")


@pytest.mark.parametrize("backbone", sorted(TIMM_BACKBONES))
def test_timm_backbones_with_random_init(tiny_esc50: Path, backbone: str) -> None:
    result = prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone=backbone, random_init=True))
    t = result.table
    assert t.dim == TIMM_BACKBONES[backbone] == {"efficientnet_b3": 1536, "mobilenetv3_large_100": 1280}[backbone]
    assert len(t) == 4 and np.isfinite(t.X).all()
    assert result.path.name == f"esc50-{backbone}.parquet"
    assert t.meta["random_init"] is True and t.meta["random_init_seed"] == 0
    assert t.meta["image"]["size"] == list(INPUT_SIZES[backbone])
    net = build_timm(backbone, random_init=True)
    assert tuple(net.pretrained_cfg["input_size"][1:]) == INPUT_SIZES[backbone]


def test_mel_image_is_imagenet_normalised_with_low_bands_at_the_bottom() -> None:
    logmel = torch.full((1, 64, 40), -30.0)  # > 80 dB below the peak
    logmel[0, :4] = 0.0  # energy in the lowest bands only
    img = mel_image(logmel, (96, 96))
    assert img.shape == (1, 3, 96, 96)
    unnorm = img[0, 0] * 0.229 + 0.485
    assert unnorm[-1].mean() > 0.99 and unnorm[0].mean() < 0.01  # bottom row bright, top dark
    assert torch.allclose(img[0, 1] * 0.224 + 0.456, unnorm, atol=1e-5)


@pytest.fixture(scope="module")
def mobilenet_state(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The seeded random mobilenet, saved as a pretrained checkpoint would be (with a classifier)."""
    folder = tmp_path_factory.mktemp("weights")
    state = dict(build_timm("mobilenetv3_large_100", random_init=True).state_dict())
    state["classifier.weight"] = torch.zeros(1000, 1280)
    state["classifier.bias"] = torch.zeros(1000)
    from safetensors.torch import save_file

    paths = {"pt": folder / "mnv3.pth", "wrapped": folder / "wrapped.pt", "safetensors": folder / "mnv3.safetensors"}
    torch.save(state, paths["pt"])
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 3}, paths["wrapped"])
    save_file({k: v.contiguous() for k, v in state.items()}, str(paths["safetensors"]))
    return paths


def test_weights_files_of_every_kind_load_alike(mobilenet_state) -> None:
    loaded = {kind: load_state_dict_file(path) for kind, path in mobilenet_state.items()}
    ref = loaded.pop("pt")
    assert "classifier.weight" in ref and not any(k.startswith("module.") for k in loaded["wrapped"])
    for state in loaded.values():
        assert state.keys() == ref.keys() and all(torch.equal(state[k], ref[k]) for k in ref)


def test_weights_files_load_and_are_recorded(tiny_esc50: Path, mobilenet_state, tmp_path: Path) -> None:
    ref = prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="mobilenetv3_large_100", random_init=True),
                          out=tmp_path / "ref.parquet").table
    for kind in ("pt", "safetensors"):
        path = mobilenet_state[kind]
        t = prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="mobilenetv3_large_100", weights=path),
                            out=tmp_path / f"{kind}.parquet").table
        np.testing.assert_allclose(t.X, ref.X, rtol=1e-4, atol=1e-5)
        assert t.meta["random_init"] is False and len(t.meta["weights_sha256"]) == 64
        assert t.meta["weights"] == str(path)


def test_weights_that_do_not_match_are_one_line_and_write_nothing(tiny_esc50: Path, mobilenet_state,
                                                                  tmp_path: Path) -> None:
    out = tmp_path / "t.parquet"
    with pytest.raises(WeightsError, match=r"does not match backbone efficientnet_b3: \d+ with another shape "
                                           r"\(first: .*\); \d+ of \d+ tensors missing") as err:
        prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="efficientnet_b3",
                                                           weights=mobilenet_state["pt"]), out=out)
    assert "\n" not in str(err.value) and not out.exists()
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable state dict or safetensors file"):
        prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="mobilenetv3_large_100", weights=garbage),
                        out=out)
    with pytest.raises(DataError, match="no such file"):
        prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="mobilenetv3_large_100",
                                                           weights=tmp_path / "none.pt"), out=out)
    assert not out.exists()


def test_an_unwritable_out_fails_before_extraction(esc50: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a folder"):
        prepare_dataset("esc50", esc50, out=tmp_path, runner=never_called)
    with pytest.raises(ConfigError, match="cannot create /proc/qmoe"):
        prepare_dataset("esc50", esc50, out="/proc/qmoe/t.parquet", runner=never_called)
    (tmp_path / "file").write_text("x")
    with pytest.raises(ConfigError, match="cannot create"):
        prepare_dataset("esc50", esc50, out=tmp_path / "file" / "t.parquet", runner=never_called)


def test_resolve_table_picks_the_prepared_backbone(esc50: Path, tiny_esc50: Path) -> None:
    from qmoe.data.datasets import prepared_backbones

    prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="mobilenetv3_large_100", random_init=True))
    assert resolve_table("esc50", None).dim == 1280  # the only one prepared
    prepare_dataset("esc50", esc50)
    assert prepared_backbones("esc50") == ["melstats", "mobilenetv3_large_100"]
    assert resolve_table("esc50", None).dim == 512  # melstats first
    assert resolve_table("esc50", None, backbone="mobilenetv3_large_100").dim == 1280
    prepared_table_path("esc50").unlink()
    prepare_dataset("esc50", tiny_esc50, PrepareConfig(backbone="efficientnet_b3", random_init=True))
    with pytest.raises(DataError, match=r"prepared with several backbones \(efficientnet_b3, "
                                        r"mobilenetv3_large_100\); pick one table with --data"):
        resolve_table("esc50", None)
