"""Activations of one layer: the 8-bit quantization, the binary layer's bits and ``beta``, the
rescale of integer dots into floats. Compiled into the drivers (:mod:`.drivers`), never alone.

Activations are quantized exactly as :func:`qmoe.quant.primitives.absmax_quantize` does in
torch (``s = (1 / max|x|) * 127`` in float32 -- torch's ``127 / t`` is ``t.reciprocal() * 127``
-- then ``round`` half to even), so the integers equal the QAT ones. ``|x s| <= 127 (1 + 2^-23)``
rounds to at most 127: the integers lie in ``[-127, 127]``, never -128, which the int8 dot
kernels rely on (:func:`~.simd.int8_rows4`). Loops are branch-free where the branch would
depend on the data (a mispredicted branch per activation costs more than its arithmetic).
"""

from __future__ import annotations

import numpy as np
from numba import njit

from qmoe.native.kernels.simd import abs_max64, abs_sum16, gt_mask64

#: Smallest ``max|x|`` the activation scale divides by (``primitives.EPS`` in float32).
EPS32 = np.float32(1e-8)
#: Independent partial sums of the float mean (binary's beta), so it vectorises.
LANES = 16


@njit(inline="always")
def max_abs(h, d):  # noqa: ANN001, ANN201
    """``max|h[:d]|`` (exact in any order; NaN ignored), 64 values per :func:`abs_max64`."""
    m = np.float32(0.0)
    top = d - d % 64
    for i in range(0, top, 64):
        a = abs_max64(h, i)
        m = a if a > m else m
    for i in range(top, d):
        a = abs(h[i])
        m = a if a > m else m
    return m


@njit(inline="always")
def quantize_row(h, d, xq):  # noqa: ANN001, ANN201
    """``xq[:d] = round(h[:d] * s)`` (int8 ``xq``); returns ``(s, sum of the integers)``."""
    m = max_abs(h, d)
    if m < EPS32:
        m = EPS32
    s = (np.float32(1.0) / m) * np.float32(127.0)
    total = 0
    for i in range(d):
        v = np.rint(h[i] * s)
        v = min(max(v, np.float32(-128.0)), np.float32(127.0))  # never active (see above)
        q = np.int8(v)
        xq[i] = q
        total += np.int64(q)
    return s, total


@njit(inline="always")
def offset_bytes(xq, d, top, xu):  # noqa: ANN001, ANN201
    """``xu[:top] = xq[:top] + 128`` as uint8 (the unsigned operand of ``vpdpbusd``), 128 past
    ``d`` (weights there are zero)."""
    for i in range(d):
        xu[i] = np.uint8(np.int32(xq[i]) + 128)
    for i in range(d, top):
        xu[i] = np.uint8(128)


@njit(inline="always")
def pair_words(xq, d, pairs, xw):  # noqa: ANN001, ANN201
    """``xw[k]`` (int32) = the activations ``2k`` (low 16 bits) and ``2k + 1`` as int16, for
    ``k < pairs`` (the operand of ``vpdpwssd``); 0 past ``d`` (weights there are zero)."""
    for k in range(d // 2):
        xw[k] = (np.int32(xq[2 * k]) & 0xFFFF) | (np.int32(xq[2 * k + 1]) << 16)
    for k in range(d // 2, pairs):
        xw[k] = np.int32(xq[2 * k]) & 0xFFFF if 2 * k < d else np.int32(0)


@njit(inline="always")
def mean_abs(h, d):  # noqa: ANN001, ANN201
    """``sum|h[:d]| / d`` in float32 (the binary layer's ``beta``), in a fixed order.

    16 lane sums (lane l adds elements l, l + 16, ...), added together in lane order, then the
    tail (:func:`~.simd.abs_sum16`): deterministic, and vectorised (a single running sum would
    cost one add latency per element: float sums cannot be reordered by the compiler).
    """
    top = d - d % LANES
    s = abs_sum16(h, top)
    for i in range(top, d):
        s += abs(h[i])
    return s / np.float32(d)


@njit(inline="always")
def binary_bits(h, d, tau, xw):  # noqa: ANN001, ANN201
    """``h[:d] > tau`` packed in uint64 words ``xw`` (bit i of word k = input 64 k + i);
    ``h`` is padded with -inf to whole words (never above tau: zero bits)."""
    nw = (d + 63) // 64
    for i in range(d, nw * 64):
        h[i] = -np.inf
    for k in range(nw):
        xw[k] = gt_mask64(h, k * 64, tau)
    return nw


@njit(inline="always")
def rescale(acc, fp, f_off, n, s, relu, out):  # noqa: ANN001, ANN201
    """``out[j] = float32(acc[j]) * (rescale[j] / s) + bias[j]``, then ReLU if asked.

    One loop per case, each a select: a ``relu`` test inside the loop kept it scalar, and a
    branch on the sign of ``y`` mispredicted on every new input.
    """
    scale, bias = fp[f_off: f_off + n], fp[f_off + n: f_off + 2 * n]  # views: ``fp[f_off + j]`` kept it
    if relu:  # scalar (a possibly negative index: gathers and one vdivss per output)
        for j in range(n):
            y = np.float32(acc[j]) * (scale[j] / s) + bias[j]
            out[j] = y if y > np.float32(0.0) else np.float32(0.0)
    else:
        for j in range(n):
            out[j] = np.float32(acc[j]) * (scale[j] / s) + bias[j]


@njit(inline="always")
def rescale_binary(acc, fp, f_off, n, beta, relu, out):  # noqa: ANN001, ANN201
    """``out[j] = float32(acc[j]) * (beta * alpha[j]) + bias[j]``, then ReLU if asked."""
    alpha, bias = fp[f_off: f_off + n], fp[f_off + n: f_off + 2 * n]  # views, as in :func:`rescale`
    if relu:
        for j in range(n):
            y = np.float32(acc[j]) * (beta * alpha[j]) + bias[j]
            out[j] = y if y > np.float32(0.0) else np.float32(0.0)
    else:
        for j in range(n):
            out[j] = np.float32(acc[j]) * (beta * alpha[j]) + bias[j]


@njit(inline="always")
def bias_relu(acc, fp, f_off, n, relu, out):  # noqa: ANN001, ANN201
    """``out[j] = acc[j] + bias[j]`` (float32), then ReLU if asked."""
    if relu:
        for j in range(n):
            y = acc[j] + fp[f_off + j]
            out[j] = y if y > np.float32(0.0) else np.float32(0.0)
    else:
        for j in range(n):
            out[j] = acc[j] + fp[f_off + j]
