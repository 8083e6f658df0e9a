"""Numba kernels of the packed deployed forms: whole MLPs in one compiled call.

Three kernel families, each a driver that runs every layer of an MLP for every sample
(quantize the input, integer dot products, rescale, ReLU) without returning to Python:

- :func:`mlp_int8`: int8 weights x int8 activations, int32 accumulation (q4, q8, ptq8).
- :func:`mlp_bitserial`: weights as 1 or 2 packed bit-planes; the 8-bit activations are
  split into 8 bit-planes and every product is an AND + popcount (q1, q2, bitnet).
- :func:`mlp_xnor`: 1-bit weights and 1-bit inputs, ``dot = d - 2 popcount(x XOR w)`` (binary).

An MLP is described by three flat arrays (see :data:`REC`): ``meta`` (int64, one record of
:data:`REC` ints per layer), ``fp`` (float32: per layer ``rscale[N], bias[N], extra``) and
``w`` (the weights of every layer, int8 or uint64). One layer is an MLP of length one.

Activations are quantized exactly as :func:`qmoe.quant.primitives.absmax_quantize` does in
torch (``s = (1 / max|x|) * 127`` in float32 -- torch's ``127 / t`` is ``t.reciprocal() * 127``
-- then ``round`` half to even and clip), so the first layer's integers equal the QAT ones.
A layer's output is ``float32(acc) * (rscale_j / s) + bias_j`` (binary: ``float32(dot) *
(beta * alpha_j) + bias_j``), computed in float32 without fused multiply-add, so the numpy
reference in the tests reproduces it bit for bit.

Every function is compiled once per machine (``cache=True``: the machine code is kept on disk
next to this file, or in numba's user cache when that is read-only). The first use in a
process loads it from the cache (~0.1-0.3 s per driver); the very first use on a machine
compiles it (a few seconds per driver).

Importing this module imports numba; :func:`require_numba` turns its absence into a
:class:`~qmoe.errors.QmoeError` that says how to install it.

All kernels live in this one file on purpose: numba's on-disk cache is invalidated per source
file, so a driver cached with an inlined helper from *another* file would keep running the
old helper after that file changed.
"""

from __future__ import annotations

import numpy as np

from qmoe.errors import QmoeError

try:  # numba is a declared dependency; a clear error (not an ImportError) if it is missing
    import numba
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError as _err:  # pragma: no cover - exercised only without numba
    numba = None
    _IMPORT_ERROR: ImportError | None = _err
else:
    _IMPORT_ERROR = None

#: ints per layer record of ``meta``:
#: ``d_in, n_out, w_offset, f_offset, relu, p0, p1, p2, p3`` (p* are family parameters:
#: bit-serial ``n_planes, shift0, shift1, offset``; the others leave them 0).
REC = 9
#: Independent partial results of the float reductions (max, mean), so they vectorise.
LANES = 16
#: Smallest ``max|x|`` the activation scale divides by (``primitives.EPS`` in float32).
EPS32 = np.float32(1e-8)


def require_numba() -> None:
    """Raise a :class:`QmoeError` saying how to install numba when it cannot be imported."""
    if numba is None:
        raise QmoeError(
            "the packed deployed forms (q1, q2, q4, q8, bitnet, ptq8, binary) need numba, which "
            f"could not be imported ({_IMPORT_ERROR}); install it with `pip install numba` "
            "(it is a dependency of qmoe: `pip install -e .` installs it)")


if numba is not None:

    # -- intrinsics: two generic LLVM operations numba does not expose --------------------
    @intrinsic
    def popcount64(typingctx, v):  # noqa: ANN001, ANN201 - numba intrinsic signature
        """Number of set bits of a uint64 (``llvm.ctpop``: one vpopcntq/popcnt)."""
        sig = types.uint64(types.uint64)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
            return builder.call(fn, args)

        return sig, codegen

    @intrinsic
    def bit_mask64(typingctx, arr, start, shift):  # noqa: ANN001, ANN201
        """Bit ``7 - shift`` of each of the 64 int8 ``arr[start:start+64]``, packed in a uint64.

        Shifting each byte left by ``shift`` brings the wanted bit to the sign; the 64 signs
        are one ``<64 x i1>`` mask bitcast to i64 (one vpmovb2m / two pmovmskb on x86).
        Bit ``i`` of the result is element ``start + i`` (little endian, as ``np.packbits``).
        """
        sig = types.uint64(arr, start, shift)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            vty = ir.VectorType(ir.IntType(8), 64)
            vec = builder.load(builder.bitcast(builder.gep(data, [args[1]]), vty.as_pointer()), align=1)
            sh = builder.insert_element(ir.Constant(vty, None), builder.trunc(args[2], ir.IntType(8)),
                                        ir.Constant(ir.IntType(32), 0))
            sh = builder.shuffle_vector(sh, ir.Constant(vty, None),
                                        ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
            neg = builder.icmp_signed("<", builder.shl(vec, sh), ir.Constant(vty, [0] * 64))
            return builder.bitcast(neg, ir.IntType(64))

        return sig, codegen

    @intrinsic
    def gt_mask64(typingctx, arr, start, tau):  # noqa: ANN001, ANN201
        """``arr[start:start+64] > tau`` (float32, ordered compare) packed in a uint64."""
        sig = types.uint64(arr, start, tau)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            vty = ir.VectorType(ir.FloatType(), 64)
            vec = builder.load(builder.bitcast(builder.gep(data, [args[1]]), vty.as_pointer()), align=4)
            t = builder.insert_element(ir.Constant(vty, None), args[2], ir.Constant(ir.IntType(32), 0))
            t = builder.shuffle_vector(t, ir.Constant(vty, None),
                                       ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
            return builder.bitcast(builder.fcmp_ordered(">", vec, t), ir.IntType(64))

        return sig, codegen

    # -- activations ----------------------------------------------------------------------
    @njit(cache=True, inline="always")
    def max_abs(h, d):  # noqa: ANN001, ANN201
        """``max|h[:d]|`` (exact in any order; 16 independent lanes so it vectorises)."""
        lanes = np.zeros(LANES, np.float32)
        top = d - d % LANES
        for i in range(0, top, LANES):
            for l in range(LANES):
                a = abs(h[i + l])
                if a > lanes[l]:
                    lanes[l] = a
        m = np.float32(0.0)
        for l in range(LANES):
            if lanes[l] > m:
                m = lanes[l]
        for i in range(top, d):
            if abs(h[i]) > m:
                m = abs(h[i])
        return m

    @njit(cache=True, inline="always")
    def quantize_row(h, d, xq):  # noqa: ANN001, ANN201
        """``xq[:d] = clip(round(h[:d] * s), -128, 127)`` (any integer ``xq``); returns ``(s, sum)``.

        ``s = (1 / max(max|h|, EPS)) * 127`` in float32, the same operations as torch.
        """
        m = max_abs(h, d)
        if m < EPS32:
            m = EPS32
        s = (np.float32(1.0) / m) * np.float32(127.0)
        total = 0
        for i in range(d):
            v = np.rint(h[i] * s)
            v = min(max(v, np.float32(-128.0)), np.float32(127.0))
            q = np.int16(v)
            xq[i] = q
            total += q
        return s, total

    @njit(cache=True)
    def quantize_rows(x, xq):  # noqa: ANN001, ANN201
        """Batch form of :func:`quantize_row`: int8 ``xq`` (B, D) and float32 scales (B,)."""
        b, d = x.shape
        scales = np.empty(b, np.float32)
        row = np.empty(d, np.int16)
        for n in range(b):
            scales[n], _ = quantize_row(x[n], d, row)
            for i in range(d):
                xq[n, i] = np.int8(row[i])
        return scales

    @njit(cache=True, inline="always")
    def mean_abs(h, d):  # noqa: ANN001, ANN201
        """``sum|h[:d]| / d`` in float32 (the binary layer's ``beta``), in a fixed order.

        16 lane sums (lane l adds elements l, l + 16, ...), added together in lane order, then
        the tail: deterministic, and it vectorises (float sums cannot be reordered by the
        compiler, so a single running sum would cost one add latency per element).
        """
        lanes = np.zeros(LANES, np.float32)
        top = d - d % LANES
        for i in range(0, top, LANES):
            for l in range(LANES):
                lanes[l] += abs(h[i + l])
        s = np.float32(0.0)
        for l in range(LANES):
            s += lanes[l]
        for i in range(top, d):
            s += abs(h[i])
        return s / np.float32(d)

    @njit(cache=True)
    def mean_abs_rows(x):  # noqa: ANN001, ANN201
        """:func:`mean_abs` of every row of a (B, D) float32 array, shape (B, 1)."""
        out = np.empty((x.shape[0], 1), np.float32)
        for n in range(x.shape[0]):
            out[n, 0] = mean_abs(x[n], x.shape[1])
        return out

    # -- integer dot products of one layer (shared by the drivers and the tests) ----------
    @njit(cache=True)
    def int8_acc(xq, w, w_off, d, n, acc):  # noqa: ANN001, ANN201
        """``acc[j] = sum_i xq[i] * w[w_off + j*d + i]`` in int32 (int16 ``xq``, int8 ``w``)."""
        for j in range(n):
            row = w[w_off + j * d: w_off + (j + 1) * d]  # a view: non-negative indices vectorise
            s = 0
            for i in range(d):
                s += np.int32(xq[i]) * np.int32(row[i])
            acc[j] = np.int32(s)  # exact: |acc| <= d * 128 * 128 < 2^31 for d < 131072

    @njit(cache=True, inline="always")
    def bit_planes(xq, nw, planes):  # noqa: ANN001, ANN201
        """Split int8 activations (zero padded to ``64 nw``) into 8 bit-planes, (nw * 8,) uint64."""
        for k in range(nw):
            for b in range(8):
                planes[k * 8 + b] = bit_mask64(xq, k * 64, 7 - b)

    @njit(cache=True, inline="always")
    def _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, p):  # noqa: ANN001, ANN201
        """``sum_i x_i * bit_i(p)`` over one word, from the 8 two's-complement planes of x."""
        return (np.int64(popcount64(x0 & p)) + (np.int64(popcount64(x1 & p)) << 1)
                + (np.int64(popcount64(x2 & p)) << 2) + (np.int64(popcount64(x3 & p)) << 3)
                + (np.int64(popcount64(x4 & p)) << 4) + (np.int64(popcount64(x5 & p)) << 5)
                + (np.int64(popcount64(x6 & p)) << 6) - (np.int64(popcount64(x7 & p)) << 7))

    @njit(cache=True, inline="always")
    def _pc2(a, b, p, q):  # noqa: ANN001, ANN201
        return np.int64(popcount64(a & p)) + np.int64(popcount64(b & q))

    @njit(cache=True, inline="always")
    def _weighted_pc2(a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7, p, q):  # noqa: ANN001, ANN201
        """:func:`_weighted_pc` of two words (planes ``a*`` with ``p``, ``b*`` with ``q``), summed
        per plane before the shifts: two words for the shifts and adds of one (~10% faster)."""
        return (_pc2(a0, b0, p, q) + (_pc2(a1, b1, p, q) << 1) + (_pc2(a2, b2, p, q) << 2)
                + (_pc2(a3, b3, p, q) << 3) + (_pc2(a4, b4, p, q) << 4) + (_pc2(a5, b5, p, q) << 5)
                + (_pc2(a6, b6, p, q) << 6) - (_pc2(a7, b7, p, q) << 7))

    @njit(cache=True)
    def bitserial_acc(planes, xsum, w, w_off, nw, n, n_planes, sh0, sh1, offset, acc):  # noqa: ANN001, ANN201
        """Integer dots of 8-bit activations with bit-plane weights, by AND + popcount.

        The weight of output j at input i is ``(B0 << sh0) - (B1 << sh1) + offset`` with
        ``B0, B1`` its bits in the planes (``B1 = 0`` when ``n_planes == 1``); the planes are
        stored word-major, ``w[w_off + (k * n_planes + p) * n + j]``, so the inner loop runs
        over the outputs (vectorised, no horizontal sums). Words go two at a time.
        ``xsum = sum_i x_i`` serves the ``offset`` term.
        """
        for j in range(n):
            acc[j] = offset * xsum
        step = n_planes * n
        for k in range(0, nw - 1, 2):
            a0, a1, a2, a3 = planes[k * 8], planes[k * 8 + 1], planes[k * 8 + 2], planes[k * 8 + 3]
            a4, a5, a6, a7 = planes[k * 8 + 4], planes[k * 8 + 5], planes[k * 8 + 6], planes[k * 8 + 7]
            b0, b1, b2, b3 = planes[k * 8 + 8], planes[k * 8 + 9], planes[k * 8 + 10], planes[k * 8 + 11]
            b4, b5, b6, b7 = planes[k * 8 + 12], planes[k * 8 + 13], planes[k * 8 + 14], planes[k * 8 + 15]
            base = w_off + k * step
            wa0 = w[base: base + n]
            wb0 = w[base + step: base + step + n]
            if n_planes == 1:
                for j in range(n):
                    acc[j] += _weighted_pc2(a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6,
                                            b7, wa0[j], wb0[j]) << sh0
            else:
                wa1 = w[base + n: base + 2 * n]
                wb1 = w[base + step + n: base + step + 2 * n]
                for j in range(n):
                    t0 = _weighted_pc2(a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7,
                                       wa0[j], wb0[j])
                    t1 = _weighted_pc2(a0, a1, a2, a3, a4, a5, a6, a7, b0, b1, b2, b3, b4, b5, b6, b7,
                                       wa1[j], wb1[j])
                    acc[j] += (t0 << sh0) - (t1 << sh1)
        if nw % 2 == 1:  # the last word alone
            k = nw - 1
            x0, x1, x2, x3 = planes[k * 8], planes[k * 8 + 1], planes[k * 8 + 2], planes[k * 8 + 3]
            x4, x5, x6, x7 = planes[k * 8 + 4], planes[k * 8 + 5], planes[k * 8 + 6], planes[k * 8 + 7]
            base = w_off + k * step
            w0 = w[base: base + n]
            if n_planes == 1:
                for j in range(n):
                    acc[j] += _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, w0[j]) << sh0
            else:
                w1 = w[base + n: base + 2 * n]
                for j in range(n):
                    t0 = _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, w0[j])
                    t1 = _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, w1[j])
                    acc[j] += (t0 << sh0) - (t1 << sh1)

    @njit(cache=True)
    def xnor_acc(xw, w, w_off, nw, n, d, acc):  # noqa: ANN001, ANN201
        """``acc[j] = d - 2 popcount(x XOR w_j)`` with word-major weights ``w[w_off + k*n + j]``."""
        for j in range(n):
            acc[j] = 0
        for k in range(nw):
            xk = xw[k]
            wk = w[w_off + k * n: w_off + (k + 1) * n]
            for j in range(n):
                acc[j] += np.int64(popcount64(xk ^ wk[j]))
        for j in range(n):
            acc[j] = d - 2 * acc[j]

    # -- whole-MLP drivers ------------------------------------------------------------------
    @njit(cache=True, inline="always")
    def _aligned_bytes(n_bytes):  # noqa: ANN001, ANN201
        """``n_bytes`` of scratch starting on a 64-byte (cache line) boundary: a vector loop
        over a misaligned accumulator splits every load and store across two lines (~25%)."""
        raw = np.empty(n_bytes + 64, np.uint8)
        off = (64 - raw.ctypes.data % 64) % 64
        return raw[off: off + n_bytes]

    @njit(cache=True, inline="always")
    def _max_width(meta):  # noqa: ANN001, ANN201
        widest = 64
        for r in range(0, meta.shape[0], REC):
            widest = max(widest, meta[r], meta[r + 1])
        return widest + 64

    @njit(cache=True, inline="always")
    def _rescale(acc, fp, f_off, n, s, relu, out):  # noqa: ANN001, ANN201
        """``out[j] = float32(acc[j]) * (rscale[j] / s) + bias[j]``, then ReLU if asked."""
        for j in range(n):
            y = np.float32(acc[j]) * (fp[f_off + j] / s) + fp[f_off + n + j]
            if relu and not y > np.float32(0.0):
                y = np.float32(0.0)
            out[j] = y

    @njit(cache=True)
    def mlp_int8(x, meta, fp, w, out):  # noqa: ANN001, ANN201
        """Run an int8 MLP on float32 rows ``x`` (B, D) into ``out`` (B, N_last)."""
        width = _max_width(meta)
        h = np.empty(width, np.float32)
        y = np.empty(width, np.float32)
        xq = np.zeros(width, np.int16)
        acc = _aligned_bytes(4 * width).view(np.int32)
        for b in range(x.shape[0]):
            h[: x.shape[1]] = x[b]
            for r in range(0, meta.shape[0], REC):
                d, n, w_off, f_off, relu = meta[r], meta[r + 1], meta[r + 2], meta[r + 3], meta[r + 4]
                s, _ = quantize_row(h, d, xq)
                int8_acc(xq, w, w_off, d, n, acc)
                _rescale(acc, fp, f_off, n, s, relu, y)
                h, y = y, h
            out[b, :] = h[: out.shape[1]]

    @njit(cache=True)
    def mlp_bitserial(x, meta, fp, w, out):  # noqa: ANN001, ANN201
        """Run a bit-serial (1- or 2-plane weights, 8-bit activations) MLP on ``x`` (B, D)."""
        width = _max_width(meta)
        h = np.empty(width, np.float32)
        y = np.empty(width, np.float32)
        xq = np.zeros(width, np.int8)  # zero padded to whole 64-bit words
        planes = np.empty((width // 64 + 1) * 8, np.uint64)
        acc = _aligned_bytes(8 * width).view(np.int64)
        for b in range(x.shape[0]):
            h[: x.shape[1]] = x[b]
            for r in range(0, meta.shape[0], REC):
                d, n, w_off, f_off, relu = meta[r], meta[r + 1], meta[r + 2], meta[r + 3], meta[r + 4]
                nw = (d + 63) // 64
                s, xsum = quantize_row(h, d, xq)
                for i in range(d, nw * 64):
                    xq[i] = 0
                bit_planes(xq, nw, planes)
                bitserial_acc(planes, xsum, w, w_off, nw, n, meta[r + 5], meta[r + 6], meta[r + 7],
                              meta[r + 8], acc)
                _rescale(acc, fp, f_off, n, s, relu, y)
                h, y = y, h
            out[b, :] = h[: out.shape[1]]

    @njit(cache=True)
    def mlp_xnor(x, meta, fp, w, out):  # noqa: ANN001, ANN201
        """Run a binary MLP (inputs ``> tau``, sign weights, XNOR-popcount) on ``x`` (B, D).

        Per layer ``fp`` holds ``alpha[N], bias[N], tau``.
        """
        width = _max_width(meta)
        h = np.full(width, -np.inf, np.float32)  # -inf padding is never > tau: zero bits
        y = np.empty(width, np.float32)
        xw = np.empty(width // 64 + 1, np.uint64)
        acc = _aligned_bytes(8 * width).view(np.int64)
        for b in range(x.shape[0]):
            h[: x.shape[1]] = x[b]
            for r in range(0, meta.shape[0], REC):
                d, n, w_off, f_off, relu = meta[r], meta[r + 1], meta[r + 2], meta[r + 3], meta[r + 4]
                nw = (d + 63) // 64
                tau = fp[f_off + 2 * n]
                for i in range(d, nw * 64):
                    h[i] = -np.inf
                for k in range(nw):
                    xw[k] = gt_mask64(h, k * 64, tau)
                beta = mean_abs(h, d)
                xnor_acc(xw, w, w_off, nw, n, d, acc)
                for j in range(n):
                    v = np.float32(acc[j]) * (beta * fp[f_off + j]) + fp[f_off + n + j]
                    if relu and not v > np.float32(0.0):
                        v = np.float32(0.0)
                    y[j] = v
                h, y = y, h
            out[b, :] = h[: out.shape[1]]

    # -- integer dot products alone, for exactness tests --------------------------------------
    @njit(cache=True)
    def int8_dots(xq, w, n):  # noqa: ANN001, ANN201
        """(B, N) int64 dots of int8 rows ``xq`` (B, D) with the flat int8 weights ``w``."""
        b, d = xq.shape
        out = np.empty((b, n), np.int64)
        row = np.zeros(d, np.int16)
        acc = np.empty(n, np.int32)
        for r in range(b):
            for i in range(d):
                row[i] = xq[r, i]
            int8_acc(row, w, 0, d, n, acc)
            for j in range(n):
                out[r, j] = acc[j]
        return out

    @njit(cache=True)
    def bitserial_dots(xq, w, n, n_planes, sh0, sh1, offset):  # noqa: ANN001, ANN201
        """(B, N) int64 dots of int8 rows ``xq`` (B, D) with the bit-plane weights ``w``."""
        b, d = xq.shape
        nw = (d + 63) // 64
        out = np.empty((b, n), np.int64)
        row = np.zeros(nw * 64, np.int8)
        planes = np.empty(nw * 8, np.uint64)
        acc = np.empty(n, np.int64)
        for r in range(b):
            xsum = 0
            for i in range(d):
                row[i] = xq[r, i]
                xsum += np.int64(xq[r, i])
            bit_planes(row, nw, planes)
            bitserial_acc(planes, xsum, w, 0, nw, n, n_planes, sh0, sh1, offset, acc)
            out[r, :] = acc[:n]
        return out

    @njit(cache=True)
    def xnor_dots(x, tau, w, n):  # noqa: ANN001, ANN201
        """(B, N) int64 ±1 dots of the binarised rows ``x > tau`` (float32 (B, D)) with ``w``."""
        b, d = x.shape
        nw = (d + 63) // 64
        out = np.empty((b, n), np.int64)
        h = np.full(nw * 64, -np.inf, np.float32)
        xw = np.empty(nw, np.uint64)
        acc = np.empty(n, np.int64)
        t32 = np.float32(tau)
        for r in range(b):
            h[:d] = x[r]
            for k in range(nw):
                xw[k] = gt_mask64(h, k * 64, t32)
            xnor_acc(xw, w, 0, nw, n, d, acc)
            out[r, :] = acc[:n]
        return out

    # -- memory bandwidth probe (qmoe bench) ------------------------------------------------
    @njit(cache=True)
    def read_sum(buf):  # noqa: ANN001, ANN201
        """Sum of a uint64 buffer: streams it once through the core (a read-bandwidth probe)."""
        s = np.uint64(0)
        for i in range(buf.shape[0]):
            s += buf[i]
        return s
