"""The drivers' 8-bit activation quantization and the rescale of integer dots (vectors, then one
by one) against numpy, value for value, on every numba target ``make test-kernels`` compiles for."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.native.kernels import load

EPS32 = np.float32(1e-8)


def _reference(h: np.ndarray) -> tuple[np.float32, np.ndarray]:
    """``(s, round(h s))`` as documented: ``s = (1 / max|h|) 127`` in float32 (NaN ignored by the
    max, 0 if every value is NaN, at least 1e-8), rounded half to even, clamped to [-128, 127],
    NaN to 0."""
    a = np.abs(h)
    m = np.float32(0.0) if np.isnan(a).all() else np.float32(np.nanmax(a))
    s = (np.float32(1.0) / max(m, EPS32)) * np.float32(127.0)
    with np.errstate(invalid="ignore"):
        v = np.rint(h * s)
        v = np.where(v < -128, np.float32(-128), v)
        v = np.where(v > 127, np.float32(127), v)
    return s, np.where(np.isnan(v), np.float32(0), v).astype(np.int8)


def _rows(d: int, rng: np.random.Generator) -> np.ndarray:
    x = (rng.standard_normal((9, d)) * 10.0 ** rng.uniform(-12, 30, (9, 1))).astype(np.float32)
    k = int(rng.integers(1, 128))
    x[1] = rng.integers(-2 * k, 2 * k + 1, d) / 2  # exact halves: ties to even
    x[1, 0] = k
    x[2, rng.integers(0, d)] = np.nan
    x[3, rng.integers(0, d)] = np.inf
    x[4, rng.integers(0, d)] = -np.inf
    x[5] = 0.0
    x[6] = np.nan
    x[7] = -0.0
    return x


@pytest.mark.parametrize("d", [1, 5, 63, 64, 65, 127, 128, 200, 640, 1536, 1537])
def test_quantize_rows_equal_numpy_value_for_value(d: int) -> None:
    rng = np.random.default_rng(d)
    x = _rows(d, rng)
    xq = np.full((x.shape[0], d), 99, np.int8)
    with np.errstate(invalid="ignore"):
        scales = load().drivers.quantize_rows(x, xq)
    for b in range(x.shape[0]):
        s, q = _reference(x[b])
        assert scales[b] == s or (np.isnan(s) and np.isnan(scales[b])), b
        np.testing.assert_array_equal(xq[b], q, err_msg=f"row {b}")


def test_quantized_values_use_the_whole_grid_and_never_minus_128() -> None:
    x = np.linspace(-1.0, 1.0, 1536, dtype=np.float32)[None, :].copy()
    xq = np.empty((1, 1536), np.int8)
    load().drivers.quantize_rows(x, xq)
    assert xq.min() == -127 and xq.max() == 127
    assert set(np.unique(xq)) == set(range(-127, 128))


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
@pytest.mark.parametrize("relu", [False, True])
def test_rescale_equals_numpy_bit_for_bit(dtype: type, relu: bool) -> None:
    from numba import njit

    from qmoe.native.kernels.act import rescale

    @njit
    def run(acc, fp, f_off, n, s, relu, out):  # noqa: ANN001, ANN202
        rescale(acc, fp, f_off, n, s, relu, out)

    rng = np.random.default_rng(int(relu) + 2 * (dtype is np.int64))
    for n in (1, 15, 16, 17, 50, 320, 640, 643):
        f_off = int(rng.integers(0, 5))
        acc = rng.integers(-(2**31) + 1, 2**31 - 1, n + 16).astype(dtype)
        if dtype is np.int64:
            acc[::3] = rng.integers(-(2**62), 2**62, acc[::3].size)  # int64 -> float32 rounds
        fp = (rng.standard_normal(f_off + 2 * n) * 10.0 ** rng.uniform(-20, 20)).astype(np.float32)
        fp[f_off + n + n // 2] = np.nan  # a NaN bias: NaN, or 0 after the ReLU
        s = np.float32(10.0 ** rng.uniform(-10, 10))
        out = np.full(n + 16, 7.0, np.float32)
        run(acc, fp, f_off, n, s, relu, out)
        with np.errstate(invalid="ignore", over="ignore"):
            want = acc[:n].astype(np.float32) * (fp[f_off: f_off + n] / s) + fp[f_off + n: f_off + 2 * n]
            want = np.where(want > 0, want, np.float32(0.0)) if relu else want
        np.testing.assert_array_equal(out[:n].view(np.uint32), want.astype(np.float32).view(np.uint32), err_msg=str(n))
        assert (out[n:] == 7.0).all()
