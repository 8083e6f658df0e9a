""":data:`~.vnni.ROWS` samples through a chain of layers at once: the batch path of the drivers.

A layer in the ``vpdpbusd`` layout (:data:`~qmoe.native.layout.INT8_VNNI`) runs its rows in one
pass over its weights (:func:`~.dots.dots_int8_vnni`), so a batch reads each weight once per
:data:`~.vnni.ROWS` rows instead of once per row; so does a float layer on AVX-512
(:mod:`.fblock`, its sums held in registers); any other layer runs row by row
(:func:`~.chain.run_layer`). A row's arithmetic is the one-row path's, step for step (the same
quantization, exact integer dots, the same rescale), so its outputs are the same bit for bit
and never depend on its batch mates. Compiled into the drivers (:mod:`.drivers`), never alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qmoe.native.kernels.act import bias_relu, offset_bytes, quantize_row, rescale
from qmoe.native.kernels.chain import part, run_layer
from qmoe.native.kernels.dots import dots_int8_vnni, view
from qmoe.native.kernels.fblock import BLOCK, float_block_rows
from qmoe.native.kernels.vnni import ROWS
from qmoe.native.layout import D_IN, F_OFF, FLOAT, INT8_VNNI, KIND, N_OUT, P0, REC, RELU, W_OFF
from qmoe.native.target import HAS_AVX512, HAS_VNNI


@njit(inline="always")
def carve_rows(scratch, o, width):  # noqa: ANN001, ANN201
    """The row-group buffers at :func:`~.chain.scratch_offsets` ``o``: ``hs, ys`` (float32, row
    g at ``g width``), ``xus`` (uint8), ``a32s`` (int32) and ``scales`` (float32, one per row)."""
    return (part(scratch, o[14], o[15], np.float32, 4), part(scratch, o[15], o[16], np.float32, 4),
            part(scratch, o[16], o[17], np.uint8, 1), part(scratch, o[17], o[18], np.int32, 4),
            part(scratch, o[18], o[18] + 4 * ROWS, np.float32, 4))


@njit(inline="always")
def batched(meta):  # noqa: ANN001, ANN201
    """Whether the row-group path helps this chain: a layer in the ``vpdpbusd`` layout, or a
    float layer on AVX-512 (:mod:`.fblock`)."""
    for r in range(0, meta.shape[0], REC):
        kind = meta[r + KIND]
        if (HAS_VNNI and kind == INT8_VNNI) or (HAS_AVX512 and kind == FLOAT):
            return True
    return False


@njit(inline="always")
def dots_float_rows(hs, width, d, n, w, w_off, accs):  # noqa: ANN001, ANN201
    """:func:`~.dots.dots_float` of the :data:`~.vnni.ROWS` rows ``hs[g width:]`` into
    ``accs[g width:]``: whole blocks of outputs by :func:`~.fblock.float_block_rows`, the last
    ``n % BLOCK`` outputs by the one-row loop's arithmetic (the same sums either way)."""
    top = n - n % BLOCK
    for j0 in range(0, top, BLOCK):
        float_block_rows(hs, width, w, w_off, d, n, j0, accs, width)
    if top < n:
        wt = view(w, w_off, d * n, np.float32, 4)
        for g in range(ROWS):
            for j in range(top, n):
                accs[g * width + j] = np.float32(0.0)
            for i in range(d):
                xi = hs[g * width + i]
                for j in range(top, n):
                    accs[g * width + j] += xi * wt[i * n + j]


@njit
def run_layer_rows(r, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab, xus, a32s,  # noqa: ANN001, ANN201, PLR0913
                   scales):
    """Layer record ``r`` on :data:`~.vnni.ROWS` rows: row g's ``hs[g width:][:d]`` ->
    ``ys[g width:][:n]``; the other buffers as :func:`~.chain.run_layer`'s."""
    if HAS_AVX512 and meta[r + KIND] == FLOAT:
        d, n, w_off, f_off = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF]
        accs = a32s.view(np.float32)
        dots_float_rows(hs, width, d, n, w, w_off, accs)
        for g in range(ROWS):
            bias_relu(accs[g * width: (g + 1) * width], fp, f_off, n, meta[r + RELU] != 0,
                      ys[g * width: (g + 1) * width])
        return
    if meta[r + KIND] != INT8_VNNI:
        for g in range(ROWS):
            run_layer(r, hs[g * width: (g + 1) * width], ys[g * width: (g + 1) * width], meta, fp, w, xq, xa,
                      words, acc, a32, accf, tab)
        return
    d, n, w_off, f_off = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF]
    relu, groups = meta[r + RELU] != 0, meta[r + P0]
    for g in range(ROWS):
        scales[g], _ = quantize_row(hs[g * width: (g + 1) * width], d, xq)
        offset_bytes(xq, d, 4 * groups, xus[g * width: (g + 1) * width])
    dots_int8_vnni(xus, width, ROWS, n, w, w_off, groups, a32s)
    for g in range(ROWS):
        rescale(a32s[g * width: (g + 1) * width], fp, f_off, n, scales[g], relu, ys[g * width: (g + 1) * width])


@njit
def run_chain_rows(first, count, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab, xus,  # noqa: ANN001, ANN201, PLR0913
                   a32s, scales):
    """Records ``first .. first + count - 1`` on the :data:`~.vnni.ROWS` rows in ``hs``; returns
    the buffer (``hs`` or ``ys``) that holds the last layer's outputs."""
    for k in range(count):
        run_layer_rows((first + k) * REC, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab,
                       xus, a32s, scales)
        hs, ys = ys, hs
    return hs
