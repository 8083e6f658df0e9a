"""The batch-1 paths of the packed forms (issue 8): both bit-plane layouts and the lean call.

- The table kernel (``lut_acc``, where the CPU has AVX-512 BW) and the bit-serial one
  (``bitserial_acc``) give the int64 matmul's dots exactly, for every weight kind, for D
  off the 64 and 15 grids, at batch 1 and more, including the int16 sums' worst case.
- A whole MLP gives the same floats in both layouts.
- The lean call (input read in place by address, no hook dispatch) gives the general
  path's values, never hands out the same output memory twice, and accepts views.
"""

from __future__ import annotations

import os
import numpy as np
import pytest
import torch

from qmoe.errors import QmoeError
from qmoe.models import Expert
from qmoe.quant import deploy, kernels
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import BitSerialLinear

LAYOUTS = [True, False] if kernels.HAS_VPERMW else [False]
KINDS = {"pm1": (-1, 1), "int2": (-2, -1, 0, 1), "ternary": (-1, 0, 1)}


class _Cfg:
    name = "test"


def _layer(q: np.ndarray, kind: str, lut: bool, seed: int = 0) -> BitSerialLinear:
    rscale = np.random.default_rng(seed).uniform(0.5, 2.0, q.shape[0]).astype(np.float32)
    bias = torch.from_numpy(np.random.default_rng(seed + 1).standard_normal(q.shape[0]).astype(np.float32))
    return BitSerialLinear.from_int(torch.from_numpy(q), kind, rscale, bias, _Cfg(), lut=lut)


@pytest.mark.parametrize("lut", LAYOUTS)
@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("d, n, b", [(1, 5, 3), (7, 3, 1), (15, 32, 2), (16, 33, 2), (63, 40, 4),
                                     (64, 64, 1), (200, 33, 5), (1536, 640, 2)])
def test_bit_plane_layouts_give_exact_dots(lut: bool, kind: str, d: int, n: int, b: int) -> None:
    rng = np.random.default_rng(d * n + b)
    q = rng.choice(np.array(KINDS[kind]), size=(n, d))
    layer = _layer(q, kind, lut)
    assert layer.params[4] == int(lut)
    assert np.array_equal(layer.int_weight(), q)  # the packing round-trips
    x = rng.integers(-128, 128, size=(b, d), dtype=np.int8)
    x[0, : min(d, 3)] = [-128, 127, 0][: min(d, 3)]
    assert np.array_equal(layer.int_dots(x), x.astype(np.int64) @ q.T)


@pytest.mark.parametrize("lut", LAYOUTS)
@pytest.mark.parametrize("kind, value", [("pm1", 1), ("pm1", -1), ("int2", -2), ("ternary", -1)])
def test_extreme_sums_stay_exact(lut: bool, kind: str, value: int) -> None:
    """Every product at its largest magnitude over a long row: the table kernel's int16 sums
    (flushed to int32 every 16 steps of 15 inputs) and the int32 ones must not wrap."""
    d, n = 5000, 40
    q = np.full((n, d), value)
    layer = _layer(q, kind, lut)
    x = np.full((2, d), -128, np.int8)
    x[1] = 127
    assert np.array_equal(layer.int_dots(x), x.astype(np.int64) @ q.T)


def test_both_layouts_run_the_same_mlp() -> None:
    if not kernels.HAS_VPERMW:
        pytest.skip("the table layout needs AVX-512 BW")
    rng = np.random.default_rng(0)
    dims = (200, 96, 48, 10)
    qs = [rng.choice(np.array(KINDS["ternary"]), size=(b, a)) for a, b in zip(dims[:-1], dims[1:])]
    mlps = [PackedMLP([_layer(q, "ternary", lut, seed=i) for i, q in enumerate(qs)], [True, True, False])
            for lut in (True, False)]
    x = torch.randn(9, dims[0])
    assert torch.equal(mlps[0](x), mlps[1](x))


def test_a_fused_mlp_takes_one_layout() -> None:
    q = np.ones((8, 8), np.int64)
    with pytest.raises(QmoeError, match="one weight layout"):
        PackedMLP([_layer(q, "pm1", True), _layer(q, "pm1", False)], [True, False])


@pytest.mark.parametrize("name", ["binary", "q1", "q2", "bitnet", "q8"])
def test_lean_call_equals_the_general_path(name: str) -> None:
    torch.manual_seed(0)
    expert = deploy(Expert(200, 10, (96, 48), name, dropout=0.1).eval())
    x = torch.randn(12, 200)
    fast = expert(x)  # contiguous float32 (B, D): read in place by address
    general = expert(x.double())  # any other input: copied through numpy
    assert torch.equal(fast, general)
    strided = torch.randn(200, 12).T  # (12, 200), not contiguous: the general path
    assert torch.equal(expert(strided), expert(strided.contiguous()))
    rows = torch.cat([expert(x[i : i + 1]) for i in range(12)])  # views with a storage offset
    assert torch.equal(rows, fast)
    y1 = expert(x[:1])
    y1_copy = y1.clone()
    y2 = expert(x[1:2])
    assert y1.data_ptr() != y2.data_ptr() and torch.equal(y1, y1_copy)  # outputs never shared
    assert torch.equal(expert(x.requires_grad_()), fast)
    assert expert(torch.empty(0, 200)).shape == (0, 10)


def test_kernels_take_the_path_of_the_cpu_numba_compiles_for() -> None:
    """The path is chosen by what numba compiles for, not by the host: ``make test`` runs the
    kernel tests again for haswell (AVX2, no AVX-512; ``QMOE_TEST_CPU=haswell``) from an empty
    numba cache, so the non-AVX-512 path is tested for real on an AVX-512 machine too."""
    from numba.core.registry import cpu_target

    _, name, features = cpu_target.target_context.codegen().magic_tuple()
    cpu, enabled = kernels.target_cpu()
    assert cpu == name
    assert enabled == {f[1:] for f in features.split(",") if f.startswith("+")}
    assert kernels.HAS_VPERMW == ("avx512bw" in enabled)
    expected = os.environ.get("QMOE_TEST_CPU")
    if expected:
        assert cpu == expected and not kernels.HAS_VPERMW
