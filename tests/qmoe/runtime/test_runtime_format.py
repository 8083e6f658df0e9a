"""The ``.qmoe`` file: written and read back exactly; every malformed, truncated or foreign file
is one :class:`ModelFileError` line, and nothing in a file is ever executed."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save

from qmoe.native import KINDS, Layer, Router
from qmoe.runtime import bits
from qmoe.runtime.format import (FORMAT, META_KEY, VERSION, ModelData, ModelFileError, model_header, model_tensors,
                                 read_model_file, write_model_file)

D, C = 12, 4


def layer(rng, kind: str, n: int, d: int, relu: bool) -> Layer:
    ints = {"int8": (-128, 128), "int2": (-2, 2), "ternary": (-1, 2), "q16": (-32768, 32768)}
    if kind == "fp32":
        w = rng.standard_normal((n, d)).astype(np.float32)
    elif kind in ("pm1", "binary"):
        w = np.where(rng.random((n, d)) < 0.5, -1, 1).astype(np.int8)
    else:
        lo, hi = ints[kind]
        w = rng.integers(lo, hi, (n, d)).astype(np.int16 if kind == "q16" else np.int8)
    rescale = None if kind == "fp32" else rng.random(n).astype(np.float32)
    return Layer(kind=kind, weight=w, bias=rng.standard_normal(n).astype(np.float32), rescale=rescale,
                     relu=relu, tau=0.05 if kind == "binary" else None)


def expert(rng, kind: str, hidden=(8, 6)) -> tuple[Layer, ...]:
    widths = [D, *hidden, C]
    return tuple(layer(rng, kind, widths[j + 1], widths[j], j < len(hidden)) for j in range(len(hidden) + 1))


def mixture(seed: int = 0) -> ModelData:
    rng = np.random.default_rng(seed)
    router = Router(layers=(layer(rng, "fp32", 5, D, True), layer(rng, "fp32", 3, 5, True),
                            layer(rng, "fp32", 2, 3, False)),
                    masks=(rng.random((4, 5)) > 0.2).astype(np.float32) / np.float32(0.8), temperature=1.0)
    return ModelData(in_dim=D, class_names=tuple(f"c{i}" for i in range(C)), mean=rng.standard_normal(D),
                     std=rng.random(D) + 0.5, experts=(("q4", expert(rng, "int8")), ("bitnet", expert(rng, "ternary"))),
                     router=router, alpha=0.3, top_k=1, trial={"trial_key": "abc"})


def single(kind: str) -> ModelData:
    rng = np.random.default_rng(1)
    return ModelData(in_dim=D, class_names=tuple(f"c{i}" for i in range(C)), mean=np.zeros(D), std=np.ones(D),
                     experts=((kind, expert(rng, kind)),))


def raw_file(path: Path, header: dict | None, tensors: dict[str, np.ndarray]) -> Path:
    meta = None if header is None else {META_KEY: json.dumps(header)}
    path.write_bytes(save({k: np.ascontiguousarray(v) for k, v in tensors.items()}, metadata=meta))
    return path


@pytest.mark.parametrize("model", [mixture(), *[single(k) for k in ("fp32", "q16", "int8", "int2", "pm1", "ternary", "binary")]],
                         ids=["mixture", "fp32", "q16", "int8", "int2", "pm1", "ternary", "binary"])
def test_a_written_file_reads_back_exactly(tmp_path: Path, model: ModelData) -> None:
    path = tmp_path / "m.qmoe"
    size = write_model_file(path, model)
    assert size == path.stat().st_size
    back = read_model_file(path)
    assert back.class_names == model.class_names and back.in_dim == D and back.top_k == model.top_k
    assert back.alpha == model.alpha and back.trial == model.trial
    np.testing.assert_array_equal(back.mean, model.mean)
    np.testing.assert_array_equal(back.std, model.std)
    for (name_a, layers_a), (name_b, layers_b) in zip(back.experts, model.experts, strict=True):
        assert name_a == name_b
        for a, b in zip(layers_a, layers_b, strict=True):
            assert (a.kind, a.relu, a.tau) == (b.kind, b.relu, b.tau)
            assert (a.weight.dtype.kind == "f") == (b.weight.dtype.kind == "f")  # integers decode as int64
            np.testing.assert_array_equal(a.weight, b.weight)
            np.testing.assert_array_equal(a.bias, b.bias)
    if model.router is not None:
        np.testing.assert_array_equal(back.router.masks, model.router.masks)
        assert back.router.temperature == model.router.temperature


@pytest.fixture
def good(tmp_path: Path) -> Path:
    path = tmp_path / "good.qmoe"
    write_model_file(path, mixture())
    return path


def one_line_error(path: Path, match: str) -> str:
    with pytest.raises(ModelFileError, match=match) as err:
        read_model_file(path)
    message = str(err.value)
    assert "\n" not in message and str(path) in message
    return message


def test_truncated_file(good: Path, tmp_path: Path) -> None:
    blob = good.read_bytes()
    for cut in (0, 5, 8, 100, len(blob) // 2, len(blob) - 1):
        bad = tmp_path / f"cut{cut}.qmoe"
        bad.write_bytes(blob[:cut])
        one_line_error(bad, "not a qmoe model file|truncated")


def test_random_bytes(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    for i, n in enumerate((3, 8, 64, 4096)):
        bad = tmp_path / f"random{i}.qmoe"
        bad.write_bytes(rng.bytes(n))
        one_line_error(bad, "not a qmoe model file")


def test_a_safetensors_file_of_another_program(tmp_path: Path) -> None:
    other = raw_file(tmp_path / "other.qmoe", None, {"weight": np.zeros((2, 2), np.float32)})
    one_line_error(other, "a safetensors file, but not a qmoe model .*written by another program")
    foreign = raw_file(tmp_path / "foreign.qmoe", {"format": "something-else", "version": 1},
                       {"weight": np.zeros(2, np.float32)})
    one_line_error(foreign, "not a qmoe model file .format 'something-else'")
    (tmp_path / "text.qmoe").write_bytes(save({"w": np.zeros(1, np.float32)}, metadata={META_KEY: "{not json"}))
    one_line_error(tmp_path / "text.qmoe", "its qmoe header is not JSON")


def test_wrong_version(tmp_path: Path) -> None:
    model = mixture()
    header, tensors = model_header(model), model_tensors(model)
    one_line_error(raw_file(tmp_path / "new.qmoe", {**header, "version": VERSION + 1}, tensors),
                   f"format version {VERSION + 1} is newer than this qmoe reads .{VERSION}.; upgrade qmoe")
    for bad in (0, "1", True, None):
        one_line_error(raw_file(tmp_path / "v.qmoe", {**header, "version": bad}, tensors), "invalid format version")


def test_missing_and_unexpected_tensors(tmp_path: Path) -> None:
    model = mixture()
    header, tensors = model_header(model), model_tensors(model)
    for name in ("expert.1.2.weight", "router.masks", "standardise.std", "expert.0.0.rescale"):
        rest = {k: v for k, v in tensors.items() if k != name}
        one_line_error(raw_file(tmp_path / "m.qmoe", header, rest), f"tensor {name} is missing")
    extra = {**tensors, "expert.9.0.weight": np.zeros(3, np.int8)}
    one_line_error(raw_file(tmp_path / "x.qmoe", header, extra), "unexpected tensor expert.9.0.weight")


def test_shape_dtype_and_value_mismatches(tmp_path: Path) -> None:
    model = mixture()
    header, tensors = model_header(model), model_tensors(model)
    cases = {
        "expert.0.1.weight": (np.zeros((6, 9), np.int8), r"has shape \(6, 9\), expected \(6, 8\)"),
        "expert.1.1.weight": (np.zeros((6, 2), np.int8), "is int8, expected uint8"),
        "expert.1.0.bias": (np.zeros(8, np.float64), "is float64, expected float32"),
        "router.masks": (np.zeros((4, 6), np.float32), r"has shape \(4, 6\), expected \(4, 5\)"),
        "expert.1.0.weight": (np.full((8, 3), 0b10101010, np.uint8), "ternary weights must be integers in -1..1"),
        "expert.0.2.bias": (np.full(C, np.nan, np.float32), "holds NaN or inf"),
        "standardise.std": (np.zeros(D), "standardise.std holds a value <= 0"),
    }
    for name, (value, match) in cases.items():
        one_line_error(raw_file(tmp_path / "s.qmoe", header, {**tensors, name: value}), match)
    pm1 = single("pm1")
    header, tensors = model_header(pm1), model_tensors(pm1)
    header["model"]["experts"][0]["layers"][1]["bits"] = 8  # int8 storage of a pm1 layer: not allowed
    one_line_error(raw_file(tmp_path / "z.qmoe", header, tensors), r"\(pm1\) stored in 8 bits \(allowed: \(1,\)\)")


def test_inconsistent_headers(tmp_path: Path) -> None:
    model = mixture()
    header, tensors = model_header(model), model_tensors(model)

    def edited(change) -> dict:
        h = json.loads(json.dumps(header))
        change(h)
        return h

    cases = [
        (lambda h: h["model"].pop("in_dim"), "header field model.in_dim is missing"),
        (lambda h: h["model"].update(in_dim="12"), "header field model.in_dim has type str"),
        (lambda h: h["model"]["experts"][0]["layers"][0].update(kind="exec"), "unknown kind 'exec'"),
        (lambda h: h["model"]["experts"][0]["layers"][1].update({"in": 7}), r"maps 7 -> 6, expected 8"),
        (lambda h: h.update(class_names=["a"]), "class_names holds 1 entries for 4 classes"),
        (lambda h: h["model"].update(router=None), "2 experts but no router"),
        (lambda h: h["model"]["curiosity"].update(variant="shared"), "curiosity variant 'shared' is unknown"),
        (lambda h: h["model"]["curiosity"].update(alpha=-1), "alpha = -1.0"),
        (lambda h: h["model"].update(top_k=3), "top_k 3 exceeds the 2 experts"),
    ]
    for change, match in cases:
        one_line_error(raw_file(tmp_path / "h.qmoe", edited(change), tensors), match)


class Boom:
    """Unpickling this runs code: it creates a marker file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_renamed_pickle_is_refused_and_never_unpickled(tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    bad = tmp_path / "model.qmoe"
    for protocol in (2, 4, 5):
        bad.write_bytes(pickle.dumps({"state_dict": Boom(marker)}, protocol=protocol))
        one_line_error(bad, "not a qmoe model file")
    import torch  # a torch checkpoint (a zip of pickles) renamed

    torch.save({"w": torch.zeros(3), "boom": Boom(marker)}, bad)
    one_line_error(bad, "not a qmoe model file")
    assert not marker.exists()


def test_missing_file_and_a_folder(tmp_path: Path) -> None:
    one_line_error(tmp_path / "none.qmoe", "no such file")
    one_line_error(tmp_path, "no such file")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_every_canonical_kind_is_stored_exactly_in_its_widths(kind: str) -> None:
    assert set(bits.WIDTHS) == set(KINDS)
    rng = np.random.default_rng(3)
    lo, hi = KINDS[kind] or (0, 0)
    for width in bits.WIDTHS[kind]:
        if kind == "fp32":
            w = rng.standard_normal((5, 77)).astype(np.float32)
        else:
            top = min(hi, (1 << (width - 1)) - 1) if 1 < width < 8 else hi
            w = rng.integers(max(lo, -top - 1), top + 1, (5, 77))  # every value the width holds
            if kind in ("pm1", "binary"):
                w = np.where(w > 0, 1, -1)
        stored = bits.encode(w, width)
        assert stored.dtype == np.dtype(bits.DTYPES[width]) and stored.shape == bits.stored_shape(5, 77, width)
        np.testing.assert_array_equal(bits.decode(stored, width, 77), w)
    assert bits.width_for("int8", np.array([[-8, 7]])) == 4 and bits.width_for("int8", np.array([[-9, 7]])) == 8


def test_writing_checks_the_model_first(tmp_path: Path) -> None:
    model = mixture()
    broken = ModelData(**{**model.__dict__, "class_names": ("only-one",)})
    with pytest.raises(ModelFileError, match=r"model.n_classes = 1 \(must be >= 2\)"):
        write_model_file(tmp_path / "w.qmoe", broken)
    assert not list(tmp_path.iterdir())
    assert FORMAT == "qmoe-model"
