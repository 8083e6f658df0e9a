"""A group of samples through a chain of layers at once: the batch path of the drivers. A
group is :data:`~.vnni.GROUP` rows, or :data:`~.vnni.GROUP_MAX` for a model whose weights do
not fit in L2 (:func:`group_size`).

A layer in the ``vpdpbusd`` layout (:data:`~qmoe.native.layout.INT8_VNNI`), the bit-plane one
with a ``vpdpbusd`` copy (:data:`~qmoe.native.layout.PLANES_VNNI`) or the ``vpdpwssd`` one
(:data:`~qmoe.native.layout.Q16_VNNI`) runs its rows in one pass over its weights
(:func:`~.dots.dots_int8_vnni`, :func:`~.dots.dots_planes_vnni`, :func:`~.dots.dots_q16_vnni`):
block of outputs by block, each block's weights loaded once per :data:`~.vnni.ROWS` rows and
read from memory once per group (from cache for the group's other rows) instead of once per row;
so does a float layer on AVX-512 (:mod:`.fblock`, its sums held in registers); any other layer
runs row by row
(:func:`~.chain.run_layer`). A row's arithmetic is the one-row path's, step for step (the same
quantization, exact integer dots, the same rescale), so its outputs are the same bit for bit
and never depend on its batch mates. Compiled into the drivers (:mod:`.drivers`), never alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qmoe.native.kernels.act import bias_relu, offset_bytes, pair_words, quantize_row, rescale
from qmoe.native.kernels.chain import part, run_layer
from qmoe.native.kernels.dots import dots_int8_vnni, dots_planes_vnni, dots_q16_vnni, lut32_bytes
from qmoe.native.kernels.fblock import BLOCK, float_block_rows
from qmoe.native.kernels.vnni import GROUP, GROUP_MAX, GROUP_WEIGHTS, ROWS
from qmoe.native.layout import (D_IN, F_OFF, FLOAT, INT8_VNNI, KIND, N_OUT, P0, P1, P2, P3, PLANES_VNNI, Q16_VNNI,
                                REC, RELU, W_OFF)
from qmoe.native.target import HAS_AVX512, HAS_VNNI


@njit(inline="always")
def carve_rows(scratch, o, width):  # noqa: ANN001, ANN201
    """The row-group buffers at :func:`~.chain.scratch_offsets` ``o``: ``hs, ys`` (float32, row
    g at ``g width``), ``xus`` (uint8, ``2 width`` bytes a row), ``a32s`` (int32, ``2 width``
    a row) and ``scales`` (float32, one per row), for :data:`~.vnni.GROUP_MAX` rows."""
    return (part(scratch, o[14], o[15], np.float32, 4), part(scratch, o[15], o[16], np.float32, 4),
            part(scratch, o[16], o[17], np.uint8, 1), part(scratch, o[17], o[18], np.int32, 4),
            part(scratch, o[18], o[18] + 4 * GROUP_MAX, np.float32, 4))


@njit(inline="always")
def batched(meta):  # noqa: ANN001, ANN201
    """Whether the row-group path helps this chain: a layer in a ``vpdpbusd`` or the ``vpdpwssd``
    layout, or a float layer on AVX-512 (:mod:`.fblock`)."""
    for r in range(0, meta.shape[0], REC):
        kind = meta[r + KIND]
        if (HAS_VNNI and (kind == INT8_VNNI or kind == Q16_VNNI or kind == PLANES_VNNI)) or (
                HAS_AVX512 and kind == FLOAT):
            return True
    return False


@njit(inline="always")
def group_size(w):  # noqa: ANN001, ANN201
    """Rows of a group for the model whose weights (every chain's, a mixture's too) are the
    bytes ``w``: :data:`~.vnni.GROUP_MAX` above :data:`~.vnni.GROUP_WEIGHTS`, else
    :data:`~.vnni.GROUP`. Every group reads them all once, from L2 only if they fit there."""
    return GROUP_MAX if w.shape[0] > GROUP_WEIGHTS else GROUP


@njit(inline="always")
def dots_float_rows(hs, width, m, d, n, w, w_off, accs):  # noqa: ANN001, ANN201
    """:func:`~.dots.dots_float` of the ``m`` rows ``hs[g width:]`` (a multiple of
    :data:`~.vnni.ROWS`) into ``accs[g width:]``: blocks of 64 outputs (the last one partial)
    by :func:`~.fblock.float_block_rows`, :data:`~.vnni.ROWS` rows at a time (the one-row
    loop's sums, bit for bit)."""
    for j0 in range(0, n, BLOCK):
        for g in range(0, m, ROWS):
            float_block_rows(hs[g * width:], width, w, w_off, d, n, j0, min(BLOCK, n - j0), accs[g * width:], width)


@njit
def run_layer_rows(r, m, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab, xus, a32s,  # noqa: ANN001, ANN201, PLR0913
                   scales):
    """Layer record ``r`` on ``m`` rows (a multiple of :data:`~.vnni.ROWS`, at most
    :data:`~.vnni.GROUP_MAX`): row g's ``hs[g width:][:d]`` ->
    ``ys[g width:][:n]``; the other buffers as :func:`~.chain.run_layer`'s."""
    if HAS_AVX512 and meta[r + KIND] == FLOAT:
        d, n, w_off, f_off = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF]
        accs = a32s.view(np.float32)
        dots_float_rows(hs, width, m, d, n, w, w_off, accs)
        for g in range(m):
            bias_relu(accs[g * width: (g + 1) * width], fp, f_off, n, meta[r + RELU] != 0,
                      ys[g * width: (g + 1) * width])
        return
    if HAS_VNNI and meta[r + KIND] == Q16_VNNI:
        d, n, w_off, f_off, pairs = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF], meta[r + P0]
        xws, a64s = xus.view(np.int32), a32s.view(np.int64)  # row g at g width / 2, at g width
        for g in range(m):
            scales[g], _ = quantize_row(hs[g * width: (g + 1) * width], d, xq)
            pair_words(xq, d, pairs, xws[g * width // 2: (g + 1) * width // 2])
        dots_q16_vnni(xws, width // 2, m, n, w, w_off, pairs, a64s, width)
        for g in range(m):
            rescale(a64s[g * width: (g + 1) * width], fp, f_off, n, scales[g], meta[r + RELU] != 0,
                    ys[g * width: (g + 1) * width])
        return
    if HAS_VNNI and meta[r + KIND] == PLANES_VNNI:
        d, n, w_off, f_off = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF]
        n_planes, groups = meta[r + P0], (d + 3) // 4
        for g in range(m):
            scales[g], _ = quantize_row(hs[g * width: (g + 1) * width], d, xq)
            offset_bytes(xq, d, 4 * groups, xus[g * width: (g + 1) * width])
        dots_planes_vnni(xus, width, m, n, w, w_off + lut32_bytes(d, n, n_planes), groups, n_planes, meta[r + P1],
                         meta[r + P2], meta[r + P3], tab, a32s)  # tab: free while rows run in groups
        for g in range(m):
            rescale(a32s[g * width: (g + 1) * width], fp, f_off, n, scales[g], meta[r + RELU] != 0,
                    ys[g * width: (g + 1) * width])
        return
    if meta[r + KIND] != INT8_VNNI:
        for g in range(m):
            run_layer(r, hs[g * width: (g + 1) * width], ys[g * width: (g + 1) * width], meta, fp, w, xq, xa,
                      words, acc, a32, accf, tab)
        return
    d, n, w_off, f_off = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF]
    relu, groups = meta[r + RELU] != 0, meta[r + P0]
    for g in range(m):
        scales[g], _ = quantize_row(hs[g * width: (g + 1) * width], d, xq)
        offset_bytes(xq, d, 4 * groups, xus[g * width: (g + 1) * width])
    dots_int8_vnni(xus, width, m, n, w, w_off, groups, a32s)
    for g in range(m):
        rescale(a32s[g * width: (g + 1) * width], fp, f_off, n, scales[g], relu, ys[g * width: (g + 1) * width])


@njit
def run_chain_rows(first, count, m, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab, xus,  # noqa: ANN001, ANN201, PLR0913
                   a32s, scales):
    """Records ``first .. first + count - 1`` on the ``m`` rows in ``hs``; returns
    the buffer (``hs`` or ``ys``) that holds the last layer's outputs."""
    for k in range(count):
        run_layer_rows((first + k) * REC, m, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab,
                       xus, a32s, scales)
        hs, ys = ys, hs
    return hs
