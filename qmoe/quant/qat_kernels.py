"""Fused fake-quantization passes for training: one pass over a tensor where torch takes four
to six (a QAT step spent most of its extra time in those passes).

Each kernel computes, element by element, the same IEEE float32 operations in the same order
as the torch formula it replaces (quoted in its docstring), so its values are bit for bit the
torch code's (``tests/qmoe/quant/test_quant_ste.py``); the reductions that feed them (means,
whose rounding depends on the summation order) stay torch's. :func:`fusable` says when a
tensor can take them (contiguous float32 on the CPU, numba installed); any other tensor takes
the torch formula. All jitted code is in this one file: numba's on-disk cache is invalidated
per file, so a kernel cached with code from another file could run stale code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

try:  # numba is a dependency; without it the torch formulas run
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None


def fusable(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors (else use the torch formula)."""
    return njit is not None and all(t.dtype is torch.float32 and t.is_cpu and t.is_contiguous() for t in tensors)


def as_np(t: Tensor) -> np.ndarray:
    """A tensor's memory as numpy, without autograd."""
    return t.detach().numpy()


#: Interleaved float64 partial sums of alpha's gradient (so the sum vectorises).
LANES = 4
#: Independent lanes of the activations' max reduction (one AVX-512 vector of float32).
MAX_LANES = 16

if njit is not None:
    # error_model="numpy": a division by zero gives inf/nan as in torch (a diverging run's inf
    # activations must reach the loss, which the trainer reports), not a ZeroDivisionError.

    @njit(cache=True, error_model="numpy")
    def grid(w, mu, scale, lo, hi, out):  # noqa: ANN001, ANN201
        """``(w - mu).div_(scale).round_().clamp_(lo, hi).mul_(scale)`` (q{k}, k >= 2)."""
        for i in range(w.shape[0]):
            out[i] = min(max(np.rint((w[i] - mu) / scale), lo), hi) * scale

    @njit(cache=True, error_model="numpy")
    def signs(w, mu, scale, out):  # noqa: ANN001, ANN201
        """``sign_pm1_(w - mu).mul_(scale)`` (q1): +scale where ``w - mu >= 0``, else -scale
        (NaN included, as ``sign_pm1``)."""
        for i in range(w.shape[0]):
            out[i] = scale if w[i] - mu >= np.float32(0.0) else -scale

    @njit(cache=True, error_model="numpy")
    def absmax_rows(x, qmax, eps, out):  # noqa: ANN001, ANN201
        """Per row of ``x`` (R, D): ``s = qmax / max(max|x|, eps)`` computed as torch does
        (``reciprocal() * qmax``), then ``(x * s).round_().clamp_(-qmax - 1, qmax).div_(s)``.
        NaN entries do not count in the max (their outputs are NaN)."""
        lo = -qmax - np.float32(1.0)
        n = x.shape[1]
        top = n - n % MAX_LANES
        lanes = np.empty(MAX_LANES, np.float32)
        for r in range(x.shape[0]):
            # the max in MAX_LANES independent lanes, so it vectorises (a max is exact in any
            # order; a NaN fails every ``>`` and is skipped, as in a serial loop)
            lanes[:] = np.float32(0.0)
            for i in range(0, top, MAX_LANES):
                for k in range(MAX_LANES):
                    a = abs(x[r, i + k])
                    lanes[k] = a if a > lanes[k] else lanes[k]
            m = np.float32(0.0)
            for k in range(MAX_LANES):
                m = lanes[k] if lanes[k] > m else m
            for i in range(top, n):
                a = abs(x[r, i])
                m = a if a > m else m
            m = m if m > eps else eps
            s = (np.float32(1.0) / m) * qmax
            for i in range(n):
                out[r, i] = min(max(np.rint(x[r, i] * s), lo), qmax) / s

    @njit(cache=True, error_model="numpy")
    def abs_centred(w, mu, out):  # noqa: ANN001, ANN201
        """``(w - mu).abs_()`` into ``out`` (q1's ``mean|W - mu|`` is then torch's mean of it)."""
        for i in range(w.shape[0]):
            out[i] = abs(w[i] - mu)

    @njit(cache=True, error_model="numpy")
    def ternary(w, gamma, alpha, out, rounded):  # noqa: ANN001, ANN201
        """``torch.div(w, gamma[:, None]).round_().clamp_(-1, 1).mul_(alpha[:, None])`` (bitnet),
        and ``round(w / gamma)`` clipped to int8 into ``rounded`` when it is not empty (for the
        backward: it then reads one byte per weight, not four, and divides nothing)."""
        one = np.float32(1.0)
        keep = rounded.shape[0] > 0
        for j in range(w.shape[0]):
            g, a = gamma[j], alpha[j]
            for i in range(w.shape[1]):
                out[j, i] = np.rint(w[j, i] / g)
            if keep:
                for i in range(w.shape[1]):  # |r| >= 2 all mean "clipped": 127 keeps that
                    rounded[j, i] = np.int8(min(max(out[j, i], np.float32(-127.0)), np.float32(127.0)))
            for i in range(w.shape[1]):
                out[j, i] = min(max(out[j, i], -one), one) * a

    @intrinsic
    def lane_sum(typingctx, arr, top):  # noqa: ANN001, ANN201
        """``sum(arr[:top])`` of float32 (``top`` a multiple of :data:`LANES`) in float64: lane l
        adds elements l, l + LANES, ... in turn (one vector add per LANES), then the lanes in
        order. numba cannot vectorise a float reduction (the order would change): this keeps
        the order and still uses vectors."""
        sig = types.float64(arr, top)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            f32, f64, i64 = ir.FloatType(), ir.DoubleType(), ir.IntType(64)
            vin, vacc = ir.VectorType(f32, LANES), ir.VectorType(f64, LANES)
            ptr = builder.bitcast(context.make_array(signature.args[0])(context, builder, args[0]).data,
                                  vin.as_pointer())
            nvec = builder.sdiv(args[1], ir.Constant(i64, LANES))
            zero = ir.Constant(vacc, [0.0] * LANES)
            pre = builder.basic_block
            body, done = builder.append_basic_block("lanes"), builder.append_basic_block("lanes.end")
            builder.cbranch(builder.icmp_signed(">", nvec, ir.Constant(i64, 0)), body, done)
            builder.position_at_end(body)
            i, acc = builder.phi(i64), builder.phi(vacc)
            i.add_incoming(ir.Constant(i64, 0), pre)
            acc.add_incoming(zero, pre)
            new = builder.fadd(acc, builder.fpext(builder.load(builder.gep(ptr, [i]), align=4), vacc))
            nxt = builder.add(i, ir.Constant(i64, 1))
            i.add_incoming(nxt, body)
            acc.add_incoming(new, body)
            builder.cbranch(builder.icmp_signed("<", nxt, nvec), body, done)
            builder.position_at_end(done)
            total = builder.phi(vacc)
            total.add_incoming(zero, pre)
            total.add_incoming(new, body)
            s = ir.Constant(f64, 0.0)
            for lane in range(LANES):
                s = builder.fadd(s, builder.extract_element(total, ir.Constant(ir.IntType(32), lane)))
            return s

        return sig, codegen

    @njit(cache=True, error_model="numpy")
    def ternary_grads(rounded, ratio, grad, grad_w, grad_alpha):  # noqa: ANN001, ANN201
        """bitnet's backward from ``r = round(w / gamma)`` (int8, from :func:`ternary`) and
        ``t = clip(r, -1, 1)``: ``grad_w = clamp(|r| - 2, -1, 0) * ratio * grad`` (``ratio =
        -alpha / gamma``: the STE, zero where the value clipped; torch's operations in torch's
        order) and ``grad_alpha = sum_i t_i grad_i`` (the product rule: exact float32 products
        summed in float64 by :func:`lane_sum`, then the tail, rounded once: within float32
        rounding of the exact sum; no full-size tensor written for it)."""
        one, two, zero = np.float32(1.0), np.float32(2.0), np.float32(0.0)
        n = grad.shape[1]
        top = n - n % LANES
        prod = np.empty(n, np.float32)
        for j in range(grad.shape[0]):  # simple passes over a row (in L1), each vectorised
            rt = ratio[j]
            for i in range(n):
                prod[i] = min(max(np.float32(rounded[j, i]), -one), one) * grad[j, i]  # exact
            s = lane_sum(prod, top)
            for i in range(top, n):
                s += np.float64(prod[i])
            grad_alpha[j] = np.float32(s)
            for i in range(n):
                grad_w[j, i] = (min(max(abs(np.float32(rounded[j, i])) - two, -one), zero) * rt) * grad[j, i]
