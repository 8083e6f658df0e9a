"""Fused fake-quantization passes for training: one pass over a tensor where torch takes four
to six (a QAT step spent most of its extra time in those passes).

Each kernel computes, element by element, the same IEEE float32 operations in the same order
as the torch formula it replaces (quoted in its docstring), so its values are bit for bit the
torch code's (``tests/qmoe/quant/test_quant_ste.py``). The reductions that feed them (the
layer's mean, min and max; bitnet's row means) are fused too, one read of the weight each: the
sums in float64 in a fixed order of :data:`SUM_LANES` vector lanes written into the IR
(:func:`block_sum`), so the same on every x86 CPU whatever its vector width, and within one
float32 rounding of the exact mean, plus ``n 2^-53 mean|W|`` from the float64 sum (torch's
float32 ``mean()``, in an order that depends on the CPU, differs from it by its own rounding
error, a few ulp). :func:`fusable` says when a
tensor can take them (contiguous float32 on the CPU, numba installed); any other tensor takes
the torch formula. In training the reductions come from the optimizer's pass over the weight
(:func:`adamw_layer_stats`, :func:`adamw_row_gamma`: AdamW's update, then the same sums of each
block while it is in L1; for bitnet its ternary weight too), handed to the next forward by
:func:`request_stats` and :func:`cached_stats`. All jitted code is in this one file (AdamW's kernel too, formula in
:mod:`qmoe.optim_kernel`; q1's sign passes are in the self-contained :mod:`qmoe.quant.qat_signs`):
numba's on-disk cache is invalidated per file, so a kernel cached with code from another file
could run stale code.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

try:  # numba is a dependency; without it the torch formulas run
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None


def fusable(*tensors: Tensor) -> bool:
    """Whether the kernels can take these tensors (else use the torch formula)."""
    return njit is not None and all(t.dtype is torch.float32 and t.is_cpu and t.is_contiguous() for t in tensors)


def as_np(t: Tensor) -> np.ndarray:
    """A tensor's memory as numpy, without autograd."""
    return t.detach().numpy()


# the optimizer's statistics for the next forward (plain Python, no jitted code: its own file)
from qmoe.quant.qat_stats import (_STATS, cached_stats, request_stats, requested_stats, store_stats,  # noqa: E402, F401
                                  take_stats)

#: Float64 lanes of the layer and row sums (:func:`block_sum`): a fixed order on every CPU.
SUM_LANES = 16
#: Elements per block of :func:`block_sum` (8 KB of float32: stays in L1 while a
#: kernel takes a second look at it).
BLOCK = 2048

if njit is not None:
    # error_model="numpy": a division by zero gives inf/nan as in torch (a diverging run's inf
    # activations must reach the loss, which the trainer reports), not a ZeroDivisionError.

    @njit(cache=True, error_model="numpy")
    def grid(w, mu, scale, lo, hi, out):  # noqa: ANN001, ANN201
        """``(w - mu).div_(scale).round_().clamp_(lo, hi).mul_(scale)`` (q{k}, k >= 2)."""
        for i in range(w.shape[0]):
            out[i] = min(max(np.rint((w[i] - mu) / scale), lo), hi) * scale

    @njit(cache=True, error_model="numpy")
    def absmax_rows(x, qmax, eps, out):  # noqa: ANN001, ANN201
        """Per row of ``x`` (R, D): ``s = qmax / max(max|x|, eps)`` computed as torch does
        (``reciprocal() * qmax``), then ``(x * s).round_().clamp_(-qmax - 1, qmax).div_(s)``.
        NaN entries do not count in the max (their outputs are NaN)."""
        lo = -qmax - np.float32(1.0)
        n = x.shape[1]
        top = n - n % SUM_LANES  # lane_maxes16's multiple
        flat = x.reshape(-1)
        zero = np.float32(0.0)
        for r in range(x.shape[0]):
            # max|x| = max(max x, max -x), each in vector lanes (a max is exact in any order;
            # a NaN fails every ``>`` and is skipped, as in a serial loop), from 0
            hi, nlo = lane_maxes16(flat, r * n, r * n + top, zero)
            m = hi if hi > zero else zero
            m = nlo if nlo > m else m
            for i in range(top, n):
                a = abs(x[r, i])
                m = a if a > m else m
            m = m if m > eps else eps
            s = (np.float32(1.0) / m) * qmax
            xr, orow = x[r], out[r]
            for i in range(n):
                orow[i] = min(max(np.rint(xr[i] * s), lo), qmax) / s

    @njit(inline="always", error_model="numpy")
    def _ternary_row(wj, g, a, oj, rounded, j):  # noqa: ANN001, ANN202
        one, big = np.float32(1.0), np.float32(127.0)
        if rounded.shape[0] > 0:
            rj = rounded[j]
            for i in range(wj.shape[0]):
                r = np.rint(wj[i] / g)
                rj[i] = np.int8(min(max(r, -big), big))  # |r| >= 2 all mean "clipped": 127 keeps that
                oj[i] = min(max(r, -one), one) * a
        else:
            for i in range(wj.shape[0]):
                oj[i] = min(max(np.rint(wj[i] / g), -one), one) * a

    @njit(cache=True, error_model="numpy")
    def ternary(w, gamma, alpha, out, rounded):  # noqa: ANN001, ANN201
        """``torch.div(w, gamma[:, None]).round_().clamp_(-1, 1).mul_(alpha[:, None])`` (bitnet),
        and ``round(w / gamma)`` clipped to int8 into ``rounded`` when it is not empty (for the
        backward: it then reads one byte per weight, not four, and divides nothing)."""
        for j in range(w.shape[0]):  # one loop per row (a quarter faster than three over it)
            _ternary_row(w[j], gamma[j], alpha[j], out[j], rounded, j)

    def _lanes_at(lanes: int, *ops: str, adamw: bool = False):  # noqa: ANN202
        """An intrinsic ``f(arr, start, stop, c)`` over float32 ``arr[start:stop]`` (``stop - start``
        a multiple of ``lanes``, ``arr`` C-contiguous) in ``lanes`` vector lanes: lane l takes
        elements start + l, start + l + lanes, ... in turn, then the lanes are combined in order.
        Each op: "sum" (in float64, from 0.0), "abssum" (the same sum of the float32 values
        ``|x - c|``, c float32), "max" or "negmax" (the max of ``x`` or of ``-x``, from -inf,
        float32; NaN fails every ``>`` and is skipped). The order is in the IR, so every target
        (AVX-512, AVX2, SSE2) computes the same operations: the same result on every x86 CPU.
        Several ops take one loop (one load per vector; their accumulator chains, each bound by
        its add's or select's latency, overlap) and return a tuple: each op's value is the same
        as it alone would give. ``adamw``: each vector of ``arr`` (the parameter) is first
        updated in place by :func:`_adamw_range`'s operations (element-wise, the same IEEE ops;
        ``c`` = ``(g, m, v, clip, ..., neg_step)``), and the ops take the updated values."""
        sums = [op in ("sum", "abssum") for op in ops]

        @intrinsic
        def lanes_at(typingctx, arr, start, stop, c):  # noqa: ANN001, ANN202
            arrays = [arr, *(c.types[:3] if adamw else ())]
            if not all(isinstance(a, types.Array) and a.layout == "C" and a.dtype == types.float32 for a in arrays):
                return None  # the loads assume contiguous float32: no other array compiles
            outs = [types.float64 if s else types.float32 for s in sums]
            sig = (outs[0] if len(ops) == 1 else types.Tuple(outs))(arr, start, stop, c)

            def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
                f32, f64, i64, i32 = ir.FloatType(), ir.DoubleType(), ir.IntType(64), ir.IntType(32)
                vin = ir.VectorType(f32, lanes)
                undef = ir.Constant(vin, ir.Undefined)

                def splat(value):  # noqa: ANN001, ANN202
                    v = builder.insert_element(undef, value, ir.Constant(i32, 0))
                    return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(i32, lanes), [0] * lanes))

                def vptr(typ, value):  # noqa: ANN001, ANN202
                    base = context.make_array(typ)(context, builder, value).data
                    return builder.bitcast(builder.gep(builder.bitcast(base, f32.as_pointer()), [args[1]]),
                                           vin.as_pointer())

                def vcall(name, *xs):  # noqa: ANN001, ANN202
                    fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vin, [vin] * len(xs)),
                                                        f"llvm.{name}.v{lanes}f32")
                    return builder.call(fn, list(xs))

                ptr = vptr(signature.args[0], args[0])
                if adamw:  # g, m, v and the scalars (clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)
                    ctys = signature.args[3].types
                    gp, mp, vp = (vptr(ctys[k], builder.extract_value(args[3], k)) for k in range(3))
                    clip, decay, w1, beta2, w2, tiny, bc2, eps, step = (
                        splat(builder.extract_value(args[3], k)) for k in range(3, 12))
                nvec = builder.sdiv(builder.sub(args[2], args[1]), ir.Constant(i64, lanes))
                fas = [f64 if s else f32 for s in sums]
                inits = [0.0 if s else float("-inf") for s in sums]
                zeros = [ir.Constant(ir.VectorType(fa, lanes), [v] * lanes) for fa, v in zip(fas, inits)]
                pre = builder.basic_block
                body, done = builder.append_basic_block("lanes"), builder.append_basic_block("lanes.end")
                builder.cbranch(builder.icmp_signed(">", nvec, ir.Constant(i64, 0)), body, done)
                builder.position_at_end(body)
                i = builder.phi(i64)
                i.add_incoming(ir.Constant(i64, 0), pre)
                accs = [builder.phi(zero.type) for zero in zeros]  # phis first in the block
                x0 = builder.load(builder.gep(ptr, [i]), align=4)
                if adamw:  # _adamw_range's operations, in its order
                    mv, vv = (builder.load(builder.gep(q, [i]), align=4) for q in (mp, vp))
                    gi = builder.fmul(builder.load(builder.gep(gp, [i]), align=4), clip)
                    mi = vcall("fma", w1, builder.fsub(gi, mv), mv)
                    vi = vcall("fma", builder.fmul(w2, gi), gi, builder.fmul(vv, beta2))
                    d = builder.fadd(builder.fdiv(vcall("sqrt", builder.select(builder.fcmp_ordered("<", vi, tiny),
                                                                               tiny, vi)), bc2), eps)
                    x0 = builder.fadd(builder.fmul(x0, decay), builder.fdiv(builder.fmul(step, mi), d))
                    for q, val in ((ptr, x0), (mp, mi), (vp, vi)):
                        builder.store(val, builder.gep(q, [i]), align=4)
                news = []
                for op, s, acc, zero in zip(ops, sums, accs, zeros):
                    acc.add_incoming(zero, pre)
                    x = x0
                    if op == "abssum":  # |x - c|, c in every lane (after an update: c = 0, |x - 0| = |x|)
                        x = vcall("fabs", x if adamw else builder.fsub(x, splat(args[3])))
                    if s:
                        news.append(builder.fadd(acc, builder.fpext(x, zero.type)))
                    else:
                        x = builder.fneg(x) if op == "negmax" else x
                        news.append(builder.select(builder.fcmp_ordered(">", x, acc), x, acc))
                nxt = builder.add(i, ir.Constant(i64, 1))
                i.add_incoming(nxt, body)
                for acc, new in zip(accs, news):
                    acc.add_incoming(new, body)
                builder.cbranch(builder.icmp_signed("<", nxt, nvec), body, done)
                builder.position_at_end(done)
                totals = [builder.phi(zero.type) for zero in zeros]
                values = []
                for s, fa, init, zero, new, total in zip(sums, fas, inits, zeros, news, totals):
                    total.add_incoming(zero, pre)
                    total.add_incoming(new, body)
                    r = ir.Constant(fa, init)
                    for lane in range(lanes):
                        v = builder.extract_element(total, ir.Constant(i32, lane))
                        r = builder.fadd(r, v) if s else builder.select(builder.fcmp_ordered(">", v, r), v, r)
                    values.append(r)
                if len(values) == 1:
                    return values[0]
                return context.make_tuple(builder, signature.return_type, values)

            return sig, codegen

        return lanes_at

    lane_sum16 = _lanes_at(SUM_LANES, "sum")
    lane_abssum16 = _lanes_at(SUM_LANES, "abssum")
    lane_stats16 = _lanes_at(SUM_LANES, "sum", "max", "negmax")  # (sum, max, max of -x) in one loop
    lane_maxes16 = _lanes_at(SUM_LANES, "max", "negmax")
    adamw_stats16 = _lanes_at(SUM_LANES, "sum", "max", "negmax", adamw=True)  # the update, then lane_stats16
    adamw_abssum16 = _lanes_at(SUM_LANES, "abssum", adamw=True)  # the update, then lane_abssum16 with c = 0

    @njit(cache=True, error_model="numpy")
    def block_sum(x, start, stop):  # noqa: ANN001, ANN201
        """``sum(x[start:stop])`` of float32 in float64 in a fixed order (numpy's rendering:
        ``reference_sum`` in ``tests/qmoe/quant/test_qat_kernels.py``): blocks of :data:`BLOCK`
        elements each summed in :data:`SUM_LANES` lanes (then the lanes in order), the block sums
        added in turn; the last ``(stop - start) % SUM_LANES`` elements one by one."""
        total = 0.0
        top = stop - (stop - start) % SUM_LANES
        for b in range(start, top, BLOCK):
            total += lane_sum16(x, b, min(b + BLOCK, top), np.float32(0.0))
        for i in range(top, stop):
            total += np.float64(x[i])
        return total

    @njit(cache=True, error_model="numpy")
    def layer_stats(w):  # noqa: ANN001, ANN201
        """One pass over ``w`` (flat float32): ``(sum, min, max)``, the sum in float64 as
        :func:`block_sum`; NaN entries do not count in the min and max (they make the sum NaN).
        Each block's max and min are taken while it is in L1 (exact in any order)."""
        n = w.shape[0]
        top = n - n % SUM_LANES
        total = 0.0
        zero = np.float32(0.0)
        w_max = neg_min = np.float32(-np.inf)
        for b in range(0, top, BLOCK):
            end = min(b + BLOCK, top)
            t, m, nm = lane_stats16(w, b, end, zero)
            total += t
            w_max = m if m > w_max else w_max
            neg_min = nm if nm > neg_min else neg_min
        w_min = -neg_min
        for i in range(top, n):
            v = w[i]
            total += np.float64(v)
            w_min = v if v < w_min else w_min
            w_max = v if v > w_max else w_max
        return total, w_min, w_max

    @njit(cache=True, error_model="numpy")
    def abs_centred_sum(w, mu):  # noqa: ANN001, ANN201
        """``sum |w - mu|`` (flat float32 ``w``, float32 ``mu``) in float64 in :func:`block_sum`'s
        order, ``|w - mu|`` rounded to float32 as torch's ``(w - mu).abs_()``. One read of
        ``w``, nothing written."""
        n = w.shape[0]
        top = n - n % SUM_LANES
        total = 0.0
        for b in range(0, top, BLOCK):
            total += lane_abssum16(w, b, min(b + BLOCK, top), mu)
        for i in range(top, n):
            total += np.float64(abs(w[i] - mu))
        return total

    @njit(cache=True, error_model="numpy")
    def row_gamma(w, eps, gamma):  # noqa: ANN001, ANN201
        """bitnet's ``gamma_j = max(fl32(sum_i |w_ji| / n), eps)`` per row of ``w`` (out, in) into
        ``gamma`` (the row's sum as :func:`abs_centred_sum` with ``mu = 0``). One read of ``w``."""
        n = w.shape[1]
        flat = w.reshape(-1)
        zero = np.float32(0.0)
        for j in range(w.shape[0]):
            g = np.float32(abs_centred_sum(flat[j * n:(j + 1) * n], zero) / n)
            gamma[j] = eps if g < eps else g  # clamp_min: NaN stays NaN

    @intrinsic
    def fma32(typingctx, a, b, c):  # noqa: ANN001, ANN201
        """``a * b + c`` rounded once (float32): LLVM's fma, in hardware or in software."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            f32 = ir.FloatType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
            return builder.call(fn, args)

        return sig, codegen

    @njit(inline="always", error_model="numpy")
    def _adamw_range(p, g, m, v, start, stop, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps,  # noqa: ANN001, ANN202
                     neg_step):
        # on slices, indexed from 0: an index numba cannot prove non-negative gets a wraparound
        # test per element, which stops LLVM from vectorizing the loop (4x slower)
        p, g, m, v = p[start:stop], g[start:stop], m[start:stop], v[start:stop]
        for i in range(p.shape[0]):
            gi = g[i] * clip
            pi = p[i] * decay
            mi = fma32(w1, gi - m[i], m[i])
            vi = fma32(w2 * gi, gi, v[i] * beta2)
            d = np.sqrt(tiny if vi < tiny else vi) / bc2_sqrt + eps  # a NaN stays NaN, as clamp_min
            p[i] = pi + (neg_step * mi) / d
            m[i] = mi
            v[i] = vi

    @njit(cache=True, error_model="numpy", nogil=True)
    def adamw_step(p, g, m, v, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step):  # noqa: ANN001, ANN201
        """One AdamW step (:mod:`qmoe.optim_kernel` has the formula) over flat float32 arrays
        ``p`` (parameter), ``g`` (its gradient, read only), ``m`` and ``v`` (the moments), in
        place; every scalar is float32."""
        _adamw_range(p, g, m, v, 0, p.shape[0], clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)

    @njit(cache=True, error_model="numpy", nogil=True)
    def adamw_layer_stats(p, g, m, v, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step):  # noqa: ANN001, ANN201
        """:func:`adamw_step`, then :func:`layer_stats` of the updated ``p``, in one pass: each
        block of :data:`BLOCK` elements is updated and summed (its min and max taken) in the same
        vector loop (:data:`adamw_stats16`: the sums' latency hides under the update's memory
        traffic), in :func:`layer_stats`' blocks and lanes: the same bits as the two kernels in
        turn (the update's elements are independent of each other)."""
        n = p.shape[0]
        top = n - n % SUM_LANES
        total = 0.0
        zero = np.float32(0.0)
        w_max = neg_min = np.float32(-np.inf)
        for b in range(0, top, BLOCK):
            end = min(b + BLOCK, top)
            scalars = (clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)
            t, hi, nlo = adamw_stats16(p, b, end, (g, m, v, *scalars))
            total += t
            w_max = hi if hi > w_max else w_max
            neg_min = nlo if nlo > neg_min else neg_min
        _adamw_range(p, g, m, v, top, n, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)
        w_min = -neg_min
        for i in range(top, n):
            x = p[i]
            total += np.float64(x)
            w_min = x if x < w_min else w_min
            w_max = x if x > w_max else w_max
        return total, w_min, w_max

    @njit(cache=True, error_model="numpy", nogil=True)
    def adamw_row_gamma(p, g, m, v, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step,  # noqa: ANN001, ANN201
                        width, gamma_eps, gamma, alpha, out, rounded):
        """:func:`adamw_step` on ``p`` (flat, rows of ``width``), then :func:`row_gamma` of the
        updated rows into ``gamma``, in one pass: each block of a row is updated and summed in
        the same vector loop (:data:`adamw_abssum16`), in :func:`abs_centred_sum`'s blocks and
        lanes: the same bits as the two kernels in turn. With ``out`` (rows, width) not empty,
        then :func:`ternary` of the row (its values with ``alpha`` into ``out``, and ``rounded``
        as there) while it is in L1: the next forward's weight without reading the weight again."""
        zero = np.float32(0.0)
        scalars = (clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)
        p2 = p.reshape(gamma.shape[0], width)
        for j in range(gamma.shape[0]):
            s, e = j * width, (j + 1) * width
            top = e - width % SUM_LANES
            total = 0.0
            for b in range(s, top, BLOCK):
                total += adamw_abssum16(p, b, min(b + BLOCK, top), (g, m, v, *scalars))
            _adamw_range(p, g, m, v, top, e, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)
            for i in range(top, e):
                total += np.float64(abs(p[i] - zero))
            gj = np.float32(total / width)
            gamma[j] = gamma_eps if gj < gamma_eps else gj  # clamp_min: NaN stays NaN
            if out.shape[0] > 0:  # a row of the 2-D view: a C-contiguous loop (a slice of p is not)
                _ternary_row(p2[j], gamma[j], alpha[j], out[j], rounded, j)

    @njit(inline="always", error_model="numpy")
    def _ternary_grads(rounded, alpha, gamma, grad, grad_w, grad_alpha):  # noqa: ANN001, ANN202
        one, two, zero = np.float32(1.0), np.float32(2.0), np.float32(0.0)
        n = grad.shape[1]
        prod = np.empty(n, np.float32)
        for j in range(grad.shape[0]):
            rt = -(alpha[j] / gamma[j])
            rj, gj, wj = rounded[j], grad[j], grad_w[j]
            for i in range(n):
                prod[i] = min(max(np.float32(rj[i]), -one), one) * gj[i]  # exact
            for i in range(n):
                wj[i] = (min(max(abs(np.float32(rj[i])) - two, -one), zero) * rt) * gj[i]
            grad_alpha[j] = np.float32(block_sum(prod, 0, n))

    @njit(cache=True, error_model="numpy")
    def ternary_grads(rounded, alpha, gamma, grad, grad_w, grad_alpha):  # noqa: ANN001, ANN201
        """bitnet's backward from ``r = round(w / gamma)`` (int8, from :func:`ternary`) and
        ``t = clip(r, -1, 1)``: ``grad_w = clamp(|r| - 2, -1, 0) * ratio * grad`` (``ratio =
        -(alpha / gamma)`` per row in float32, as torch's ``(alpha / gamma).neg_()``: the STE, zero
        where the value clipped; torch's operations in torch's order) and ``grad_alpha = sum_i
        t_i grad_i`` (the product rule: exact float32 products summed in float64 by
        :func:`block_sum`, rounded once: within float32 rounding of the exact sum; no
        full-size tensor written for it). Per row, two loops of one store each (LLVM vectorizes
        neither of a loop with both stores), the row staying in L1, then the row's sum.
        ``grad_w`` must not overlap ``grad``: :func:`ternary_grads_` is the in-place form."""
        _ternary_grads(rounded, alpha, gamma, grad, grad_w, grad_alpha)

    @njit(cache=True, error_model="numpy")
    def ternary_grads_(rounded, alpha, gamma, grad, grad_alpha):  # noqa: ANN001, ANN201
        """:func:`ternary_grads` writing ``grad_w`` over ``grad`` (element by element, each read
        before its write: the same values). Its own kernel: one array is known to LLVM as one, so
        the loops vectorize; the two-array kernel given the same array twice fails the
        vectorized loop's overlap check at run time and runs its scalar loop (4x slower)."""
        _ternary_grads(rounded, alpha, gamma, grad, grad, grad_alpha)
