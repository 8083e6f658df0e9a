"""q1's fake quantization in two passes over W after the optimizer's, the second writing only:
``Wq = where(W - mu >= 0, s, -s)`` with ``s = mean|W - mu|``.

The first pass (:func:`centred_signs`) takes :func:`qmoe.quant.qat_kernels.abs_centred_sum`'s
sum (the same lanes, blocks and order: the same bits) and stores, per vector of 16 weights, the
16 comparisons ``W - mu >= 0`` as the bits of a uint16 (the same float32 ``W - mu``; NaN
compares false). The second (:func:`signs_from`) writes ``s`` or ``-s`` by those bits, reading
2 bytes per 16 weights instead of 64 (the weight's pass was memory-bound: ~4 ms of a q1 epoch).
Self-contained (its intrinsics, constants and kernels in this file): numba's on-disk cache is
invalidated per file (see :mod:`qmoe.quant.qat_kernels`).
"""

from __future__ import annotations

import numpy as np

try:  # numba is a dependency (qmoe.quant.qat_kernels.fusable says whether it is there)
    from llvmlite import ir
    from numba import njit, types
    from numba.core import cgutils
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None

#: Vector lanes and elements per block: those of qat_kernels' sums (SUM_LANES, BLOCK).
LANES, BLOCK = 16, 2048

if njit is not None:

    def _splat(builder, vec, value):  # noqa: ANN001, ANN202
        undef = ir.Constant(vec, ir.Undefined)
        v = builder.insert_element(undef, value, ir.Constant(ir.IntType(32), 0))
        return builder.shuffle_vector(v, undef, ir.Constant(ir.VectorType(ir.IntType(32), LANES), [0] * LANES))

    def _ptr(context, builder, typ, value, elem):  # noqa: ANN001, ANN202
        return builder.bitcast(context.make_array(typ)(context, builder, value).data, elem.as_pointer())

    def _loop(builder, count, phis=()):  # noqa: ANN001, ANN202
        """Open ``for i in range(count)`` (count > 0 checked); returns (pre, body, done, i, phis)."""
        i64 = ir.IntType(64)
        pre = builder.basic_block
        body, done = builder.append_basic_block("signs"), builder.append_basic_block("signs.end")
        builder.cbranch(builder.icmp_signed(">", count, ir.Constant(i64, 0)), body, done)
        builder.position_at_end(body)
        i = builder.phi(i64)
        i.add_incoming(ir.Constant(i64, 0), pre)
        accs = [builder.phi(z.type) for z in phis]
        for acc, z in zip(accs, phis):
            acc.add_incoming(z, pre)
        return pre, body, done, i, accs

    def _close(builder, count, body, done, i):  # noqa: ANN001, ANN202
        nxt = builder.add(i, ir.Constant(ir.IntType(64), 1))
        i.add_incoming(nxt, body)
        builder.cbranch(builder.icmp_signed("<", nxt, count), body, done)
        builder.position_at_end(done)

    @intrinsic
    def _abssum_bits(typingctx, arr, start, stop, mu, bits):  # noqa: ANN001, ANN202
        """qat_kernels' ``lane_abssum16(arr, start, stop, mu)``, storing the lanes' ``x - mu >= 0``
        as ``bits[start // 16 + k]`` (uint16) for vector k."""
        sig = types.float64(arr, start, stop, mu, bits)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            f32, f64, i64, i16 = ir.FloatType(), ir.DoubleType(), ir.IntType(64), ir.IntType(16)
            vin, vacc = ir.VectorType(f32, LANES), ir.VectorType(f64, LANES)
            lanes = ir.Constant(i64, LANES)
            ptr = builder.gep(_ptr(context, builder, signature.args[0], args[0], vin), [builder.sdiv(args[1], lanes)])
            bptr = builder.gep(_ptr(context, builder, signature.args[4], args[4], i16), [builder.sdiv(args[1], lanes)])
            count = builder.sdiv(builder.sub(args[2], args[1]), lanes)
            zero = ir.Constant(vacc, [0.0] * LANES)
            muv = _splat(builder, vin, args[3])
            pre, body, done, i, (acc,) = _loop(builder, count, (zero,))
            d = builder.fsub(builder.load(builder.gep(ptr, [i]), align=4), muv)
            builder.store(builder.bitcast(builder.fcmp_ordered(">=", d, ir.Constant(vin, [0.0] * LANES)), i16),
                          builder.gep(bptr, [i]), align=2)
            fabs = cgutils.get_or_insert_function(builder.module, ir.FunctionType(vin, [vin]), "llvm.fabs.v16f32")
            new = builder.fadd(acc, builder.fpext(builder.call(fabs, [d]), vacc))
            acc.add_incoming(new, body)
            _close(builder, count, body, done, i)
            total = builder.phi(vacc)
            total.add_incoming(zero, pre)
            total.add_incoming(new, body)
            r = ir.Constant(f64, 0.0)
            for lane in range(LANES):
                r = builder.fadd(r, builder.extract_element(total, ir.Constant(ir.IntType(32), lane)))
            return r

        return sig, codegen

    @intrinsic
    def _select_bits(typingctx, bits, count, pos, neg, out):  # noqa: ANN001, ANN202
        """``out[16 k + l] = pos if bit l of bits[k] else neg`` for k < count."""
        sig = types.void(bits, count, pos, neg, out)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            vin = ir.VectorType(ir.FloatType(), LANES)
            pv, nv = _splat(builder, vin, args[2]), _splat(builder, vin, args[3])
            bptr = _ptr(context, builder, signature.args[0], args[0], ir.IntType(16))
            optr = _ptr(context, builder, signature.args[4], args[4], vin)
            _, body, done, i, _ = _loop(builder, args[1])
            m = builder.bitcast(builder.load(builder.gep(bptr, [i]), align=2), ir.VectorType(ir.IntType(1), LANES))
            builder.store(builder.select(m, pv, nv), builder.gep(optr, [i]), align=4)
            _close(builder, args[1], body, done, i)
            return context.get_dummy_value()

        return sig, codegen

    @njit(cache=True, error_model="numpy")
    def centred_signs(w, mu, bits):  # noqa: ANN001, ANN201
        """``sum |w - mu|`` as :func:`qmoe.quant.qat_kernels.abs_centred_sum` (flat float32 ``w``,
        float32 ``mu``), and ``w - mu >= 0`` of the first ``n - n % 16`` weights into ``bits``
        (uint16, ``n // 16`` of them)."""
        n = w.shape[0]
        top = n - n % LANES
        total = 0.0
        for b in range(0, top, BLOCK):
            total += _abssum_bits(w, b, min(b + BLOCK, top), mu, bits)
        for i in range(top, n):
            total += np.float64(abs(w[i] - mu))
        return total

    @njit(cache=True, error_model="numpy")
    def signs_from(w, mu, bits, scale, out):  # noqa: ANN001, ANN201
        """``out = scale if w - mu >= 0 else -scale`` (NaN: -scale), from :func:`centred_signs`'
        ``bits`` where it has them, from ``w`` for the last ``n % 16``."""
        n = w.shape[0]
        top = n - n % LANES
        neg = -scale
        _select_bits(bits, top // LANES, scale, neg, out)
        for i in range(top, n):
            out[i] = scale if w[i] - mu >= np.float32(0.0) else neg
