"""Every weight layout this CPU runs, for every kind, bit for bit against numpy.

The layouts a machine has depend on its CPU (AVX-512 BW, AVX2, neither); ``make test`` runs
these tests again with numba compiling for haswell (AVX2, no AVX-512) and for a CPU with no
vector extension, each from an empty numba cache, so every path is run on any x86 machine
that has it, and the portable paths on every machine.
"""

from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import pytest

from qmoe.native import Layer, NativeMLP
from qmoe.native import layout as L
from qmoe.native.layers import layouts, lower, unpack
from qmoe.native.target import HAS_AVX2, HAS_VNNI, HAS_VPERMW, target_cpu
from tests.qmoe.native.native_cases import VALUES, make_layer, make_mlp, reference

DIMS = [(1, 5), (7, 3, 2), (16, 33), (63, 40, 9), (200, 96, 48, 10), (1536, 640, 320, 50)]


def _codes(kind: str) -> list[int]:
    canonical = "int8" if kind == "int4" else kind
    small = np.zeros((1, 1)) if kind == "int4" else np.full((1, 1), 100)
    return layouts(canonical, small) if canonical == "int8" else layouts(canonical)


CASES = [(kind, code) for kind in VALUES for code in _codes(kind)]


@pytest.mark.parametrize("kind, code", CASES, ids=[f"{k}-{L.KIND_NAMES[c]}" for k, c in CASES])
@pytest.mark.parametrize("dims", DIMS, ids=["x".join(map(str, d)) for d in DIMS])
def test_every_layout_equals_numpy(kind: str, code: int, dims: tuple[int, ...]) -> None:
    layers = make_mlp(kind, dims, seed=sum(dims))
    mlp = NativeMLP(layers, [code] * len(layers))
    assert set(mlp.layouts) == {L.KIND_NAMES[code]}
    rng = np.random.default_rng(len(dims))
    x = rng.standard_normal((5, dims[0])).astype(np.float32) * rng.uniform(0.01, 100, (5, 1)).astype(np.float32)
    x[0] = 0.0  # all zero: the EPS clamp
    got = mlp(x)
    assert got.dtype == np.float32 and got.shape == (5, dims[-1])
    assert np.array_equal(got, reference(layers, x))
    for k, layer in enumerate(layers):  # the layout stores exactly the canonical weights
        assert np.array_equal(unpack(mlp.lowered[k]), np.asarray(layer.weight).astype(unpack(mlp.lowered[k]).dtype))


@pytest.mark.parametrize("kind, code", [c for c in CASES if c[0] != "fp32"],
                         ids=[f"{k}-{L.KIND_NAMES[c]}" for k, c in CASES if k != "fp32"])
def test_extreme_sums_stay_exact(kind: str, code: int) -> None:
    """Every product at its largest magnitude over a long row: no lane of any kernel (int8 and
    uint16 byte sums, int16 pairs, int32 blocks) may wrap."""
    d, n = 5000, 40
    lo, hi = VALUES[kind]
    w = np.full((n, d), lo if kind != "ternary" else -1)
    w[1::2] = hi
    layer = Layer(kind="int8" if kind == "int4" else kind, weight=w, bias=np.zeros(n, np.float32),
                  rescale=np.ones(n, np.float32), tau=0.0 if kind == "binary" else None)
    x = np.ones((5, d), np.float32)  # integers 127 (binary: +1) everywhere; 4 rows then 1
    x[1] = -1.0
    x[2, ::2] = -1.0
    x[3] = -x[2]
    got = NativeMLP([layer], [code])(x)
    assert np.array_equal(got, reference([layer], x))
    if kind != "binary":
        s = np.float32(127)
        dots = np.rint(x * s).astype(np.int64) @ w.T.astype(np.int64)
        assert np.array_equal(got, dots.astype(np.float32) / s)  # the documented rescale, r = 1


def test_int8_weights_of_minus_128_are_exact() -> None:
    """``vpsignb`` cannot negate -128: such weights are stored as -127 plus a correction (the
    ``vpdpbusd`` layout stores them as they are); 4 rows, then 1 left over."""
    rng = np.random.default_rng(0)
    w = rng.integers(-128, 128, size=(9, 70))
    w[3, :5] = -128
    layer = Layer(kind="int8", weight=w, bias=np.zeros(9, np.float32), rescale=np.ones(9, np.float32))
    x = rng.standard_normal((5, 70)).astype(np.float32)
    for code in layouts("int8", w):
        assert np.array_equal(NativeMLP([layer], [code])(x), reference([layer], x))


@pytest.mark.parametrize("kind", ["fp32", "q16", "int8", "ternary", "binary"])
def test_rows_do_not_depend_on_batch_mates(kind: str) -> None:
    mlp = NativeMLP(make_mlp(kind, (200, 96, 48, 10)))
    x = np.random.default_rng(1).standard_normal((40, 200)).astype(np.float32)
    batch = mlp(x)
    for i in (0, 17, 39):
        assert np.array_equal(mlp(x[i: i + 1]), batch[i: i + 1])
    assert mlp(np.empty((0, 200), np.float32)).shape == (0, 10)


BATCH_CASES = [(kind, code) for kind in ("int8", "int4", "ternary", "fp32", "q16") for code in _codes(kind)]


@pytest.mark.parametrize("kind, code", BATCH_CASES, ids=[f"{k}-{L.KIND_NAMES[c]}" for k, c in BATCH_CASES])
@pytest.mark.parametrize("rows", [1, 3, 4, 5, 7, 8, 11, 23, 256])
def test_batches_equal_numpy_and_each_row_alone(kind: str, code: int, rows: int) -> None:
    """Batches run several rows per pass over a layer's weights where the layout allows (the
    ``vpdpbusd`` one: 4 rows), the rows left over one by one: every row equals numpy, and its
    outputs run alone, whether it was in a group or left over."""
    layers = make_mlp(kind, (200, 96, 48, 10), seed=rows)
    mlp = NativeMLP(layers, [code] * len(layers))
    rng = np.random.default_rng(rows)
    x = rng.standard_normal((rows, 200)).astype(np.float32) * rng.uniform(0.01, 100, (rows, 1)).astype(np.float32)
    x[rows // 2] = 0.0  # all zero: the EPS clamp, inside a group where there is one
    got = mlp(x)
    assert np.array_equal(got, reference(layers, x))
    for i in sorted({0, rows // 2, rows - 1}):
        assert np.array_equal(mlp(x[i: i + 1]), got[i: i + 1])


def test_vnni_batch_path_mixes_with_other_layouts() -> None:
    """A chain of ``vpdpbusd`` layers between layers of other layouts: the batch path runs
    the others row by row, with the same outputs."""
    if not HAS_VNNI:
        pytest.skip("no AVX-512 VNNI in the CPU numba compiles for")
    rng = np.random.default_rng(3)
    layers = [make_layer("int8", 96, 200, True, rng), make_layer("ternary", 48, 96, True, rng),
              make_layer("int8", 40, 48, True, rng), make_layer("fp32", 10, 40, False, rng)]
    mlp = NativeMLP(layers)
    assert mlp.layouts[0] == mlp.layouts[2] == L.KIND_NAMES[L.INT8_VNNI]
    x = rng.standard_normal((10, 200)).astype(np.float32)
    got = mlp(x)
    assert np.array_equal(got, reference(layers, x))
    assert np.array_equal(mlp(x[9:]), got[9:])


@pytest.mark.parametrize("d", [1, 15, 16, 17, 200, 1536])
def test_binary_beta_is_summed_in_the_documented_order(d: int) -> None:
    """``beta = mean|x|``: 16 lanes (lane l adds elements l, l + 16, ...), then the lanes in
    order, then the tail, in float32: the same float on every machine."""
    from qmoe.native.kernels import load

    x = np.random.default_rng(d).standard_normal((3, d)).astype(np.float32) * np.float32(3.7)
    got = load().drivers.mean_abs_rows(x)
    for row, beta in zip(x, got[:, 0]):
        top = d - d % 16
        lanes = np.zeros(16, np.float32)
        for i in range(0, top, 16):
            lanes += np.abs(row[i: i + 16])
        s = np.float32(0.0)
        for v in list(lanes) + list(np.abs(row[top:])):
            s = np.float32(s + v)
        assert beta == np.float32(s / np.float32(d))


def test_bad_layers_are_refused() -> None:
    from qmoe.errors import ConfigError

    rng = np.random.default_rng(0)
    good = make_layer("int2", 4, 6, False, rng)
    with pytest.raises(ConfigError, match="int2 weights must be integers in -2..1"):
        NativeMLP([Layer(kind="int2", weight=good.weight + 3, bias=good.bias, rescale=good.rescale)])
    with pytest.raises(ConfigError, match="unknown kind 'q3'"):
        NativeMLP([Layer(kind="q3", weight=good.weight, bias=good.bias, rescale=good.rescale)])
    with pytest.raises(ConfigError, match="rescale must be 4 finite floats"):
        NativeMLP([Layer(kind="int2", weight=good.weight, bias=good.bias)])
    with pytest.raises(ConfigError, match="layer 1 takes 5 inputs but layer 0 gives 4"):
        NativeMLP([good, make_layer("int2", 3, 5, False, rng)])
    with pytest.raises(ConfigError, match="tau is given for binary layers"):
        NativeMLP([Layer(kind="binary", weight=np.ones((2, 3)), bias=np.zeros(2, np.float32),
                         rescale=np.ones(2, np.float32))])
    with pytest.raises(ValueError, match=r"takes \(batch, 6\) rows"):
        NativeMLP([good])(np.zeros((2, 5), np.float32))
    missing = L.LUT32 if not HAS_VPERMW else (L.LUT16 if not HAS_AVX2 else None)
    if missing is not None:
        with pytest.raises(ConfigError, match="cannot run int2 weights on this CPU"):
            lower(good, missing)


def test_kernels_take_the_path_of_the_cpu_numba_compiles_for() -> None:
    """The path is chosen by what numba compiles for, not by the host: ``make test`` runs these
    tests again for haswell (``QMOE_TEST_CPU=haswell``: AVX2, no AVX-512) and for x86-64
    (``QMOE_TEST_CPU=x86-64``: no vector extension), each from an empty numba cache."""
    from numba.core.registry import cpu_target

    _, name, features = cpu_target.target_context.codegen().magic_tuple()
    cpu, enabled = target_cpu()
    assert cpu == name
    assert enabled == {f[1:] for f in features.split(",") if f.startswith("+")}
    assert HAS_VPERMW == ("avx512bw" in enabled) and HAS_AVX2 == ("avx2" in enabled)
    assert HAS_VNNI == ("avx512vnni" in enabled)
    expected = os.environ.get("QMOE_TEST_CPU")
    if expected:
        assert cpu == expected and not HAS_VPERMW and not HAS_VNNI
        assert HAS_AVX2 == (expected == "haswell")


@pytest.mark.parametrize("d", [1, 7, 63, 64, 65, 128, 200])
def test_packed_words_layout_and_padding(d: int) -> None:
    """Bit i of a row is bit i % 64 of word i // 64; the padding is zero (never a mismatch)."""
    from qmoe.native.packing import pack_words, unpack_words

    bits = np.random.default_rng(d).random((3, d)) > 0.5
    words = pack_words(bits)
    assert words.dtype == np.uint64 and words.shape == (3, -(-d // 64))
    unpacked = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")
    assert np.array_equal(unpacked[:, :d].astype(bool), bits) and not unpacked[:, d:].any()
    assert np.array_equal(unpack_words(words, d), bits)


@pytest.mark.parametrize("n, d", [(1, 1), (16, 3), (17, 5), (50, 320)])
def test_float_panels_layout_and_padding(n: int, d: int) -> None:
    """Output ``16 p + k`` of input ``i`` is float ``(p d + i) 16 + k``; the padding outputs'
    weights are 0, and the layout reads back the weights it was given."""
    from qmoe.native.packing import pack_float_panels, unpack_float_panels

    weight = np.random.default_rng(n).standard_normal((n, d)).astype(np.float32)
    flat = pack_float_panels(weight).view(np.float32)
    panels = -(-n // L.PANEL)
    assert flat.size == panels * d * L.PANEL
    j, i = np.meshgrid(np.arange(n), np.arange(d), indexing="ij")
    assert np.array_equal(flat[(j // L.PANEL * d + i) * L.PANEL + j % L.PANEL], weight)
    padding = np.ones(flat.size, bool)
    padding[((j // L.PANEL * d + i) * L.PANEL + j % L.PANEL).ravel()] = False
    assert not flat[padding].any()
    assert np.array_equal(unpack_float_panels(flat.view(np.uint8), n, d), weight)


def test_fp32_layouts_put_panels_first_on_avx2_without_avx512() -> None:
    """Panels are the first fp32 layout for AVX2 without AVX-512 (its batch kernel's weights
    as one stream), the second elsewhere; both are always offered."""
    from qmoe.native.kernels import Backend

    for avx2, vpermw, first in [(True, False, L.FLOAT_PANELS), (True, True, L.FLOAT), (False, False, L.FLOAT)]:
        backend = Backend(name="test", avx2=avx2, vpermw=vpermw, drivers=None)
        assert layouts("fp32", backend=backend)[0] == first
        assert set(layouts("fp32", backend=backend)) == {L.FLOAT, L.FLOAT_PANELS}


def _round32(exact: Fraction) -> np.float32:
    """``exact`` rounded to the nearest float32, ties to even (the float64 nearest to it is
    within one float32 step of the answer)."""
    near = np.float32(float(exact))
    cands = [np.nextafter(near, np.float32(-np.inf)), near, np.nextafter(near, np.float32(np.inf))]
    return min(cands, key=lambda c: (abs(Fraction(float(c)) - exact), int(c.view(np.uint32)) & 1))


def test_fma_reference_and_kernel_round_once() -> None:
    """The tests' fused multiply-add (``native_cases.fma32``, the fp32 reference) and the
    kernels' (``simd.fma32``) both give ``a b + c`` rounded once, exactly (rational
    arithmetic), on random values and on sums whose float64 rounding lands halfway between two
    float32 values, where rounding twice would pick the wrong one."""
    from numba import njit

    from qmoe.native.kernels.simd import fma32 as kernel_fma
    from tests.qmoe.native.native_cases import fma32

    kernel = njit(lambda a, b, c: [kernel_fma(a[k], b[k], c[k]) for k in range(a.size)])
    one, u = np.float32(1.0), np.float32(2.0 ** -23)
    a = [(one + u) * np.float32(2.0 ** -12), -(one + u) * np.float32(2.0 ** -12)]  # a b = -+2^-24 (1 - 2^-46)
    b = [(one - u) * np.float32(2.0 ** -12)] * 2
    c = [one + u, one + 3 * u]  # halfway, just below / just above, next to an odd float32
    rng = np.random.default_rng(0)
    a, b, c = (np.concatenate([np.array(v, np.float32), rng.standard_normal(2000).astype(np.float32) * scale])
               for v, scale in ((a, 1.0), (b, 1.0), (c, 0.01)))
    exact = np.array([_round32(Fraction(float(x)) * Fraction(float(y)) + Fraction(float(z)))
                      for x, y, z in zip(a, b, c)])
    assert np.array_equal(fma32(a, b, c), exact)
    assert np.array_equal(np.array(kernel(a, b, c), np.float32), exact)
    twice = (a.astype(np.float64) * b + c).astype(np.float32)
    assert not np.array_equal(twice[:2], exact[:2])  # the cases do catch rounding twice


def test_kernel_sources_digest_is_current() -> None:
    """A kernel change must update SOURCES_SHA256: until then every process compiles the kernels
    without numba's disk cache (correct but ~20-30 s slower per trial)."""
    from qmoe.native.kernels import drivers

    assert drivers.sources_sha256() == drivers.SOURCES_SHA256, (
        f"update SOURCES_SHA256 in qmoe/native/kernels/drivers.py to {drivers.sources_sha256()}")


@pytest.mark.parametrize("code", layouts("fp32"), ids=[L.KIND_NAMES[c] for c in layouts("fp32")])
@pytest.mark.parametrize("rows", [4, 7, 64])
@pytest.mark.parametrize("dims", [(1536, 128, 64, 3), (1000, 80, 3)], ids=["whole", "remainders"])
def test_fp32_row_groups_in_whole_output_blocks(code: int, rows: int, dims: tuple[int, ...]) -> None:
    """Float layers whose widths are whole 64-output blocks (the AVX-512 batch kernel's, no
    remainder) and one with a remainder; inputs in whole chunks of 384 (AVX2's
    :data:`~qmoe.native.kernels.fblock.CHUNK`) and not; in both float layouts: equal numpy and
    each row alone, bit for bit."""
    layers = make_mlp("fp32", dims, seed=rows)
    mlp = NativeMLP(layers, [code] * len(layers))
    assert set(mlp.layouts) == {L.KIND_NAMES[code]}
    x = np.random.default_rng(rows).standard_normal((rows, dims[0])).astype(np.float32)
    got = mlp(x)
    assert np.array_equal(got, reference(layers, x))
    assert all(np.array_equal(mlp(x[i: i + 1]), got[i: i + 1]) for i in range(rows))


@pytest.mark.parametrize("code", layouts("q16"), ids=[L.KIND_NAMES[c] for c in layouts("q16")])
@pytest.mark.parametrize("d, n", [(1, 1), (2, 64), (255, 65), (257, 128), (513, 130)])
def test_q16_rows_equal_integer_dots_and_each_row_alone(code: int, d: int, n: int) -> None:
    """q16 layers (odd and even inputs, whole and partial blocks of 64 outputs, sums longer
    than one int32 chunk) on 1, 4, 7, 23 rows: each output is the exact int64 dot rescaled,
    the same whether the row ran in a group of rows or alone."""
    rng = np.random.default_rng(d + n)
    w = rng.integers(-32768, 32768, size=(n, d))
    w[0, :] = -32768
    layer = Layer(kind="q16", weight=w, bias=np.zeros(n, np.float32), rescale=np.ones(n, np.float32))
    mlp = NativeMLP([layer], [code])
    assert mlp.layouts == (L.KIND_NAMES[code],)
    for rows in (1, 4, 7, 23):
        x = rng.standard_normal((rows, d)).astype(np.float32)
        x[rows // 2] = np.where(np.arange(d) % 2 == 0, 1.0, -1.0)  # every activation +-127
        got = mlp(x)
        s = (np.float32(1.0) / np.abs(x).max(axis=1, keepdims=True)) * np.float32(127)
        dots = np.rint(x * s).astype(np.int64) @ w.T.astype(np.int64)
        assert np.array_equal(got, dots.astype(np.float32) * (np.float32(1.0) / s))
        for i in range(rows):
            assert np.array_equal(mlp(x[i: i + 1]), got[i: i + 1])
