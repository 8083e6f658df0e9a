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
from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import I8, I32, I64, abs_max, abs_sum16, gt_mask64, vec

#: Smallest ``max|x|`` the activation scale divides by (``primitives.EPS`` in float32).
EPS32 = np.float32(1e-8)
#: Independent partial sums of the float mean (binary's beta), so it vectorises.
LANES = 16


@njit(inline="always")
def max_abs(h, d):  # noqa: ANN001, ANN201
    """``max|h[:d]|`` (exact in any order; NaN ignored; 0 if every value is NaN): the whole
    64-value words by :func:`~.simd.abs_max`, the rest one by one."""
    top = d - d % 64
    m = abs_max(h, top)
    for i in range(top, d):
        a = abs(h[i])
        m = a if a > m else m
    return m


#: ``1.5 x 2^23``: ``(v + R) - R`` is ``v`` rounded half to even (``rint``) for ``|v| <= 2^22``,
#: in two IEEE float32 additions (every x86 target computes it alike, vectorised).
ROUND32 = 12582912.0


@intrinsic
def quantize64(typingctx, h, start, s, xq):  # noqa: ANN001, ANN201
    """``xq[start + i] = int8(rint(h[start + i] * s))`` for ``i < 64`` (float32 ``h``, int8 ``xq``);
    returns the sum of the 64 integers (int64). The scalar loop's values for every input:
    ``rint`` by :data:`ROUND32` (exact: ``|h s| <= 127 (1 + 2^-23)``, or not finite), the clamp
    to ``[-128, 127]`` by selects that keep NaN, then NaN to 0 (the scalar loop's ``int8(NaN)``
    is 0 on x86 too)."""
    sig = types.int64(h, start, s, xq)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        f32 = ir.FloatType()
        vf, vi = vec(f32, 64), vec(I32, 64)
        hbase = context.make_array(signature.args[0])(context, builder, args[0]).data
        x = builder.load(builder.bitcast(builder.gep(hbase, [args[1]]), vf.as_pointer()), align=4)
        sv = builder.insert_element(ir.Constant(vf, None), args[2], ir.Constant(I32, 0))
        sv = builder.shuffle_vector(sv, ir.Constant(vf, None), ir.Constant(vec(I32, 64), [0] * 64))
        r = ir.Constant(vf, [ROUND32] * 64)
        v = builder.fsub(builder.fadd(builder.fmul(x, sv), r), r)
        lo, hi = ir.Constant(vf, [-128.0] * 64), ir.Constant(vf, [127.0] * 64)
        v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
        v = builder.select(builder.fcmp_ordered(">", v, hi), hi, v)
        v = builder.select(builder.fcmp_unordered("uno", v, v), ir.Constant(vf, [0.0] * 64), v)
        q = builder.fptosi(v, vi)  # every value in [-128, 127] now
        qbase = context.make_array(signature.args[3])(context, builder, args[3]).data
        builder.store(builder.trunc(q, vec(I8, 64)),
                      builder.bitcast(builder.gep(qbase, [args[1]]), vec(I8, 64).as_pointer()), align=1)
        red = builder.module.declare_intrinsic("llvm.vector.reduce.add.v64i32", fnty=ir.FunctionType(I32, [vi]))
        return builder.sext(builder.call(red, [q]), I64)

    return sig, codegen


@njit(inline="always")
def quantize_row(h, d, xq):  # noqa: ANN001, ANN201
    """``xq[:d] = round(h[:d] * s)`` (int8 ``xq``); returns ``(s, sum of the integers)``:
    64 values at a time (:func:`quantize64`), the rest one by one (the same values)."""
    m = max_abs(h, d)
    if m < EPS32:
        m = EPS32
    s = (np.float32(1.0) / m) * np.float32(127.0)
    total = 0
    top = d - d % 64
    for i in range(0, top, 64):
        total += quantize64(h, i, s, xq)
    for i in range(top, d):
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


@intrinsic
def rescale16(typingctx, acc, scale, bias, j, s, relu, out):  # noqa: ANN001, ANN201
    """:func:`rescale` of the 16 outputs ``j .. j + 15`` (``acc`` int32 or int64): the same four
    IEEE operations per output (``float32(acc)``, ``scale / s``, the product, ``+ bias``) as
    vectors, then the ReLU by a select (NaN to 0, as the scalar loop's)."""
    sig = types.void(acc, scale, bias, j, s, relu, out)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        f32 = ir.FloatType()
        vf = vec(f32, 16)
        bits = signature.args[0].dtype.bitwidth
        vi = vec(ir.IntType(bits), 16)

        def load(k, vty, align):  # noqa: ANN001, ANN202 - the 16 elements of array argument k from j
            base = context.make_array(signature.args[k])(context, builder, args[k]).data
            return builder.load(builder.bitcast(builder.gep(base, [args[3]]), vty.as_pointer()), align=align)

        a = builder.sitofp(load(0, vi, bits // 8), vf)
        sv = builder.insert_element(ir.Constant(vf, None), args[4], ir.Constant(I32, 0))
        sv = builder.shuffle_vector(sv, ir.Constant(vf, None), ir.Constant(vec(I32, 16), [0] * 16))
        y = builder.fadd(builder.fmul(a, builder.fdiv(load(1, vf, 4), sv)), load(2, vf, 4))
        zero = ir.Constant(vf, [0.0] * 16)
        cut = builder.select(builder.fcmp_ordered(">", y, zero), y, zero)
        base = context.make_array(signature.args[6])(context, builder, args[6]).data
        ptr = builder.bitcast(builder.gep(base, [args[3]]), vf.as_pointer())
        builder.store(builder.select(args[5], cut, y), ptr, align=4)
        return context.get_dummy_value()

    return sig, codegen


@njit(inline="always")
def rescale(acc, fp, f_off, n, s, relu, out):  # noqa: ANN001, ANN201
    """``out[j] = float32(acc[j]) * (rescale[j] / s) + bias[j]``, then ReLU if asked: 16 outputs
    at a time (:func:`rescale16`), the rest one by one (the same operations).

    One loop per case, each a select: a ``relu`` test inside the loop kept it scalar, and a
    branch on the sign of ``y`` mispredicted on every new input.
    """
    scale, bias = fp[f_off: f_off + n], fp[f_off + n: f_off + 2 * n]  # views: ``fp[f_off + j]`` kept it
    top = n - n % 16  # scalar (a possibly negative index: gathers and one vdivss per output)
    for j in range(0, top, 16):
        rescale16(acc, scale, bias, j, s, relu, out)
    if relu:
        for j in range(top, n):
            y = np.float32(acc[j]) * (scale[j] / s) + bias[j]
            out[j] = y if y > np.float32(0.0) else np.float32(0.0)
    else:
        for j in range(top, n):
            out[j] = np.float32(acc[j]) * (scale[j] / s) + bias[j]


@njit(inline="always")
def rescale_binary(acc, fp, f_off, n, beta, relu, out):  # noqa: ANN001, ANN201
    """``out[j] = float32(acc[j]) * (beta * alpha[j]) + bias[j]``, then ReLU if asked.

    ``|acc[j]| <= d`` fits an int32, whose conversion to float32 is one vector instruction
    (int64's is not, before AVX-512) and rounds the same integer to the same float."""
    alpha, bias = fp[f_off: f_off + n], fp[f_off + n: f_off + 2 * n]  # views, as in :func:`rescale`
    if relu:
        for j in range(n):
            y = np.float32(np.int32(acc[j])) * (beta * alpha[j]) + bias[j]
            out[j] = y if y > np.float32(0.0) else np.float32(0.0)
    else:
        for j in range(n):
            out[j] = np.float32(np.int32(acc[j])) * (beta * alpha[j]) + bias[j]


@njit(inline="always")
def bias_relu(acc, fp, f_off, n, relu, out):  # noqa: ANN001, ANN201
    """``out[j] = acc[j] + bias[j]`` (float32), then ReLU if asked."""
    bias = fp[f_off: f_off + n]  # a view, as in :func:`rescale`
    if relu:
        for j in range(n):
            y = acc[j] + bias[j]
            out[j] = y if y > np.float32(0.0) else np.float32(0.0)
    else:
        for j in range(n):
            out[j] = acc[j] + bias[j]
