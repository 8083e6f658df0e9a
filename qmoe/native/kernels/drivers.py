"""The compiled entry points: a whole MLP or a whole mixture in one call, and three helpers.

Every function Python calls lives here, and only here is numba's on-disk cache on. numba
keys a cached function by *its own* file: a driver compiled with code from another file keeps
running that code after the other file changes (numba issue #1833). So the files compiled
into the drivers are listed in :data:`.sources.SOURCES`, their SHA-256 is written below, and the cache
is used only while it matches (:data:`CACHE`): a change to any of them runs the drivers
uncompiled from cache (correct, slower to start) until :data:`SOURCES_SHA256` is updated,
which changes this file and so invalidates every cached driver. A test checks the digest;
``python -m qmoe.native.kernels.drivers`` prints the current one.

The first use on a machine compiles the drivers (tens of seconds); later processes load them
from the cache.
"""

from __future__ import annotations

import logging

import numba
import numpy as np
from numba import njit

from qmoe.native.kernels.act import mean_abs, quantize_row
from qmoe.native.kernels.chain import (borrowed, carve, max_width, pointer, route, run_chain, run_layer,
                                      scratch_offsets, softmax64)
from qmoe.native.kernels.rows import batched, carve_rows, group_size, run_chain_rows
from qmoe.native.kernels.simd import f32_pointer
from qmoe.native.kernels.vnni import GROUP_MAX, ROWS
from qmoe.native.kernels.sources import sources_sha256
from qmoe.native.layout import (ALPHA_OFF, CURIOSITY, D_IN, KIND, MASKS_OFF, MIX_HEAD, N_CLASSES, N_EXPERTS,
                                N_MC, N_OUT, REC, ROUTER_COUNT, ROUTER_FIRST, TEMP_OFF, TOP_K, XNOR)

log = logging.getLogger(__name__)

SOURCES_SHA256 = "03ca555b73ea1c28b0922ae22b3215adeec54e994cdf51419cf913c32c7bb026"


#: Whether the drivers use numba's on-disk cache (see the module docstring).
CACHE = sources_sha256() == SOURCES_SHA256
if not CACHE:
    log.warning("qmoe.native kernel sources changed: compiling without numba's disk cache until "
                "SOURCES_SHA256 in %s is updated to %s", __file__, sources_sha256())


@njit(inline="always")
def group_rows(left, group):  # noqa: ANN001, ANN201
    """Rows of the next row group when ``left >= ROWS`` rows are left: ``group``
    (:func:`~.rows.group_size`), or the most whole :data:`~.vnni.ROWS` of them."""
    return min(group, left // ROWS * ROWS)


@njit(cache=CACHE)
def scratch_bytes(meta, mix):  # noqa: ANN001, ANN201
    """Bytes of the scratch block :func:`mlp` (``mix`` empty) or :func:`mixture` needs."""
    if mix.shape[0] == 0:
        return scratch_offsets(max_width(meta), 0, 0, 0)[22]
    return scratch_offsets(max_width(meta), mix[N_EXPERTS], mix[N_CLASSES], mix[N_MC])[22]


@njit(cache=CACHE)
def mlp(x, meta, fp, w, scratch, out):  # noqa: ANN001, ANN201
    """Every layer of ``meta`` on every float32 row of ``x`` (B, D), into ``out`` (B, N_last).
    ``scratch``: :func:`scratch_bytes` bytes, 64-byte aligned (no allocation per call). Rows go
    a group at a time (:func:`~.rows.group_size` rows, :func:`group_rows`) where the chain has a
    layer that shares its weight reads between rows (:mod:`.rows`), the rest one by one: the
    same outputs either way."""
    x, meta, fp, w = borrowed(x), borrowed(meta), borrowed(fp), borrowed(w)  # (see :func:`~.chain.borrowed`)
    scratch, out = borrowed(scratch), borrowed(out)
    width = max_width(meta)
    o = scratch_offsets(width, 0, 0, 0)
    h, y, xq, xa, words, acc, a32, accf, tab = carve(scratch, o, width)
    n_layers = meta.shape[0] // REC
    d, n = x.shape[1], out.shape[1]
    start = 0
    if batched(meta):
        hs, ys, xus, a32s, scales = carve_rows(scratch, o, width)
        group = group_size(w, meta)
        while x.shape[0] - start >= ROWS:
            m = group_rows(x.shape[0] - start, group)
            for g in range(m):
                hs[g * width: g * width + d] = x[start + g]
            res = run_chain_rows(0, n_layers, m, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab,
                                 xus, a32s, scales)
            for g in range(m):
                out[start + g, :] = res[g * width: g * width + n]
            start += m
    in_place = meta[KIND] != XNOR  # the first layer reads x's row where it is (XNOR pads its input)
    for b in range(start, x.shape[0]):
        if in_place:
            run_layer(0, x[b], y, meta, fp, w, xq, xa, words, acc, a32, accf, tab)
            res = run_chain(1, n_layers - 1, y, h, meta, fp, w, xq, xa, words, acc, a32, accf, tab)
        else:
            h[:d] = x[b]
            res = run_chain(0, n_layers, h, y, meta, fp, w, xq, xa, words, acc, a32, accf, tab)
        out[b, :] = res[:n]


@njit(cache=CACHE)
def mlp_at(x_addr, rows, meta, fp, w, scratch, out):  # noqa: ANN001, ANN201
    """:func:`mlp` of ``rows`` contiguous float32 rows at address ``x_addr`` (the caller keeps
    them alive): no numpy view of a torch tensor to build."""
    mlp(numba.carray(f32_pointer(x_addr), (rows, meta[D_IN])), meta, fp, w, scratch, out)


#: Fields of an MLP's handle (:func:`mlp_handle`): the address and length of each array.
HANDLE = 8


@njit(cache=CACHE)
def mlp_handle(x_addr, rows, handle, out):  # noqa: ANN001, ANN201
    """:func:`mlp_at` with ``meta, fp, w, scratch`` given by the int64 ``HANDLE`` words at address
    ``handle`` (each array's address, then its length; the caller keeps them alive): two int
    arguments in place of four arrays, which the call would box into reference-counted ones."""
    hd = numba.carray(pointer(handle, np.int64), HANDLE)
    meta = numba.carray(pointer(hd[0], np.int64), hd[1])
    mlp(numba.carray(f32_pointer(x_addr), (rows, meta[D_IN])), meta, numba.carray(pointer(hd[2], np.float32), hd[3]),
        numba.carray(pointer(hd[4], np.uint8), hd[5]), numba.carray(pointer(hd[6], np.uint8), hd[7]), out)


@njit(cache=CACHE)
def mixture(x, meta, fp, w, mix, scratch, out):  # noqa: ANN001, ANN201
    """A whole mixture on every row of ``x`` (B, D): every expert, the router's first layer
    once and its other layers once per frozen Monte-Carlo mask, then :func:`~.chain.route`.
    ``out`` (B + 1, C + 4 N + k) float32 receives per row ``logits, p, p_cur, uncertainty, kl,
    selected``, and in ``out[B, 0]`` the batch's Switch load-balancing loss ``N sum_i f_i P_i``."""
    x, meta, fp, w, mix = borrowed(x), borrowed(meta), borrowed(fp), borrowed(w), borrowed(mix)
    scratch, out = borrowed(scratch), borrowed(out)
    n_e, top_k, n_c, n_mc = mix[N_EXPERTS], mix[TOP_K], mix[N_CLASSES], mix[N_MC]
    width = max_width(meta)
    o = scratch_offsets(width, n_e, n_c, n_mc)
    h, y, xq, xa, words, acc, a32, accf, tab = carve(scratch, o, width)
    logits = scratch[o[9]: o[9] + 4 * n_e * n_c].view(np.float32).reshape((n_e, n_c))
    probs = scratch[o[10]: o[10] + 8 * n_mc * n_e].view(np.float64).reshape((n_mc, n_e))
    hidden = scratch[o[11]: o[12]].view(np.float32)
    q = scratch[o[12]: o[13]].view(np.float64)
    f = scratch[o[13]: o[13] + 8 * n_e].view(np.float64)
    first, count = mix[ROUTER_FIRST], mix[ROUTER_COUNT]
    hw = meta[first * REC + N_OUT]
    masks = fp[mix[MASKS_OFF]: mix[MASKS_OFF] + n_mc * hw]
    alpha, temperature = np.float64(fp[mix[ALPHA_OFF]]), np.float64(fp[mix[TEMP_OFF]])
    d = x.shape[1]
    start = 0
    if batched(meta):  # row groups: each row's arithmetic is the one-row loop's below
        hs, ys, xus, a32s, scales = carve_rows(scratch, o, width)
        glogits = scratch[o[19]: o[19] + 4 * GROUP_MAX * n_e * n_c].view(np.float32).reshape((GROUP_MAX, n_e, n_c))
        gprobs = scratch[o[20]: o[20] + 8 * GROUP_MAX * n_mc * n_e].view(np.float64).reshape((GROUP_MAX, n_mc, n_e))
        ghidden = scratch[o[21]: o[21] + 4 * GROUP_MAX * width].view(np.float32)
        group = group_size(w, meta)  # one for every chain: all of them are read once per group
        while x.shape[0] - start >= ROWS:
            nr = group_rows(x.shape[0] - start, group)
            for e in range(n_e):
                for g in range(nr):
                    hs[g * width: g * width + d] = x[start + g]
                res = run_chain_rows(mix[MIX_HEAD + 2 * e], mix[MIX_HEAD + 2 * e + 1], nr, hs, ys, width, meta, fp,
                                     w, xq, xa, words, acc, a32, accf, tab, xus, a32s, scales)
                for g in range(nr):
                    glogits[g, e, :] = res[g * width: g * width + n_c]
            for g in range(nr):
                hs[g * width: g * width + d] = x[start + g]
            res = run_chain_rows(first, 1, nr, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32, accf, tab, xus,
                                 a32s, scales)
            for g in range(nr):
                ghidden[g * width: g * width + hw] = res[g * width: g * width + hw]
            for m in range(n_mc):
                for g in range(nr):
                    for i in range(hw):
                        hs[g * width + i] = ghidden[g * width + i] * masks[m * hw + i]
                res = run_chain_rows(first + 1, count - 1, nr, hs, ys, width, meta, fp, w, xq, xa, words, acc, a32,
                                     accf, tab, xus, a32s, scales)
                for g in range(nr):
                    softmax64(res[g * width:], n_e, temperature, gprobs[g, m])
            for g in range(nr):
                route(glogits[g], gprobs[g], n_e, n_c, n_mc, alpha, mix[CURIOSITY], top_k, q, out[start + g])
            start += nr
    for b in range(start, x.shape[0]):
        for e in range(n_e):
            h[:d] = x[b]
            res = run_chain(mix[MIX_HEAD + 2 * e], mix[MIX_HEAD + 2 * e + 1], h, y, meta, fp, w, xq, xa,
                            words, acc, a32, accf, tab)
            logits[e, :] = res[:n_c]
        h[:d] = x[b]
        res = run_chain(first, 1, h, y, meta, fp, w, xq, xa, words, acc, a32, accf, tab)
        hidden[:hw] = res[:hw]
        for m in range(n_mc):
            for i in range(hw):
                h[i] = hidden[i] * masks[m * hw + i]
            res = run_chain(first + 1, count - 1, h, y, meta, fp, w, xq, xa, words, acc, a32, accf, tab)
            softmax64(res, n_e, temperature, probs[m])
        route(logits, probs, n_e, n_c, n_mc, alpha, mix[CURIOSITY], top_k, q, out[b])
    rows = x.shape[0]  # Switch load balancing over the batch: N sum_i f_i mean(p_i)
    lb = 0.0
    if rows > 0:
        f[:] = 0.0
        for b in range(rows):
            f[np.int64(out[b, n_c + 4 * n_e])] += 1.0
        for i in range(n_e):
            mean_p = 0.0
            for b in range(rows):
                mean_p += out[b, n_c + i]
            lb += f[i] / rows * (mean_p / rows)
    out[rows, 0] = np.float32(n_e * lb)


@njit(cache=CACHE)
def mixture_at(x_addr, rows, meta, fp, w, mix, scratch, out):  # noqa: ANN001, ANN201
    """:func:`mixture` of ``rows`` contiguous float32 rows at address ``x_addr``."""
    mixture(numba.carray(f32_pointer(x_addr), (rows, meta[D_IN])), meta, fp, w, mix, scratch, out)


@njit(cache=CACHE)
def quantize_rows(x, xq):  # noqa: ANN001, ANN201
    """The drivers' 8-bit quantization of each row of ``x`` (B, D) float32 into int8 ``xq``;
    returns the float32 scales (B,)."""
    scales = np.empty(x.shape[0], np.float32)
    for b in range(x.shape[0]):
        scales[b], _ = quantize_row(x[b], x.shape[1], xq[b])
    return scales


@njit(cache=CACHE)
def mean_abs_rows(x):  # noqa: ANN001, ANN201
    """The binary layer's ``beta = mean|x|`` of each row of ``x`` (B, D) float32, shape (B, 1)."""
    out = np.empty((x.shape[0], 1), np.float32)
    for b in range(x.shape[0]):
        out[b, 0] = mean_abs(x[b], x.shape[1])
    return out


@njit(cache=CACHE)
def read_sum(buf):  # noqa: ANN001, ANN201
    """Sum of a uint64 buffer: streams it once through the core (a read-bandwidth probe)."""
    s = np.uint64(0)
    for i in range(buf.shape[0]):
        s += buf[i]
    return s


if __name__ == "__main__":  # pragma: no cover - a maintenance command
    print(sources_sha256())  # noqa: T201
