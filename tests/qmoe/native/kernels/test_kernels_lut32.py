"""The ``vpmaddubsw`` tables of the 5-input kernel (:func:`~qmoe.native.kernels.lut32.lut32_tables`)
against numpy's subset sums (AVX-512 BW targets only; the layouts' own tests cover the rest)."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.native.target import HAS_VPERMW

pytestmark = pytest.mark.skipif(not HAS_VPERMW, reason="the numba target has no AVX-512 BW")


def _tables(xq: np.ndarray, ngroups: int) -> np.ndarray:
    from numba import njit

    from qmoe.native.kernels.lut32 import lut32_tables

    @njit
    def build(xq, ngroups, tab):  # noqa: ANN001, ANN202
        lut32_tables(xq, ngroups, tab)

    raw = np.zeros(32 * ngroups + 32, np.int16)
    tab = raw[(-raw.ctypes.data % 64) // 2:][: 32 * ngroups]  # rows on 64-byte boundaries
    build(xq, ngroups, tab)
    return tab.reshape(ngroups, 32)


@pytest.mark.parametrize("ngroups", [1, 2, 3, 309])
def test_tables_are_the_subset_sums_of_each_group_of_five(ngroups: int) -> None:
    rng = np.random.default_rng(ngroups)
    xq = rng.integers(-127, 128, 5 * ngroups + 64).astype(np.int8)
    xq[:5] = [127, 127, 127, 127, 127]  # the extremes: |T| up to 635
    if ngroups > 1:
        xq[5:10] = -127
    bits = (np.arange(32)[:, None] >> np.arange(5)) & 1  # (m, i)
    want = xq[: 5 * ngroups].astype(np.int64).reshape(ngroups, 5) @ bits.T  # (q, m)
    np.testing.assert_array_equal(_tables(xq, ngroups), want)
