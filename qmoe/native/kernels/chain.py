"""One sample through a chain of layers, and a mixture's routing: the bodies of the drivers.

:func:`run_layer` dispatches a layer record (:mod:`qmoe.native.layout`) to its activation
preparation, dot kernel (:mod:`.dots`) and rescale (:mod:`.act`); :func:`run_chain` runs
consecutive records; :func:`route` turns the experts' logits and the router's Monte-Carlo
passes into the mixture's output. Compiled into the drivers (:mod:`.drivers`), never alone.
"""

from __future__ import annotations

import numba
import numpy as np
from numba import njit, types
from numba.core import cgutils
from numba.extending import intrinsic

from qmoe.native.kernels.act import (bias_relu, binary_bits, mean_abs, offset_bytes, pair_words, quantize_row,
                                     rescale, rescale_binary)
from qmoe.native.kernels.dots import (dots_float, dots_float_panels, dots_int4_avx2, dots_int8_avx2, dots_int8_plain,
                                      dots_int8_vnni, dots_lut16, dots_lut32, dots_planes, dots_q16, dots_q16_vnni,
                                      dots_xnor)
from qmoe.native.kernels.vnni import GROUP_MAX
from qmoe.native.layout import (D_IN, ENTROPY, F_OFF, FLOAT, FLOAT_PANELS, INT4_AVX2, INT8, INT8_AVX2, INT8_VNNI,
                                KIND, LUT16, LUT32, N_OUT, P0, P1, P2, P3, PLANES, PLANES_VNNI, Q16, Q16_VNNI, REC,
                                RELU, UNCERTAINTY_MAX, W_OFF, XNOR)

#: Below this a probability counts as this in a logarithm (``qmoe.models.moe._EPS``).
LOG_EPS = 1e-12


@njit(inline="always")
def max_width(meta):  # noqa: ANN001, ANN201
    """The widest layer input or output, rounded up to whole 64-value words, plus one word."""
    widest = 64
    for r in range(0, meta.shape[0], REC):
        widest = max(widest, meta[r + D_IN], meta[r + N_OUT])
    return (widest + 63) // 64 * 64 + 64


@njit(inline="always")
def scratch_offsets(width, n_e, n_c, n_mc):  # noqa: ANN001, ANN201
    """Byte offsets of the buffers inside one scratch block (each on a 64-byte boundary), in
    the order of :func:`carve`, then the total: the 9 layer buffers for layers up to ``width``
    wide, then a mixture's logits, pass probabilities, hidden layer, routing scratch and
    expert counts (``n_e`` experts, ``n_c`` classes, ``n_mc`` passes; 0 for an MLP), then the
    :data:`~.vnni.GROUP_MAX`-row buffers of :mod:`.rows` (``hs, ys, xus, a32s, scales``), then a
    mixture's logits, probabilities and router hidden layer for a row group; the last offset is
    the total."""
    r = lambda n: (n + 63) // 64 * 64  # noqa: E731
    o0 = 0
    o1 = o0 + r(4 * width)  # h
    o2 = o1 + r(4 * width)  # y
    o3 = o2 + r(width)  # xq
    o4 = o3 + r(width)  # xa
    o5 = o4 + r(8 * (width // 64 * 8 + 8))  # words
    o6 = o5 + r(8 * width)  # acc
    o7 = o6 + r(4 * (2 * width + 64))  # a32
    o8 = o7 + r(4 * width)  # accf
    o9 = o8 + r(16 * width + 64)  # tab
    o10 = o9 + r(4 * n_e * n_c)  # logits
    o11 = o10 + r(8 * n_mc * n_e)  # probs
    o12 = o11 + r(4 * width)  # hidden
    o13 = o12 + r(8 * (n_e * n_c + 3 * n_e + n_c))  # q
    o14 = o13 + r(8 * n_e)  # f
    o15 = o14 + r(4 * width * GROUP_MAX)  # hs
    o16 = o15 + r(4 * width * GROUP_MAX)  # ys
    o17 = o16 + r(2 * width * GROUP_MAX)  # xus (uint8; q16: int32 words of 2 activations)
    o18 = o17 + r(8 * width * GROUP_MAX)  # a32s (int32, float32; q16: int64)
    o19 = o18 + r(4 * GROUP_MAX)  # scales
    o20 = o19 + r(4 * GROUP_MAX * n_e * n_c)  # a mixture's logits, per row of a row group
    o21 = o20 + r(8 * GROUP_MAX * n_mc * n_e)  # its pass probabilities, per row
    o22 = o21 + r(4 * GROUP_MAX * width)  # its router's hidden layer, per row
    return (o0, o1, o2, o3, o4, o5, o6, o7, o8, o9, o10, o11, o12, o13, o14, o15, o16, o17, o18, o19, o20, o21,
            o22)


@intrinsic
def pointer(typingctx, addr, dtype):  # noqa: ANN001, ANN201
    """The integer address ``addr`` as a pointer to ``dtype`` (a numba number class, e.g.
    ``np.int64``), for ``carray``."""
    sig = types.CPointer(dtype.instance_type)(addr, dtype)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@intrinsic
def _pointer_at(typingctx, arr, offset, dtype):  # noqa: ANN001, ANN201
    """Byte ``offset`` of the uint8 array ``arr``'s data as a pointer to ``dtype`` (a numba
    number class, e.g. ``np.float32``), for ``carray``."""
    sig = types.CPointer(dtype.instance_type)(arr, offset, dtype)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        data = context.make_array(signature.args[0])(context, builder, args[0]).data
        return builder.bitcast(builder.gep(data, [args[1]]), context.get_value_type(signature.return_type))

    return sig, codegen


@intrinsic
def borrowed(typingctx, arr):  # noqa: ANN001, ANN201
    """``arr`` without its reference count (no meminfo, no parent): the same data, shape and
    strides, for the length of a driver call (whose caller holds ``arr``). Every view of an
    array that has a meminfo, and every compiled call it is passed to, adds and drops a
    reference by a locked instruction (~20 cycles each; ~0.1-0.2 µs of a 1-bit batch-1 call);
    a borrowed array's are no-ops."""
    sig = arr(arr)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        a = context.make_array(signature.args[0])(context, builder, value=args[0])
        a.meminfo = cgutils.get_null_value(a.meminfo.type)
        a.parent = cgutils.get_null_value(a.parent.type)
        return a._getvalue()

    return sig, codegen


@njit(inline="always")
def part(scratch, start, stop, dtype, size):  # noqa: ANN001, ANN201
    """``scratch[start:stop].view(dtype)`` (``dtype`` of ``size`` bytes; ``stop - start`` a
    multiple of it) as an array
    without a reference to ``scratch`` (the caller holds it for the call): ~30 ns less than
    ``view`` each, nine of them at every batch-1 call."""
    return numba.carray(_pointer_at(scratch, start, dtype), (stop - start) // size)


@njit(inline="always")
def carve(scratch, o, width):  # noqa: ANN001, ANN201
    """The 9 layer buffers at ``scratch_offsets`` ``o`` of the 64-byte aligned uint8 ``scratch``:
    ``h, y`` (float32 activations), ``xq`` (int8), ``xa`` (uint8), ``words`` (uint64), ``acc``
    (int64), ``a32`` (int32), ``accf`` (float32) and ``tab`` (table bytes)."""
    return (part(scratch, o[0], o[0] + 4 * width, np.float32, 4), part(scratch, o[1], o[1] + 4 * width, np.float32, 4),
            part(scratch, o[2], o[2] + width, np.int8, 1), part(scratch, o[3], o[3] + width, np.uint8, 1),
            part(scratch, o[4], o[5], np.uint64, 8), part(scratch, o[5], o[6], np.int64, 8),
            part(scratch, o[6], o[7], np.int32, 4), part(scratch, o[7], o[8], np.float32, 4),
            part(scratch, o[8], o[9], np.uint8, 1))


@njit
def run_layer(r, h, y, meta, fp, w, xq, xa, words, acc, a32, accf, tab):  # noqa: ANN001, ANN201
    """Layer record ``r`` on one sample: float32 ``h[:d]`` -> ``y[:n]``."""
    kind, d, n = meta[r + KIND], meta[r + D_IN], meta[r + N_OUT]
    w_off, f_off, relu = meta[r + W_OFF], meta[r + F_OFF], meta[r + RELU] != 0
    p0, p1, p2, p3 = meta[r + P0], meta[r + P1], meta[r + P2], meta[r + P3]
    if kind == FLOAT or kind == FLOAT_PANELS:
        if kind == FLOAT:
            dots_float(h, d, n, w, w_off, accf)
        else:
            dots_float_panels(h, d, n, w, w_off, accf)
        bias_relu(accf, fp, f_off, n, relu, y)
    elif kind == XNOR:
        nw = binary_bits(h, d, fp[f_off + 2 * n], words)
        beta = mean_abs(h, d)
        dots_xnor(words, nw, d, n, w, w_off, acc)
        rescale_binary(acc, fp, f_off, n, beta, relu, y)
    else:  # 8-bit activations
        s, xsum = quantize_row(h, d, xq)
        for i in range(d, d + 64):  # every layout reads zeros past d
            xq[i] = 0
        if kind == INT8_VNNI:
            offset_bytes(xq, d, 4 * p0, xa)
            dots_int8_vnni(xa, 0, 1, n, w, w_off, p0, a32)
            rescale(a32, fp, f_off, n, s, relu, y)
        elif kind == INT8_AVX2:
            dots_int8_avx2(xq, d, n, w, w_off, p0, p1, p2, xa, a32)
            rescale(a32, fp, f_off, n, s, relu, y)
        elif kind == INT4_AVX2:
            dots_int4_avx2(xq, xsum, d, n, w, w_off, p0, p1, a32)
            rescale(a32, fp, f_off, n, s, relu, y)
        elif kind == INT8:
            dots_int8_plain(xq, d, n, w, w_off, a32)
            rescale(a32, fp, f_off, n, s, relu, y)
        else:
            if kind == LUT16:
                dots_lut16(xq, xsum, d, n, w, w_off, p0, p1, p2, p3, tab, a32, acc)
            elif kind == LUT32 or kind == PLANES_VNNI:  # one row: the LUT32 bytes at the head
                dots_lut32(xq, xsum, d, n, w, w_off, p0, p1, p2, p3, tab, a32, acc)
            elif kind == PLANES:
                dots_planes(xq, xsum, d, n, w, w_off, p0, p1, p2, p3, words, acc)
            elif kind == Q16:
                dots_q16(xq, d, n, w, w_off, a32, acc)
            elif kind == Q16_VNNI:
                pair_words(xq, d, p0, a32)
                dots_q16_vnni(a32, 0, 1, n, w, w_off, p0, acc, 0)
            rescale(acc, fp, f_off, n, s, relu, y)


@njit
def run_chain(first, count, h, y, meta, fp, w, xq, xa, words, acc, a32, accf, tab):  # noqa: ANN001, ANN201
    """Records ``first .. first + count - 1`` on one sample in ``h``; returns the buffer (``h``
    or ``y``) that holds the last layer's output."""
    for k in range(count):
        run_layer((first + k) * REC, h, y, meta, fp, w, xq, xa, words, acc, a32, accf, tab)
        h, y = y, h
    return h


@njit(inline="always")
def softmax64(v, n, temperature, out):  # noqa: ANN001, ANN201
    """``softmax(v[:n] / temperature)`` in float64 into ``out[:n]``."""
    m = -np.inf
    for j in range(n):
        m = max(m, np.float64(v[j]) / temperature)
    total = 0.0
    for j in range(n):
        out[j] = np.exp(np.float64(v[j]) / temperature - m)
        total += out[j]
    for j in range(n):
        out[j] /= total


@njit(inline="always")
def route(logits, probs, n_e, n_c, n_mc, alpha, variant, top_k, q, out):  # noqa: ANN001, ANN201
    """One sample's mixture output from its experts' logits (``n_e``, ``n_c``) and the router's
    ``n_mc`` pass probabilities (``n_mc``, ``n_e``), as :class:`qmoe.models.MixtureOfExperts`
    computes it, in float64: ``p`` (mean over passes) and its spread (population std), each
    expert's ``KL(q_i || mean_i q_i)``, curiosity (``p`` itself when alpha is 0) by ``variant``
    (:data:`~qmoe.native.layout.CURIOSITY_CODES`): ``p_cur = softmax(log p + alpha KL)`` (kl) or
    ``softmax((1 + alpha u H) log p)`` (entropy: ``u`` the mean spread / 0.5 and ``H`` the
    entropy of ``p`` / log N, their product clipped to [0, 1]), the ``top_k`` experts by
    ``p_cur`` (ties: lower index first) and
    ``sum_k p_cur_k E_k``. ``out``: ``logits[C], p[N], p_cur[N], uncertainty[N], kl[N],
    selected[k]`` (float32); ``q`` is float64 scratch of ``n_e n_c + 3 n_e + n_c``.
    """
    p, kl, cur = q[: n_e], q[n_e: 2 * n_e], q[2 * n_e: 3 * n_e]
    qe = q[3 * n_e: 3 * n_e + n_e * n_c]
    qbar = q[3 * n_e + n_e * n_c: 3 * n_e + n_e * n_c + n_c]
    spread = 0.0
    for i in range(n_e):
        s = 0.0
        for m in range(n_mc):
            s += probs[m, i]
        p[i] = s / n_mc
        v = 0.0
        for m in range(n_mc):
            v += (probs[m, i] - p[i]) ** 2
        spread += np.sqrt(v / n_mc)
        out[n_c + 2 * n_e + i] = np.float32(np.sqrt(v / n_mc))
    for c in range(n_c):
        qbar[c] = 0.0
    for i in range(n_e):  # log q_i = logits - logsumexp
        m = -np.inf
        for c in range(n_c):
            m = max(m, np.float64(logits[i, c]))
        total = 0.0
        for c in range(n_c):
            total += np.exp(np.float64(logits[i, c]) - m)
        lse = m + np.log(total)
        for c in range(n_c):
            qe[i * n_c + c] = np.float64(logits[i, c]) - lse
            qbar[c] += np.exp(qe[i * n_c + c]) / n_e
    for i in range(n_e):
        s = 0.0
        for c in range(n_c):
            lq = qe[i * n_c + c]
            s += np.exp(lq) * (lq - np.log(max(qbar[c], LOG_EPS)))
        kl[i] = max(s, 0.0)
    if alpha == 0.0:
        for i in range(n_e):
            cur[i] = p[i]
    elif variant == ENTROPY:
        h = 0.0
        for i in range(n_e):
            h -= p[i] * np.log(max(p[i], LOG_EPS))
        h /= np.log(np.float64(n_e))
        u = min(max(spread / n_e / UNCERTAINTY_MAX, 0.0), 1.0)
        gain = 1.0 + alpha * min(max(u * h, 0.0), 1.0)
        for i in range(n_e):
            cur[i] = gain * np.log(max(p[i], LOG_EPS))
        softmax64(cur, n_e, 1.0, cur)
    else:
        for i in range(n_e):
            cur[i] = np.log(max(p[i], LOG_EPS)) + alpha * kl[i]
        softmax64(cur, n_e, 1.0, cur)
    for i in range(n_e):
        out[n_c + i], out[n_c + n_e + i] = np.float32(p[i]), np.float32(cur[i])
        out[n_c + 3 * n_e + i] = np.float32(kl[i])
    for c in range(n_c):
        out[c] = np.float32(0.0)
    taken = 0
    for k in range(top_k):  # selection sort: N is a handful
        best = -1
        for i in range(n_e):
            if (taken >> i) & 1 == 0 and (best < 0 or cur[i] > cur[best]):
                best = i
        taken |= 1 << best
        out[n_c + 4 * n_e + k] = np.float32(best)
        for c in range(n_c):
            out[c] = np.float32(out[c] + np.float32(cur[best]) * logits[best, c])
