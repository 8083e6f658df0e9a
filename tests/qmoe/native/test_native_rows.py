"""The batch path of the bit-plane kinds (q1, q2, bitnet): row groups by ``vpdpbusd`` over the
planes' bits (:data:`~qmoe.native.layout.PLANES_VNNI`) equal the one-row path and the integer
reference bit for bit, whatever the group a row ran in."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.native import Layer, NativeMLP
from qmoe.native import layout as L
from qmoe.native import packing as P
from qmoe.native.layers import layouts, lower
from qmoe.native.target import HAS_VNNI, HAS_VPERMW
from tests.qmoe.native.native_cases import VALUES, make_mlp, reference

PLANE_KINDS = ("ternary", "int2", "pm1")
CASES = [(kind, code) for kind in PLANE_KINDS for code in layouts(kind)]
ROWS = [1, 3, 4, 5, 16, 17, 20, 256]


@pytest.mark.parametrize("kind, code", CASES, ids=[f"{k}-{L.KIND_NAMES[c]}" for k, c in CASES])
@pytest.mark.parametrize("dims", [(200, 96, 48, 10), (7, 70, 65), (1536, 640, 320, 50)],
                         ids=["200x96x48x10", "7x70x65", "paper"])
def test_batches_equal_the_reference_and_each_row_alone(kind: str, code: int, dims: tuple[int, ...]) -> None:
    """Inputs not a multiple of 4 (padded groups; pm1 pads with weight -1) and outputs not a
    multiple of 64, at row counts in and out of whole groups of 4 and of 16."""
    layers = make_mlp(kind, dims, seed=len(dims) + dims[0])
    mlp = NativeMLP(layers, [code] * len(layers))
    rng = np.random.default_rng(dims[1])
    x = rng.standard_normal((max(ROWS), dims[0])).astype(np.float32)
    x *= rng.uniform(0.01, 100, (max(ROWS), 1)).astype(np.float32)
    x[5] = 0.0  # all zero: the EPS clamp
    alone = np.concatenate([mlp(x[i: i + 1]) for i in range(x.shape[0])])  # the one-row path
    assert np.array_equal(alone, reference(layers, x))
    for rows in ROWS:
        assert np.array_equal(mlp(x[:rows]), alone[:rows]), rows


@pytest.mark.parametrize("kind", PLANE_KINDS)
def test_extreme_activations_give_the_exact_integer_dots(kind: str) -> None:
    """Every activation +-127 against the kind's extreme weights over a long row, 16 rows then
    4 then 1: each output is the exact int64 dot (rescale 1)."""
    d, n = 3001, 70
    lo, hi = VALUES[kind]
    w = np.full((n, d), lo if kind != "ternary" else -1)
    w[1::2] = hi
    w[2, ::3] = hi
    layer = Layer(kind=kind, weight=w, bias=np.zeros(n, np.float32), rescale=np.ones(n, np.float32))
    rng = np.random.default_rng(d)
    x = np.where(rng.random((21, d)) < 0.5, -1.0, 1.0).astype(np.float32)
    x[0], x[1] = 1.0, -1.0
    for code in layouts(kind, w):
        got = NativeMLP([layer], [code])(x)
        dots = np.rint(x * np.float32(127)).astype(np.int64) @ w.T.astype(np.int64)
        assert np.array_equal(got, dots.astype(np.float32) / np.float32(127)), L.KIND_NAMES[code]


@pytest.mark.parametrize("kind", PLANE_KINDS)
@pytest.mark.parametrize("n, d", [(1, 1), (64, 4), (65, 9), (130, 1536)])
def test_planes_vnni_layout_round_trips(kind: str, n: int, d: int) -> None:
    """The row groups' copy holds the planes' bits and the sums of the weights the kernel
    multiplies by (padding included); the one-row bytes are LUT32's, unchanged."""
    rng = np.random.default_rng(n + d)
    lo, hi = VALUES[kind]
    q = rng.choice(np.array([-1, 1]), (n, d)) if kind == "pm1" else rng.integers(lo, hi + 1, (n, d))
    planes, shifts, offset = P.bit_planes(kind, q)
    data = P.pack_planes_vnni(planes, shifts, offset)
    back = P.unpack_planes_vnni(data, len(planes), n, d)
    assert len(back) == len(planes) and all(np.array_equal(a, b) for a, b in zip(back, planes))
    groups, n_pad = -(-d // 4), -(-n // 64) * 64
    sums = data[n_pad // 64 * groups * len(planes) * 32:].view(np.int32)
    assert sums.shape == (n_pad,)
    assert np.array_equal(sums[:n], q.sum(axis=1) + offset * (4 * groups - d))
    if HAS_VNNI and HAS_VPERMW:
        from qmoe.native.kernels.dots import lut32_bytes

        layer = Layer(kind=kind, weight=q, bias=np.zeros(n, np.float32), rescale=np.ones(n, np.float32))
        low, lut = lower(layer, L.PLANES_VNNI), lower(layer, L.LUT32)
        assert low.batch_bytes == data.size and lut32_bytes(d, n, len(planes)) == lut.w.size
        assert np.array_equal(low.w, np.concatenate([lut.w, data]))
        assert NativeMLP([layer], [L.PLANES_VNNI]).nbytes == NativeMLP([layer], [L.LUT32]).nbytes


def test_row_groups_read_their_own_copy() -> None:
    """Row groups read the ``vpdpbusd`` copy and single rows the LUT32 bytes: spoiling the copy
    changes the outputs of rows run in groups only."""
    if not (HAS_VNNI and HAS_VPERMW):
        pytest.skip("no AVX-512 VNNI in the CPU numba compiles for")
    layers = make_mlp("ternary", (200, 96, 10), seed=4)
    mlp = NativeMLP(layers)
    assert mlp.layouts == (L.KIND_NAMES[L.PLANES_VNNI],) * 2
    x = np.random.default_rng(4).standard_normal((22, 200)).astype(np.float32)
    before = mlp(x)
    low = mlp.lowered[0]
    mlp.w[low.w.size - low.batch_bytes: low.w.size] ^= 0xFF  # every bit of the copy flipped
    after = mlp(x)
    assert not np.array_equal(after[:16], before[:16])  # a group of 16 (weights made once for 16 rows)
    assert not np.array_equal(after[16:20], before[16:20])  # a group of 4 (made in registers)
    assert np.array_equal(after[20:], before[20:])  # the 2 rows left over, one by one
