"""Dataset adapters (folder -> manifest) and audio decoding, on tiny generated folders."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from qmoe.data.adapters import ADAPTERS, AdapterOptions, build_manifest, quinn_group
from qmoe.data.audio import AudioError, load_clip, mp3_supported, read_audio
from qmoe.data.datasets import DATASETS
from qmoe.errors import ConfigError, DataError, UnknownNameError
from tests.dataset_layouts import make_esc50, make_quinn, make_urbansound8k, tone, write_audio


@pytest.fixture(scope="module")
def layouts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("layouts")
    return {"esc50": make_esc50(base / "ESC-50-master"), "urbansound8k": make_urbansound8k(base / "UrbanSound8K"),
            "quinn": make_quinn(base / "quinn")}


def test_every_real_dataset_has_an_adapter() -> None:
    assert set(ADAPTERS.names()) == {n for n in DATASETS.names() if not DATASETS.get(n).builtin}


def test_esc50_manifest_keeps_official_folds_and_groups(layouts) -> None:
    m = build_manifest("esc50", layouts["esc50"])
    assert len(m) == 3 * 5 * 2 and m.clip_seconds == 5.0
    assert m.label_names == ("dog", "rain", "chainsaw")  # targets 0, 10, 41 -> labels 0, 1, 2
    first = m.clips[0]
    assert (first.clip_id, first.label, first.fold, first.group) == ("1-100001-A-0.wav", 0, 1, "100001")
    chainsaw = [c for c in m.clips if c.label_name == "chainsaw"]
    assert {c.label for c in chainsaw} == {2} and {c.fold for c in chainsaw} == {1, 2, 3, 4, 5}
    assert all(c.path.is_file() and c.path.is_absolute() for c in m.clips)
    by_group: dict[str, set[int]] = {}
    for c in m.clips:
        by_group.setdefault(c.group, set()).add(c.fold)
    assert len(by_group) == 15 and all(len(f) == 1 for f in by_group.values())


def test_esc50_class_subsets(layouts) -> None:
    esc10 = build_manifest("esc50", layouts["esc50"], AdapterOptions(classes=("esc10",)))
    assert esc10.label_names == ("dog", "rain") and len(esc10) == 20
    assert esc10.details["classes"] == ["esc10"]
    two = build_manifest("esc50", layouts["esc50"], AdapterOptions(classes=("chainsaw", "rain")))
    assert two.label_names == ("rain", "chainsaw") and {c.label for c in two.clips} == {0, 1}
    with pytest.raises(ConfigError, match="esc50 has no class 'cat'; known: chainsaw, dog, rain"):
        build_manifest("esc50", layouts["esc50"], AdapterOptions(classes=("dog", "cat")))


def test_urbansound8k_manifest(layouts) -> None:
    m = build_manifest("urbansound8k", layouts["urbansound8k"])
    assert len(m) == 18 and m.clip_seconds == 4.0
    assert m.label_names == ("air_conditioner", "dog_bark", "gun_shot")
    assert {c.fold for c in m.clips} == {1, 2, 3}
    c = m.clips[0]
    assert c.clip_id == "fold1/7001-0-0-0.wav" and c.group == "7001"
    assert all(c.clip_id.startswith(f"fold{c.fold}/") for c in m.clips)


def test_quinn_manifest_folds_are_stratified_group_aware_and_seeded(layouts) -> None:
    m = build_manifest("quinn", layouts["quinn"])
    assert len(m) == 3 * 5 * 2  # README.txt ignored
    assert m.label_names == ("Anthropophony", "Biophony", "Geophony")
    assert m.clip_seconds == 2.0  # the most common duration
    assert m.clips[0].group == "site00_20190401_0630" and m.clips[0].clip_id.startswith("Anthropophony/")
    folds_of: dict[str, set[int]] = {}
    for c in m.clips:
        folds_of.setdefault(c.group, set()).add(c.fold)
    assert len(folds_of) == 15 and all(len(f) == 1 for f in folds_of.values())
    for label in range(3):
        assert len({c.fold for c in m.clips if c.label == label}) >= 2  # stratified
    assert [c.fold for c in build_manifest("quinn", layouts["quinn"]).clips] == [c.fold for c in m.clips]
    other = build_manifest("quinn", layouts["quinn"], AdapterOptions(seed=3))
    assert [c.fold for c in other.clips] != [c.fold for c in m.clips]
    assert m.details["k"] == 5 and m.details["seed"] == 0


def test_quinn_options(layouts) -> None:
    three = build_manifest("quinn", layouts["quinn"], AdapterOptions(k=3, clip_seconds=1.5))
    assert {c.fold for c in three.clips} == {1, 2, 3} and three.clip_seconds == 1.5
    # group = the recording index across classes: 5 groups, each holding every class
    per_take = build_manifest("quinn", layouts["quinn"], AdapterOptions(group_pattern=r"site\d(?P<group>\d)_"))
    assert {c.group for c in per_take.clips} == {"0", "1", "2", "3", "4"}
    assert all(len({c.fold for c in per_take.clips if c.group == g}) == 1 for g in "01234")
    with pytest.raises(DataError, match="cannot make 5 group-aware folds from 3 groups"):
        build_manifest("quinn", layouts["quinn"], AdapterOptions(group_pattern=r"site(\d)\d_"))
    # one group per class: every class sits in one fold, so it has no training rows there
    with pytest.raises(DataError, match=r"class \d \(.*\) only occurs in fold"):
        build_manifest("quinn", layouts["quinn"], AdapterOptions(group_pattern=r"site(\d)\d_", k=3))


@pytest.mark.parametrize("stem, group", [
    ("siteA_20190401_0630_12", "siteA_20190401_0630"),
    ("rec-7", "rec"),
    ("single", "single"),
    ("a_b_c", "a_b_c"),
])
def test_quinn_default_group_rule(stem: str, group: str) -> None:
    assert quinn_group(stem) == group


@pytest.mark.parametrize("dataset, needle", [
    ("esc50", "is not a ESC-50 folder: meta/esc50.csv not found"),
    ("urbansound8k", "is not a UrbanSound8K folder: metadata/UrbanSound8K.csv not found"),
    ("quinn", "is not a Quinn folder: expected one sub-folder per class"),
])
def test_wrong_layout_is_one_clear_error(layouts, dataset: str, needle: str) -> None:
    wrong = layouts["urbansound8k"] if dataset != "urbansound8k" else layouts["esc50"]
    with pytest.raises(DataError, match=needle) as err:
        build_manifest(dataset, wrong)
    assert "\n" not in str(err.value)


def test_nested_root_gets_a_hint(layouts) -> None:
    with pytest.raises(DataError, match=r"did you mean --root .*ESC-50-master"):
        build_manifest("esc50", layouts["esc50"].parent)


def test_missing_root_and_unknown_dataset(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such folder"):
        build_manifest("esc50", tmp_path / "nope")
    with pytest.raises(UnknownNameError, match="known: esc50, quinn, urbansound8k"):
        build_manifest("esc5", tmp_path)
    with pytest.raises(ConfigError, match="--group-pattern applies to quinn only"):
        build_manifest("esc50", tmp_path, AdapterOptions(group_pattern="x"))


def _copy_esc50(src: Path, dst: Path, edit) -> Path:
    import shutil

    shutil.copytree(src, dst)
    csv_path = dst / "meta" / "esc50.csv"
    rows = list(csv.reader(csv_path.open()))
    rows = edit(rows)
    with csv_path.open("w", newline="") as fh:
        csv.writer(fh).writerows(rows)
    return dst


def test_csv_naming_missing_files_says_how_many_and_which_first(layouts, tmp_path: Path) -> None:
    root = _copy_esc50(layouts["esc50"], tmp_path / "esc", lambda rows: rows)
    (root / "audio" / "2-100002-A-0.wav").unlink()
    (root / "audio" / "3-100003-B-0.wav").unlink()
    with pytest.raises(DataError, match=r"esc50\.csv: 2 of 30 files named in column 'filename' are missing "
                                        r"under .*audio \(first: 2-100002-A-0\.wav\)"):
        build_manifest("esc50", root)


def test_csv_defects_name_the_line(layouts, tmp_path: Path) -> None:
    def bad_fold(rows):
        rows[3][1] = "three"
        return rows

    root = _copy_esc50(layouts["esc50"], tmp_path / "a", bad_fold)
    with pytest.raises(DataError, match=r"line 4, column 'fold': 'three' is not a whole number"):
        build_manifest("esc50", root)

    root = _copy_esc50(layouts["esc50"], tmp_path / "b", lambda rows: [r[:5] + r[6:] for r in rows])
    with pytest.raises(DataError, match="column 'src_file' is missing"):
        build_manifest("esc50", root)

    def straddle(rows):
        rows[2][1] = "2"  # second take of fold 1's source moved to fold 2
        return rows

    root = _copy_esc50(layouts["esc50"], tmp_path / "c", straddle)
    with pytest.raises(DataError, match="group '100001' is in fold 2 here but also in fold 1"):
        build_manifest("esc50", root)


# -- audio ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("ext", [".wav", ".flac", ".ogg", ".mp3"])
@pytest.mark.parametrize("rate", [8000, 22050, 48000])
def test_load_clip_any_format_rate_and_channels(tmp_path: Path, ext: str, rate: int) -> None:
    if ext == ".mp3" and not mp3_supported():
        pytest.skip("libsndfile without MP3")
    if ext == ".mp3" and rate == 8000:
        rate = 16000  # MPEG layer III has no 8 kHz mode
    path = write_audio(tmp_path / f"x{ext}", tone(1000, 1.0, rate, channels=2), rate)
    clip = load_clip(path, sample_rate=16000, clip_seconds=1.5)
    assert clip.shape == (24000,) and clip.dtype == np.float32
    assert np.abs(clip[-4000:]).max() < 1e-3  # the padded end is silent
    spectrum = np.abs(np.fft.rfft(clip[:16000]))
    assert abs(int(spectrum.argmax()) - 1000) <= 3  # still a 1 kHz tone after resampling


def test_load_clip_cuts_and_mixes_to_mono(tmp_path: Path) -> None:
    stereo = np.stack([np.full(32000, 0.5), np.full(32000, -0.1)], axis=1).astype(np.float32)
    path = write_audio(tmp_path / "s.wav", stereo, 16000)
    clip = load_clip(path, sample_rate=16000, clip_seconds=1.0)
    assert clip.shape == (16000,)
    np.testing.assert_allclose(clip, 0.2, atol=1e-3)
    wave, rate = read_audio(path.read_bytes(), "s.wav")  # from bytes, as Ray workers do
    assert rate == 16000 and wave.shape == (32000,)


@pytest.mark.parametrize("content", [b"", b"RIFF not really a wave file", bytes(range(256)) * 40])
def test_unreadable_audio_is_an_audio_error(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(AudioError, match=r"bad\.wav: unreadable audio \(") as err:
        load_clip(path, sample_rate=16000, clip_seconds=1.0)
    assert "\n" not in str(err.value) and "BytesIO" not in str(err.value)
    with pytest.raises(AudioError, match=r"^bad\.wav: unreadable audio"):
        read_audio(content, "bad.wav")
