"""A group of samples through a chain of layers at once: the batch path of the drivers. A
group is :data:`~.vnni.GROUP` rows, or :data:`~.vnni.GROUP_MAX` for a model whose weights do
not fit in L2 (:data:`~.fblock.FGROUP` if its layers are all float ones; :func:`group_size`).

A layer in the ``vpdpbusd`` layout (:data:`~qmoe.native.layout.INT8_VNNI`), the bit-plane one
with a ``vpdpbusd`` copy (:data:`~qmoe.native.layout.PLANES_VNNI`) or the int16 pairs one
(:data:`~qmoe.native.layout.Q16_VNNI`, also on AVX2) runs its rows in one pass over its weights
(:func:`~.dots.dots_int8_vnni`, :func:`~.dots.dots_planes_vnni`, :func:`~.dots.dots_q16_vnni`):
block of outputs by block, each block's weights loaded once per :data:`~.vnni.ROWS` rows and
read from memory once per group (from cache for the group's other rows) instead of once per row;
so does a float layer on AVX-512 or AVX2 (:mod:`.fblock`, its sums held in registers), and an
AVX2 int8 or int4 layer (:func:`dots_avx2_rows`: a tile of outputs for each row of the group in
turn, its weights read from memory once per group); any other layer runs row by row
(:func:`~.chain.run_layer`). A row's arithmetic is the one-row path's, step for step (the same
quantization, exact integer dots, the same rescale), so its outputs are the same bit for bit
and never depend on its batch mates. Compiled into the drivers (:mod:`.drivers`), never alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qmoe.native.kernels.act import bias_relu, offset_bytes, pair_words, quantize_row, rescale
from qmoe.native.kernels.chain import part, run_layer
from qmoe.native.kernels.dots import dots_int8_vnni, dots_planes_vnni, dots_q16_vnni, lut32_bytes, view
from qmoe.native.kernels.fblock import (BLOCK, CHUNK, FBLOCK, FGROUP, FROWS, FSTEP, LANES, float_block_rows,
                                        float_block_rows4, panel_strides)
from qmoe.native.kernels.simd import int4_rows4, int8_rows4
from qmoe.native.kernels.vnni import GROUP, GROUP_MAX, GROUP_WEIGHTS, ROWS
from qmoe.native.layout import (D_IN, F_OFF, FLOAT, FLOAT_PANELS, INT4_AVX2, INT8_AVX2, INT8_VNNI, KIND, N_OUT, P0,
                                P1, P2, P3, PANEL, PLANES_VNNI, Q16_VNNI, REC, RELU, W_OFF)
from qmoe.native.target import HAS_AVX2, HAS_VNNI

#: Outputs of an AVX2 int8 or int4 layer (:func:`dots_avx2_rows`) each row of a group runs
#: before the next outputs: their weights (``TILE x`` a row of ``d`` bytes, 10 KB for d = 640)
#: stay in the L1 cache for the group's rows, and a row's activations for the tile's steps.
TILE = 16


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
    layout, or a float layer on AVX-512 or AVX2 (:mod:`.fblock`)."""
    for r in range(0, meta.shape[0], REC):
        kind = meta[r + KIND]
        if (HAS_VNNI and (kind == INT8_VNNI or kind == PLANES_VNNI)) or (
                FBLOCK and (kind == FLOAT or kind == FLOAT_PANELS)) or (
                (HAS_VNNI or HAS_AVX2) and kind == Q16_VNNI) or (
                HAS_AVX2 and (kind == INT8_AVX2 or kind == INT4_AVX2)):
            return True
    return False


@njit(inline="always")
def group_size(w, meta):  # noqa: ANN001, ANN201
    """Rows of a group for the model whose weights (every chain's, a mixture's too) are the
    bytes ``w`` and whose layer records are ``meta``: :data:`~.vnni.GROUP_MAX` above
    :data:`~.vnni.GROUP_WEIGHTS` (:data:`~.fblock.FGROUP` if every layer is a float one), else
    :data:`~.vnni.GROUP`. Every group reads them all once, from L2 only if they fit there."""
    if w.shape[0] <= GROUP_WEIGHTS:
        return GROUP
    for r in range(0, meta.shape[0], REC):
        if meta[r + KIND] != FLOAT and meta[r + KIND] != FLOAT_PANELS:
            return GROUP_MAX
    return FGROUP


@njit(inline="always")
def dots_float_rows(hs, width, m, d, n, w, w_off, accs, panels):  # noqa: ANN001, ANN201
    """:func:`~.dots.dots_float` (``panels``: :func:`~.dots.dots_float_panels`) of the ``m``
    rows ``hs[g width:]`` (a multiple of :data:`~.vnni.ROWS`) into ``accs[g width:]``: blocks of
    :data:`~.fblock.BLOCK` outputs (the last one partial) by :func:`~.fblock.float_block_rows`,
    :data:`~.fblock.FROWS` rows at a time while the rows left are a multiple of
    :data:`~.vnni.ROWS`, then :data:`~.vnni.ROWS` at a time (the one-row loop's sums, bit for
    bit). (D, N) weights run :data:`~.fblock.CHUNK` inputs at a time; a block's panels are read
    in sequence, whole."""
    chunk = d if panels else CHUNK
    big = m // FSTEP * FSTEP
    for j0 in range(0, n, BLOCK):
        wbase, qstride = panel_strides(j0, d) if panels else (j0, LANES)
        istride = PANEL if panels else n
        for i0 in range(0, d, chunk):
            i1 = min(d, i0 + chunk)
            for g in range(0, big, FROWS):
                float_block_rows(hs[g * width:], width, w, w_off, i0, i1, wbase, qstride, istride, 0, j0,
                                 min(BLOCK, n - j0), accs[g * width:], width)
            for g in range(big, m, ROWS):
                float_block_rows4(hs[g * width:], width, w, w_off, i0, i1, wbase, qstride, istride, 0, j0,
                                  min(BLOCK, n - j0), accs[g * width:], width)


@njit(inline="always")
def dots_avx2_rows(xs8, width, m, n, w, w_off, nchunks, flush, nibbles, a32s):  # noqa: ANN001, ANN201, PLR0913
    """:func:`~.dots.dots_int8_avx2` (``nibbles`` False; before its corrections) or
    :func:`~.dots.dots_int4_avx2` (True; before its ``- 8 xsum``) of the ``m`` rows whose
    activations are ``xs8[2 g width:]`` (int8; then their absolute values, int8 only) into
    ``a32s[g width:]``: :data:`TILE` outputs at a time, 4 by 4 (:func:`~.simd.int8_rows4`), for
    each row in turn. Each row's dots are the one-row kernel's calls, with the same arguments."""
    stride = 32 * nchunks
    for t in range(0, n, TILE):
        for g in range(m):
            xs = xs8[2 * g * width: (2 * g + 1) * width]
            xa = xs8[(2 * g + 1) * width: (2 * g + 2) * width]
            for r in range(t, min(n, t + TILE), 4):
                if nibbles:
                    int4_rows4(xs, xs, w, w_off + r * stride, stride, nchunks, flush, a32s, g * width + r)
                else:
                    int8_rows4(xs, xa, w, w_off + r * stride, stride, nchunks, flush, a32s, g * width + r)


@njit(inline="always")
def run_avx2_rows(r, m, hs, ys, width, meta, fp, w, xus, a32s, scales):  # noqa: ANN001, ANN201, PLR0913
    """An :data:`~qmoe.native.layout.INT8_AVX2` or :data:`~qmoe.native.layout.INT4_AVX2` layer
    record ``r`` on ``m`` rows: each row quantized and its dots corrected and rescaled as
    :func:`~.chain.run_layer` does it, the dots by :func:`dots_avx2_rows`."""
    d, n, w_off, f_off = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF]
    nchunks, flush, relu = meta[r + P0], meta[r + P1], meta[r + RELU] != 0
    nibbles = meta[r + KIND] == INT4_AVX2
    xs8 = xus.view(np.int8)
    top = 32 * nchunks * (2 if nibbles else 1)  # the inputs the kernel reads
    for g in range(m):
        xq = xs8[2 * g * width: (2 * g + 1) * width]
        scales[g], _ = quantize_row(hs[g * width: (g + 1) * width], d, xq)
        for i in range(d, top):
            xq[i] = 0
        if not nibbles:
            xa = xs8[(2 * g + 1) * width: (2 * g + 2) * width]
            for i in range(top):
                xa[i] = np.int8(abs(np.int32(xq[i])))
    dots_avx2_rows(xs8, width, m, n, w, w_off, nchunks, flush, nibbles, a32s)
    ncorr = meta[r + P2]
    for g in range(m):
        acc = a32s[g * width: (g + 1) * width]
        xq = xs8[2 * g * width: (2 * g + 1) * width]
        if nibbles:  # the sum of the integers, as quantize_row gave it
            xsum = 0
            for i in range(d):
                xsum += np.int64(xq[i])
            for j in range(n):
                acc[j] -= np.int32(8 * xsum)
        else:
            corr = view(w, w_off + 32 * nchunks * ((n + 3) // 4 * 4), 2 * ncorr, np.int32, 4)
            for c in range(ncorr):
                acc[corr[2 * c]] -= np.int32(xq[corr[2 * c + 1]])
        rescale(acc, fp, f_off, n, scales[g], relu, ys[g * width: (g + 1) * width])


@njit
def run_layer_rows(r, m, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab, xus, a32s,  # noqa: ANN001, ANN201, PLR0913
                   scales):
    """Layer record ``r`` on ``m`` rows (a multiple of :data:`~.vnni.ROWS`, at most
    :data:`~.vnni.GROUP_MAX`): row g's ``hs[g width:][:d]`` ->
    ``ys[g width:][:n]``; the other buffers as :func:`~.chain.run_layer`'s."""
    if FBLOCK and (meta[r + KIND] == FLOAT or meta[r + KIND] == FLOAT_PANELS):
        d, n, w_off, f_off = meta[r + D_IN], meta[r + N_OUT], meta[r + W_OFF], meta[r + F_OFF]
        accs = a32s.view(np.float32)
        dots_float_rows(hs, width, m, d, n, w, w_off, accs, meta[r + KIND] == FLOAT_PANELS)
        for g in range(m):
            bias_relu(accs[g * width: (g + 1) * width], fp, f_off, n, meta[r + RELU] != 0,
                      ys[g * width: (g + 1) * width])
        return
    if (HAS_VNNI or HAS_AVX2) and meta[r + KIND] == Q16_VNNI:
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
    if HAS_AVX2 and (meta[r + KIND] == INT8_AVX2 or meta[r + KIND] == INT4_AVX2):
        run_avx2_rows(r, m, hs, ys, width, meta, fp, w, xus, a32s, scales)
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
