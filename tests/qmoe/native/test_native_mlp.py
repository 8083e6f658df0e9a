"""NativeMLP.run_at: the compiled driver called without numba's dispatcher (qmoe/native/mlp.py)."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.native import NativeMLP
from qmoe.native.kernels import drivers, entry_point
from tests.qmoe.native.native_cases import VALUES, make_mlp, reference


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_run_at_equals_the_numpy_call_and_numpy(kind: str) -> None:
    layers = make_mlp(kind, (63, 40, 9), seed=3)
    mlp = NativeMLP(layers)
    rng = np.random.default_rng(0)
    for rows in (1, 5, 1, 8):  # the entry point is resolved at the first call, then reused
        x = rng.standard_normal((rows, 63)).astype(np.float32)
        out = np.full((rows, 9), np.nan, np.float32)
        mlp.run_at(x.ctypes.data, rows, out)
        assert np.array_equal(out, mlp(x))
        assert np.array_equal(out, reference(layers, x))
    assert mlp._mlp_at is not None and mlp._mlp_at is not drivers.mlp_at


@pytest.mark.parametrize("kind", sorted(VALUES))
def test_entry_equals_numpy_and_leaves_the_input_alone(kind: str) -> None:
    layers = make_mlp(kind, (63, 40, 9), seed=4)
    mlp = NativeMLP(layers)
    run, handle = mlp.entry()
    assert mlp.entry() == (run, handle)  # resolved once
    rng = np.random.default_rng(1)
    x = rng.standard_normal((17, 63)).astype(np.float32)
    before = x.copy()
    for rows in (1, 3, 1, 17):  # batch 1 reads the first layer's input in place
        out = np.full((rows, 9), np.nan, np.float32)
        run(x.ctypes.data, rows, handle, out)
        assert np.array_equal(out, reference(layers, x[:rows])) and np.array_equal(x, before)
        assert np.array_equal(mlp(x[:rows]), out) and np.array_equal(x, before)
    state = mlp.__getstate__()  # a copy or pickle must not keep the handle to mlp's arrays
    assert state["_entry"] is None and "_handle" not in state and mlp._entry == (run, handle)


def test_entry_point_of_a_plain_function_is_itself() -> None:
    def plain(a: int) -> int:
        return a + 1

    assert entry_point(plain, 1) is plain


def test_entry_point_of_a_driver_computes_what_the_dispatcher_does() -> None:
    x = np.random.default_rng(1).standard_normal((3, 70)).astype(np.float32)
    run = entry_point(drivers.mean_abs_rows, x)
    assert run is not drivers.mean_abs_rows
    assert np.array_equal(run(x), drivers.mean_abs_rows(x))
