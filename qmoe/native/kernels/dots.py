"""The dot products of one layer, one function per weight layout (:mod:`qmoe.native.packing`).

Each takes the layer's prepared activations (float32 ``h``; or 8-bit integers ``xq`` and their
sum; or the binary input words) and the weights at byte ``w_off`` of the model's weight buffer
``w``, and writes the N dots. Every integer result is exact (the largest values are given
where they are summed); the float one sums in input order, so batch mates never change it.
Compiled into the drivers (:mod:`.drivers`), never alone.
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qmoe.native.kernels.fblock import BLOCK as FLOAT_BLOCK
from qmoe.native.kernels.fblock import FBLOCK, ROW_BLOCKS, float_block_row, float_blocks_row, panel_strides
from qmoe.native.kernels.lut32 import LUT32_BLOCK, lut32_block1, lut32_block2, lut32_tables
from qmoe.native.kernels.lut16 import lut16_block, lut16_block2, lut16_tables4
from qmoe.native.kernels.simd import bit_mask64, fma32, int4_rows4, int8_rows4, popcount64
from qmoe.native.kernels.vnni import (BLOCK, Q16_PAIRS, ROWS, planes1_block_rows, planes1_expand, planes2_block_rows,
                                      planes2_expand, q16_block1, q16_block_rows, vnni_block1, vnni_block_rows,
                                      vnni_block_rows_add)
from qmoe.native.kernels.xnor import BLOCK as XNOR_BLOCK
from qmoe.native.kernels.xnor import xnor_block16
from qmoe.native.layout import PANEL
from qmoe.native.target import HAS_AVX2

#: Inputs summed in int32 by the q16 kernel before widening: 256 x 127 x 32768 < 2^31.
Q16_CHUNK = 256
#: Groups of 4 inputs whose bit-plane weights are made into int8 at once for a group of rows
#: (:func:`dots_planes_vnni`): 16 KB, read from the L1 cache by each :data:`~.vnni.ROWS` rows.
PLANES_CHUNK = 64


@njit(inline="always")
def view(w, w_off, count, dtype, size):  # noqa: ANN001, ANN201
    """``count`` elements of ``dtype`` (``size`` bytes each) from byte ``w_off`` of the uint8
    buffer ``w``."""
    return w[w_off: w_off + count * size].view(dtype)


@njit(inline="always")
def dots_float(h, d, n, w, w_off, acc):  # noqa: ANN001, ANN201
    """``acc[j] = sum_i h[i] W[j, i]`` in float32, ``i`` ascending, each step one fused
    multiply-add; ``W`` stored (D, N)."""
    wt = view(w, w_off, d * n, np.float32, 4)
    for j in range(n):
        acc[j] = np.float32(0.0)
    for i in range(d):
        xi = h[i]
        row = wt[i * n: (i + 1) * n]
        for j in range(n):
            acc[j] = fma32(xi, row[j], acc[j])


@njit(inline="always")
def dots_float_panels(h, d, n, w, w_off, acc):  # noqa: ANN001, ANN201
    """:func:`dots_float` of weights in :data:`~qmoe.native.layout.FLOAT_PANELS` (the same sums,
    ``i`` ascending): :data:`~.fblock.ROW_BLOCKS` blocks of outputs at a time in registers
    (:func:`~.fblock.float_blocks_row`, the rest a block at a time) where the target has the
    vectors, else a panel at a time in ``acc``."""
    if FBLOCK:
        whole = n // (ROW_BLOCKS * FLOAT_BLOCK) * (ROW_BLOCKS * FLOAT_BLOCK)
        for j0 in range(0, whole, ROW_BLOCKS * FLOAT_BLOCK):
            wbase, qstride = panel_strides(j0, d)
            float_blocks_row(h, 0, w, w_off, 0, d, wbase, qstride, PANEL, FLOAT_BLOCK * d, j0, FLOAT_BLOCK, acc, 0)
        for j0 in range(whole, n, FLOAT_BLOCK):
            wbase, qstride = panel_strides(j0, d)
            float_block_row(h, 0, w, w_off, 0, d, wbase, qstride, PANEL, 0, j0, min(FLOAT_BLOCK, n - j0), acc, 0)
        return
    wt = view(w, w_off, (n + PANEL - 1) // PANEL * PANEL * d, np.float32, 4)
    for j0 in range(0, n, PANEL):
        for j in range(j0, min(n, j0 + PANEL)):
            acc[j] = np.float32(0.0)
        for i in range(d):
            xi = h[i]
            row = wt[j0 * d + i * PANEL: j0 * d + i * PANEL + PANEL]  # panel j0 / PANEL, input i
            for j in range(j0, min(n, j0 + PANEL)):
                acc[j] = fma32(xi, row[j - j0], acc[j])


@njit(inline="always")
def dots_q16(xq, d, n, w, w_off, a32, acc):  # noqa: ANN001, ANN201
    """int64 dots of int8 activations with int16 weights stored (D, N)."""
    wt = view(w, w_off, d * n, np.int16, 2)
    for j in range(n):
        acc[j] = 0
    for c in range(0, d, Q16_CHUNK):
        for j in range(n):
            a32[j] = 0
        for i in range(c, min(d, c + Q16_CHUNK)):
            xi = np.int32(xq[i])
            row = wt[i * n: (i + 1) * n]
            for j in range(n):
                a32[j] += xi * np.int32(row[j])
        for j in range(n):
            acc[j] += a32[j]


@njit(inline="always")
def dots_q16_vnni(xw, xstride, rows, n, w, w_off, pairs, acc, ostride):  # noqa: ANN001, ANN201, PLR0913
    """int64 dots of ``rows`` rows (1 or a multiple of :data:`~.vnni.ROWS`) by ``vpdpwssd``:
    row r's activations in int32 words ``xw[r xstride:]`` (:func:`~.act.pair_words`), its dots
    into ``acc[r ostride:]`` (N rounded up to 64). Weights: blocks of 64 outputs, ``pairs``
    steps of (64 outputs, 2 inputs) int16. Block by block, chunk of :data:`~.vnni.Q16_PAIRS`
    pairs (32 KB) by chunk, :data:`~.vnni.ROWS` rows at a time: a chunk comes from the L1
    cache for all rows but the first ones."""
    nblocks = (n + BLOCK - 1) // BLOCK
    for r in range(rows):
        for j in range(nblocks * BLOCK):
            acc[r * ostride + j] = 0
    for b in range(nblocks):
        at = w_off + b * pairs * 4 * BLOCK
        for k0 in range(0, pairs, Q16_PAIRS):
            k1 = min(pairs, k0 + Q16_PAIRS)
            if rows == 1:
                q16_block1(xw, xstride, w, at, k0, k1, acc, b * BLOCK, ostride)
            else:
                for g in range(0, rows, ROWS):
                    q16_block_rows(xw[g * xstride:], xstride, w, at, k0, k1, acc, g * ostride + b * BLOCK, ostride)


@njit(inline="always")
def dots_int8_plain(xq, d, n, w, w_off, acc):  # noqa: ANN001, ANN201
    """int32 dots with int8 weights stored (N, D) row-major (the portable path)."""
    wt = view(w, w_off, d * n, np.int8, 1)
    for j in range(n):
        row = wt[j * d: (j + 1) * d]
        s = 0
        for i in range(d):
            s += np.int32(xq[i]) * np.int32(row[i])
        acc[j] = np.int32(s)  # |acc| <= d 127 128 < 2^31 for d < 132,000


@njit(inline="always")
def dots_int8_avx2(xq, d, n, w, w_off, nchunks, flush, ncorr, xa, acc):  # noqa: ANN001, ANN201
    """int32 dots with int8 weights by ``vpmaddubsw``: rows of ``32 nchunks`` bytes, outputs
    padded to a multiple of 4, then ``ncorr`` (j, i) int32 pairs of the weights that were -128
    (stored as -127: each needs ``- x_i`` more)."""
    stride = 32 * nchunks
    for i in range(stride):
        xa[i] = np.uint8(abs(np.int32(xq[i])))
    for r in range(0, n, 4):
        int8_rows4(xq, xa, w, w_off + r * stride, stride, nchunks, flush, acc, r)
    corr = view(w, w_off + stride * ((n + 3) // 4 * 4), 2 * ncorr, np.int32, 4)
    for c in range(ncorr):
        acc[corr[2 * c]] -= np.int32(xq[corr[2 * c + 1]])


@njit(inline="always")
def dots_int8_vnni(xu, stride, rows, n, w, w_off, groups, acc):  # noqa: ANN001, ANN201
    """int32 dots of ``rows`` rows (1 or a multiple of :data:`~.vnni.ROWS`, those
    :data:`~.vnni.ROWS` at a time, block by block) by ``vpdpbusd``: row r's
    activations ``x + 128`` in uint8 ``xu[r stride:]`` (``4 groups`` of them, the ones past D
    any value), its dots into ``acc[r stride:]``. Weights: blocks of 64 outputs, ``groups``
    steps of (64 outputs, 4 inputs) int8, then each output's weight sum (int32), which the
    ``+ 128`` adds 128 times."""
    nblocks = (n + BLOCK - 1) // BLOCK
    for b in range(nblocks):
        at = w_off + b * groups * 4 * BLOCK
        if rows == 1:
            vnni_block1(xu, stride, w, at, groups, acc, b * BLOCK, stride)
        else:
            for g in range(0, rows, ROWS):
                vnni_block_rows(xu[g * stride:], stride, w, at, groups, acc, g * stride + b * BLOCK, stride)
    sums = view(w, w_off + nblocks * groups * 4 * BLOCK, n, np.int32, 4)
    for r in range(rows):
        for j in range(n):
            acc[r * stride + j] -= 128 * sums[j]


@njit(inline="always")
def dots_planes_vnni(xu, stride, rows, n, w, w_off, groups, n_planes, sh0, sh1, offset, buf, acc):  # noqa: ANN001, ANN201, PLR0913
    """:func:`dots_int8_vnni` of ``rows`` rows (a multiple of :data:`~.vnni.ROWS`) with
    bit-plane weights ``(B0 << sh0) - (B1 << sh1) + offset`` stored as
    :func:`~qmoe.native.packing.pack_planes_vnni` at byte ``w_off``. More than
    :data:`~.vnni.ROWS` rows: each block's int8 weights are made once, :data:`PLANES_CHUNK`
    groups at a time, into the 64-byte aligned uint8 ``buf`` (at least 256 bytes), which each
    :data:`~.vnni.ROWS` rows then read; :data:`~.vnni.ROWS` rows: made in registers
    (:func:`~.vnni._planes_block`)."""
    nblocks = (n + BLOCK - 1) // BLOCK
    lo, hi, step = offset, (1 << sh0) + offset, 1 << sh1
    chunk = min(PLANES_CHUNK, buf.shape[0] // 256)
    if rows > ROWS:
        for r in range(rows):
            for j in range(nblocks * BLOCK):
                acc[r * stride + j] = 0
    for b in range(nblocks):
        at = w_off + b * groups * n_planes * 32
        if rows > ROWS:
            for k0 in range(0, groups, chunk):
                k1 = min(groups, k0 + chunk)
                if n_planes == 1:
                    planes1_expand(w, at, k0, k1, lo, hi, step, buf)
                else:
                    planes2_expand(w, at, k0, k1, lo, hi, step, buf)
                for g in range(0, rows, ROWS):
                    vnni_block_rows_add(xu[g * stride + 4 * k0:], stride, buf, 0, k1 - k0, acc, g * stride + b * BLOCK,
                                        stride)
            continue
        for g in range(0, rows, ROWS):
            if n_planes == 1:
                planes1_block_rows(xu[g * stride:], stride, w, at, groups, lo, hi, step, acc, g * stride + b * BLOCK,
                                   stride)
            else:
                planes2_block_rows(xu[g * stride:], stride, w, at, groups, lo, hi, step, acc, g * stride + b * BLOCK,
                                   stride)
    sums = view(w, w_off + nblocks * groups * n_planes * 32, n, np.int32, 4)
    for r in range(rows):
        for j in range(n):
            acc[r * stride + j] -= 128 * sums[j]


@njit(inline="always")
def lut32_bytes(d, n, n_planes):  # noqa: ANN001, ANN201
    """Bytes of :func:`~qmoe.native.packing.pack_lut32`'s layout (a multiple of 64): where
    :data:`~qmoe.native.layout.PLANES_VNNI` keeps its row-group copy."""
    return (n + LUT32_BLOCK - 1) // LUT32_BLOCK * n_planes * ((d + 14) // 15) * 64


@njit(inline="always")
def dots_int4_avx2(xq, xsum, d, n, w, w_off, nchunks, flush, acc):  # noqa: ANN001, ANN201
    """int32 dots with weights in -8..7 stored as ``w + 8`` nibbles (q4): rows of ``32 nchunks``
    bytes, 64 inputs per chunk (byte b: inputs b and 32 + b of the chunk)."""
    stride = 32 * nchunks
    for r in range(0, n, 4):
        int4_rows4(xq, xq, w, w_off + r * stride, stride, nchunks, flush, acc, r)
    for j in range(n):
        acc[j] -= np.int32(8 * xsum)


@njit(inline="always")
def dots_lut16(xq, xsum, d, n, w, w_off, n_planes, sh0, sh1, offset, tab, a32, acc):  # noqa: ANN001, ANN201
    """int64 dots with bit-plane weights ``(B0 << sh0) - (B1 << sh1) + offset`` by 4-input
    table look-ups (AVX2). Layout: blocks of 32 outputs, planes, ``npairs`` rows of 32 bytes;
    then per plane the number of set bits of each output's row (int32, N padded to 32).

    The kernel sums ``B (x + 128)`` (unsigned nibbles, :func:`~.lut16.lut16_tables4`), so each
    plane's dot is that minus ``128 x`` its count of set bits.
    """
    ngroups = (d + 15) // 16 * 4
    npairs = ngroups // 2
    for q4 in range(ngroups // 4):
        lut16_tables4(xq, q4, tab)
    nblocks = (n + 31) // 32
    units = nblocks * n_planes  # unit k = b n_planes + p: plane p of block b, its rows after unit k - 1's
    for k in range(0, units - 1, 2):  # two units a call: their tables loaded once
        lut16_block2(tab, w, w_off + k * npairs * 32, npairs, a32, k * 32)
    if units % 2:
        lut16_block(tab, w, w_off + (units - 1) * npairs * 32, npairs, a32, (units - 1) * 32)
    counts = view(w, w_off + nblocks * n_planes * npairs * 32, n_planes * nblocks * 32, np.int32, 4)
    _planes_epilogue(a32, counts, n, nblocks, 32, n_planes, sh0, sh1, offset * xsum, acc)


@njit(inline="always")
def _planes_epilogue(a32, counts, n, nblocks, block, n_planes, sh0, sh1, base, acc):  # noqa: ANN001, ANN201
    """``acc[j] = ((P0 - 128 c0) << sh0) - ((P1 - 128 c1) << sh1) + base`` from the blocks'
    plane sums ``P``: ``a32[2 block b:]`` plane 0, ``a32[2 block b + block:]`` plane 1 of block
    b (one plane: ``a32`` in output order, no ``P1`` term); ``counts`` per plane the set bits
    of each output's row (N padded to ``block``). Every loop runs over slices indexed from 0,
    which LLVM vectorises: with computed indices into the whole arrays, numba's negative-index
    check stayed in the loop, 3.6-5x slower (about 1 µs of q1's batch-1 call, 2.5 of q2's)."""
    if n_planes == 1:
        a, c, out = a32[:n], counts[:n], acc[:n]
        for j in range(n):
            out[j] = ((np.int64(a[j]) - 128 * np.int64(c[j])) << sh0) + base
        return
    for b in range(nblocks):
        m, j0, o = min(block, n - block * b), block * b, 2 * block * b
        a0, a1 = a32[o: o + m], a32[o + block: o + block + m]
        c0, c1 = counts[j0: j0 + m], counts[nblocks * block + j0: nblocks * block + j0 + m]
        out = acc[j0: j0 + m]
        for r in range(m):
            out[r] = ((((np.int64(a0[r]) - 128 * np.int64(c0[r])) << sh0)
                       - ((np.int64(a1[r]) - 128 * np.int64(c1[r])) << sh1)) + base)


@njit(inline="always")
def dots_lut32(xq, xsum, d, n, w, w_off, n_planes, sh0, sh1, offset, tab, a32, acc):  # noqa: ANN001, ANN201
    """int64 dots with bit-plane weights by 5-input table look-ups (AVX-512 BW ``vpermw``).

    Tables: the 32 int16 subset sums of each group of 5 activations. Weights (uint16, from
    byte ``w_off``): blocks of 32 outputs, planes, steps of 3 groups (15 inputs), outputs; an
    element holds its step's groups in bits 0-4, 5-9 and 10-14.
    """
    nsteps = (d + 14) // 15
    t16 = tab.view(np.int16)
    lut32_tables(xq, 3 * nsteps, t16)
    wl = w.view(np.uint16)
    for b in range((n + LUT32_BLOCK - 1) // LUT32_BLOCK):
        at, o = w_off // 64 + b * n_planes * nsteps, b * n_planes * LUT32_BLOCK
        if n_planes == 1:
            lut32_block1(t16, wl, at, nsteps, nsteps, a32, o)
        else:
            lut32_block2(t16, wl, at, nsteps, nsteps, a32, o)
    if n_planes == 1:  # a32 in output order: one vectorised loop
        base = offset * xsum
        for j in range(n):
            acc[j] = (np.int64(a32[j]) << sh0) + base
        return
    for b in range((n + LUT32_BLOCK - 1) // LUT32_BLOCK):  # planes 0 and 1 of block b: a32[64 b:], a32[64 b + 32:]
        o, j0 = 2 * b * LUT32_BLOCK, b * LUT32_BLOCK
        for r in range(min(LUT32_BLOCK, n - j0)):
            acc[j0 + r] = ((np.int64(a32[o + r]) << sh0) + offset * xsum
                           - (np.int64(a32[o + LUT32_BLOCK + r]) << sh1))


@njit(inline="always")
def dots_planes(xq, xsum, d, n, w, w_off, n_planes, sh0, sh1, offset, planes, acc):  # noqa: ANN001, ANN201
    """int64 dots with bit-plane weights by AND + popcount against the activations' 8
    two's-complement bit-planes (the portable path). Weights stored word-major,
    ``(ceil(D/64), planes, N)`` uint64."""
    nw = (d + 63) // 64
    for k in range(nw):
        for b in range(8):
            planes[8 * k + b] = bit_mask64(xq, 64 * k, 7 - b)
    wu = view(w, w_off, nw * n_planes * n, np.uint64, 8)
    for j in range(n):
        acc[j] = offset * xsum
    for k in range(nw):
        x = planes[8 * k: 8 * k + 8]
        for p in range(n_planes):
            sh = sh0 if p == 0 else sh1
            sign = 1 if p == 0 else -1
            row = wu[(k * n_planes + p) * n: (k * n_planes + p + 1) * n]
            for j in range(n):
                u = row[j]
                t = (np.int64(popcount64(x[0] & u)) + (np.int64(popcount64(x[1] & u)) << 1)
                     + (np.int64(popcount64(x[2] & u)) << 2) + (np.int64(popcount64(x[3] & u)) << 3)
                     + (np.int64(popcount64(x[4] & u)) << 4) + (np.int64(popcount64(x[5] & u)) << 5)
                     + (np.int64(popcount64(x[6] & u)) << 6) - (np.int64(popcount64(x[7] & u)) << 7))
                acc[j] += sign * (t << sh)


@njit(inline="always")
def dots_xnor(xw, nw, d, n, w, w_off, acc):  # noqa: ANN001, ANN201
    """``acc[j] = d - 2 popcount(x XOR w_j)``, weights word-major ``(ceil(D/64), N)`` uint64:
    on AVX2 in blocks of 16 outputs (:func:`~.xnor.xnor_block16`), the rest one by one."""
    j0 = 0
    if HAS_AVX2:
        j0 = n - n % XNOR_BLOCK
        for j in range(0, j0, XNOR_BLOCK):
            xnor_block16(xw, nw, w, w_off, n, j, acc)
    wu = view(w, w_off, nw * n, np.uint64, 8)
    m, tail = n - j0, acc[j0:n]  # indices from 0: known not negative, so the loop vectorises
    for t in range(m):
        tail[t] = 0
    for k in range(nw):
        xk = xw[k]
        row = wu[k * n + j0: (k + 1) * n]
        for t in range(m):
            tail[t] += np.int64(popcount64(xk ^ row[t]))
    for j in range(n):
        acc[j] = d - 2 * acc[j]
