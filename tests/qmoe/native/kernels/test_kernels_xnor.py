"""The binary layer's XNOR-popcount dots (blocks of 16 outputs on AVX2, one by one elsewhere)
against numpy's bit counts, integer for integer, on every numba target ``make test-kernels``
compiles for: widths around the block (16) and around the byte counters' widening (31 words)."""

from __future__ import annotations

import numpy as np
import pytest
from numba import njit

from qmoe.native.kernels.dots import dots_xnor
from qmoe.native.kernels.xnor import BLOCK, CHUNK


@njit
def _dots(xw, nw, d, n, w, w_off, acc):  # noqa: ANN001, ANN202
    dots_xnor(xw, nw, d, n, w, w_off, acc)


def _reference(xw: np.ndarray, wk: np.ndarray, d: int) -> np.ndarray:
    """``d - 2 popcount(x XOR w_j)`` for weights ``wk`` word-major (nw, n)."""
    diff = np.bitwise_xor(wk, xw[:, None])
    bits = np.unpackbits(diff.view(np.uint8).reshape(*diff.shape, 8), axis=-1).sum(axis=(0, 2))
    return d - 2 * bits.astype(np.int64)


@pytest.mark.parametrize("nw", [1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK + 1])
@pytest.mark.parametrize("n", [1, BLOCK - 1, BLOCK, BLOCK + 1, 3 * BLOCK + 2])
def test_dots_equal_bit_counts(nw: int, n: int) -> None:
    rng = np.random.default_rng(nw * 100 + n)
    d = 64 * nw
    xw = rng.integers(0, 2**64, nw, dtype=np.uint64, endpoint=False)
    wk = rng.integers(0, 2**64, (nw, n), dtype=np.uint64, endpoint=False)
    w_off = 64  # weights start past the buffer's head, as in a model's weight buffer
    w = np.zeros(w_off + wk.nbytes + 64, np.uint8)
    w[w_off: w_off + wk.nbytes] = wk.reshape(-1).view(np.uint8)
    acc = np.full(n + 64, -7, np.int64)
    _dots(xw, nw, d, n, w, w_off, acc)
    assert np.array_equal(acc[:n], _reference(xw, wk, d))
    assert (acc[n:] == -7).all()  # nothing written past the outputs


@pytest.mark.parametrize("nw", [CHUNK, CHUNK + 1, 3 * CHUNK])
def test_every_bit_different_stays_exact(nw: int) -> None:
    """Weights the complement of the input: every byte counter takes its largest count (8 a
    word, 248 at the widening) and each output's dot is -d."""
    n, d = 2 * BLOCK + 3, 64 * nw
    xw = np.full(nw, 0x5555_5555_5555_5555, np.uint64)
    wk = np.tile(~xw[:, None], (1, n))
    wk[:, 1::2] = xw[:, None]  # and every other output equal to it: +d
    w = np.frombuffer(wk.tobytes(), np.uint8).copy()
    acc = np.zeros(n, np.int64)
    _dots(xw, nw, d, n, w, 0, acc)
    want = np.where(np.arange(n) % 2 == 1, d, -d)
    assert np.array_equal(acc, want)
