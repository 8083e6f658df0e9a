"""The 4-input table kernel's blocks (:mod:`qmoe.native.kernels.lut16`, AVX2 targets only; the
layouts' own tests cover whole layers): one block against numpy's look-ups, and two blocks in
one call (:func:`~qmoe.native.kernels.lut16.lut16_block2`) against two single calls."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.native.target import HAS_AVX2

pytestmark = pytest.mark.skipif(not HAS_AVX2, reason="the numba target has no AVX2")

#: Rows a block sums: one step, one chunk of steps, a chunk and a step, a 1536-input layer's.
NPAIRS = [2, 32, 34, 192]


def _aligned(n: int) -> np.ndarray:
    raw = np.zeros(n + 64, np.uint8)
    return raw[-raw.ctypes.data % 64:][:n]


def _run(tab: np.ndarray, w: np.ndarray, npairs: int, units: int, paired: bool) -> np.ndarray:
    """int32 sums of ``units`` consecutive blocks: by pairs (``paired``) or one call each."""
    from numba import njit

    from qmoe.native.kernels.lut16 import lut16_block, lut16_block2

    @njit
    def one(tab, w, npairs, units, out):  # noqa: ANN001, ANN202
        for k in range(units):
            lut16_block(tab, w, k * npairs * 32, npairs, out, k * 32)

    @njit
    def two(tab, w, npairs, units, out):  # noqa: ANN001, ANN202
        for k in range(0, units, 2):
            lut16_block2(tab, w, k * npairs * 32, npairs, out, k * 32)

    out = np.full(32 * units, -1, np.int32)
    (two if paired else one)(tab, w, np.int64(npairs), np.int64(units), out)
    return out


def _numpy(tab: np.ndarray, w: np.ndarray, npairs: int, units: int) -> np.ndarray:
    """The documented sums: output r of block k adds ``16 H_g + L_g`` at its 4-bit patterns."""
    t = tab.reshape(2 * npairs, 2, 16).astype(np.int64)  # group g: L = t[g, 0], H = t[g, 1]
    rows = w.reshape(units, npairs, 32)
    patterns = np.stack([rows & 15, rows >> 4], axis=2).reshape(units, 2 * npairs, 32)  # group 2t, 2t + 1
    g = np.arange(2 * npairs)[:, None]
    sums = (16 * t[g, 1, patterns] + t[g, 0, patterns]).sum(axis=1)  # (units, 32)
    return sums.reshape(-1)


@pytest.mark.parametrize("npairs", NPAIRS)
@pytest.mark.parametrize("extreme", [False, True], ids=["random", "largest"])
def test_blocks_equal_numpy_alone_and_in_pairs(npairs: int, extreme: bool) -> None:
    """Random tables and patterns, and the largest sums (every entry 60, the most four nibbles
    reach): the uint16 lanes flushed every chunk must not wrap, alone or two blocks at once."""
    rng = np.random.default_rng(npairs + extreme)
    units = 4
    tab, w = _aligned(64 * npairs), _aligned(32 * npairs * units)
    tab[:] = 60 if extreme else rng.integers(0, 61, tab.size)
    w[:] = 255 if extreme else rng.integers(0, 256, w.size)
    want = _numpy(tab, w, npairs, units)
    alone, paired = _run(tab, w, npairs, units, False), _run(tab, w, npairs, units, True)
    assert np.array_equal(alone, want)
    assert np.array_equal(paired, want)


def test_a_pair_reads_the_second_block_after_the_first() -> None:
    """Each block of a pair sums its own rows into its own 32 outputs: changing the second
    block's rows changes only outputs 32-63."""
    rng = np.random.default_rng(0)
    npairs = 34
    tab, w = _aligned(64 * npairs), _aligned(64 * npairs)
    tab[:] = rng.integers(0, 61, tab.size)
    w[:] = rng.integers(0, 256, w.size)
    before = _run(tab, w, npairs, 2, True)
    w[32 * npairs:] = rng.integers(0, 256, 32 * npairs)
    after = _run(tab, w, npairs, 2, True)
    assert np.array_equal(after[:32], before[:32]) and not np.array_equal(after[32:], before[32:])
    assert np.array_equal(after, _numpy(tab, w, npairs, 2))
