"""q1's two-pass fake quantization gives main's bits (cf8ed4c: ``abs_centred_sum`` for the scale,
then the former ``signs`` kernel, kept here verbatim) on adversarial weights and centres."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.quant import qat_kernels, qat_signs

pytestmark = pytest.mark.skipif(qat_kernels.njit is None, reason="numba is not installed")

if qat_kernels.njit is not None:
    from numba import njit

    @njit(error_model="numpy")
    def main_signs(w, mu, scale, out):  # noqa: ANN001, ANN201
        for i in range(w.shape[0]):
            out[i] = scale if w[i] - mu >= np.float32(0.0) else -scale


def test_constants_are_qat_kernels() -> None:
    assert (qat_signs.LANES, qat_signs.BLOCK) == (qat_kernels.SUM_LANES, qat_kernels.BLOCK)


def _weights(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    w = (rng.standard_normal(n) * 10.0 ** rng.integers(-40, 38, n)).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38], np.float32)
    for k, at in enumerate(rng.integers(0, n, min(n, 12))):
        w[at] = specials[k % specials.size]
    return w


@pytest.mark.parametrize("n", [1, 15, 16, 17, 31, 2047, 2048, 2049, 4111, 70 * 48, 20000])
@pytest.mark.parametrize("kind", ["adversarial", "normal", "ties"])
def test_centred_signs_then_signs_from_equal_mains(n: int, kind: str) -> None:
    rng = np.random.default_rng(n)
    if kind == "adversarial":
        w = _weights(n, n)
    elif kind == "normal":
        w = (rng.standard_normal(n) * 0.03).astype(np.float32)
    else:  # many weights equal to the centre: w - mu == 0 (+s), and its neighbours
        w = np.full(n, np.float32(0.25))
        w[::3] = np.nextafter(np.float32(0.25), np.float32(1))
        w[1::5] = np.nextafter(np.float32(0.25), np.float32(-1))
    mus = [np.float32(0.0), np.float32(-0.0), w[n // 2], np.float32(0.25), np.float32(np.nan), np.float32(np.inf)]
    for mu in mus:
        with np.errstate(all="ignore"):
            want_sum = qat_kernels.abs_centred_sum(w, mu)
            bits = np.empty(n // 16, np.uint16)
            got_sum = qat_signs.centred_signs(w, mu, bits)
            for scale in (np.float32(want_sum / n), np.float32(0.5), np.float32(np.nan), np.float32(-0.0)):
                want, got = np.empty_like(w), np.empty_like(w)
                main_signs(w, mu, scale, want)
                qat_signs.signs_from(w, mu, bits, scale, got)
                assert np.array_equal(got.view(np.int32), want.view(np.int32))
        assert (np.isnan(got_sum) and np.isnan(want_sum)) or \
            np.array_equal(np.array([got_sum]).view(np.int64), np.array([want_sum]).view(np.int64))
