"""AVX-512 VNNI dots: one block of 64 outputs for one or several rows, int8 weights by
``vpdpbusd`` and int16 weights (q16) by ``vpdpwssd``.

``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds each group of 4 products
to an int32 lane, in one instruction (the AVX2 path needs ``vpsignb``, ``vpmaddubsw`` and
``vpmaddwd`` for 32 products). The activations enter as ``x + 128`` (unsigned, 1..255), each
group of 4 broadcast to every lane; a lane holds one output, so no horizontal sums. Several
rows share each weight load: at batch sizes the weights are read once per :data:`ROWS` rows
instead of once per row. ``vpdpwssd`` multiplies 32 pairs of int16 and adds each pair's two
products to an int32 lane; the q16 kernel sums :data:`Q16_PAIRS` pairs in int32 lanes, then
widens them to int64 (exact, as :func:`~.dots.dots_q16`). Behind
:data:`~qmoe.native.target.HAS_VNNI` like :mod:`.simd`'s intrinsics: without it the intrinsic
compiles to nothing and its layout is never built.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import I32, I64, Loop, c64, data_ptr, vec
from qmoe.native.target import HAS_VNNI

#: Rows the batch kernel runs per pass over a layer's weights (4 rows x 4 registers of outputs
#: = 16 accumulators, of AVX-512's 32 registers).
ROWS = 4
#: Rows the batch path runs through a chain at once (:mod:`.rows`), :data:`ROWS` at a time
#: per block of outputs: a block's weights come from memory once per group and from the L2
#: cache for the group's other rows.
GROUP = 16
#: Outputs per block (:data:`qmoe.native.packing.VNNI_BLOCK`): 4 registers of 16 int32.
BLOCK = 64
#: Pairs of inputs the q16 kernel sums in int32 before widening to int64:
#: ``2 x 128 x 127 x 32768 < 2^31`` (activations within +-127, :mod:`.act`).
Q16_PAIRS = 128


def _vnni_block(rows: int):  # noqa: ANN202
    """The block intrinsic for ``rows`` rows.

    ``dots(xu, xstride, w, w_off, groups, out, o_off, ostride)``: for the 64 outputs j of the
    block at byte ``w_off`` of ``w`` (``groups`` rows of (64 outputs, 4 inputs) int8, 64-byte
    aligned) and each row r < ``rows`` of uint8 activations ``xu[r xstride:]`` (``xstride`` a
    multiple of 4), ``out[r ostride + o_off + j] = sum_i xu[r xstride + i] w_ji`` (int32;
    exact: ``4 groups x 255 x 128 < 2^31``, :data:`~qmoe.native.packing.VNNI_MAX_D`).
    """

    @intrinsic
    def dots(typingctx, xu, xstride, w, w_off, groups, out, o_off, ostride):  # noqa: ANN001, ANN202
        sig = types.void(xu, xstride, w, w_off, groups, out, o_off, ostride)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            if not HAS_VNNI:
                return context.get_dummy_value()
            xu_, xstride_, w_, w_off_, groups_, out_, o_off_, ostride_ = args
            v32 = vec(I32, 16)
            fnty = ir.FunctionType(v32, [v32, v32, v32])
            dpbusd = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=fnty)
            words = data_ptr(context, builder, signature.args[0], xu_, I32)  # 4 activations each
            wbase = context.make_array(signature.args[2])(context, builder, w_).data
            wrows = builder.bitcast(builder.gep(wbase, [w_off_]), v32.as_pointer())
            odata = context.make_array(signature.args[5])(context, builder, out_).data
            xwords = builder.sdiv(xstride_, c64(4))
            groups = Loop(builder, c64(0), groups_, c64(1), [ir.Constant(v32, [0] * 16)] * (4 * rows), "group")
            k, accs = groups.i, groups.vals  # groups >= 1: a layer has an input
            wv = [builder.load(builder.gep(wrows, [builder.add(builder.mul(k, c64(4)), c64(q))]), align=64)
                  for q in range(4)]
            new = []
            for r in range(rows):
                x = builder.load(builder.gep(words, [builder.add(builder.mul(xwords, c64(r)), k)]), align=4)
                xb = builder.insert_element(ir.Constant(v32, None), x, ir.Constant(I32, 0))
                xb = builder.shuffle_vector(xb, ir.Constant(v32, None), ir.Constant(v32, [0] * 16))
                new += [builder.call(dpbusd, [accs[4 * r + q], xb, wv[q]]) for q in range(4)]
            groups.close(new)
            for r in range(rows):
                for q in range(4):
                    at = builder.add(builder.add(builder.mul(ostride_, c64(r)), o_off_), c64(16 * q))
                    builder.store(groups.out[4 * r + q], builder.bitcast(builder.gep(odata, [at]), v32.as_pointer()),
                                  align=4)
            return context.get_dummy_value()

        return sig, codegen

    return dots


#: One row (batch 1, and the rows left over from the batch kernel).
vnni_block1 = _vnni_block(1)
#: :data:`ROWS` rows at once.
vnni_block_rows = _vnni_block(ROWS)


def _q16_block(rows: int):  # noqa: ANN202
    """The q16 block intrinsic for ``rows`` rows.

    ``dots(xw, xstride, w, w_off, k0, k1, out, o_off, ostride)``: for the 64 outputs j of the
    block at byte ``w_off`` of ``w`` (rows of (64 outputs, 2 inputs) int16, 64-byte aligned),
    its pairs ``k0 <= k < k1`` (at most :data:`Q16_PAIRS`, at least one) and each row
    r < ``rows`` of int32 words ``xw[r xstride:]`` (word k: the int16 activations ``2k`` (low
    half) and ``2k + 1``): ``out[r ostride + o_off + j] += sum_k x_2k w_j,2k + x_2k+1 w_j,2k+1``,
    summed in int32 (exact: ``2 x 128 x 127 x 32768 < 2^31``), added to the int64 ``out``.
    """

    @intrinsic
    def dots(typingctx, xw, xstride, w, w_off, k0, k1, out, o_off, ostride):  # noqa: ANN001, ANN202
        sig = types.void(xw, xstride, w, w_off, k0, k1, out, o_off, ostride)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            if not HAS_VNNI:
                return context.get_dummy_value()
            xw_, xstride_, w_, w_off_, k0_, k1_, out_, o_off_, ostride_ = args
            v32, v64 = vec(I32, 16), vec(I64, 16)
            fnty = ir.FunctionType(v32, [v32, v32, v32])
            dpwssd = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpwssd.512", fnty=fnty)
            words = data_ptr(context, builder, signature.args[0], xw_, I32)
            wbase = context.make_array(signature.args[2])(context, builder, w_).data
            wrows = builder.bitcast(builder.gep(wbase, [w_off_]), v32.as_pointer())
            odata = context.make_array(signature.args[6])(context, builder, out_).data
            steps = Loop(builder, k0_, k1_, c64(1), [ir.Constant(v32, [0] * 16)] * (4 * rows), "pair")
            k, accs = steps.i, steps.vals
            wv = [builder.load(builder.gep(wrows, [builder.add(builder.mul(k, c64(4)), c64(q))]), align=64)
                  for q in range(4)]
            new = []
            for r in range(rows):
                x = builder.load(builder.gep(words, [builder.add(builder.mul(xstride_, c64(r)), k)]), align=4)
                xb = builder.insert_element(ir.Constant(v32, None), x, ir.Constant(I32, 0))
                xb = builder.shuffle_vector(xb, ir.Constant(v32, None), ir.Constant(v32, [0] * 16))
                new += [builder.call(dpwssd, [accs[4 * r + q], xb, wv[q]]) for q in range(4)]
            steps.close(new)
            for r in range(rows):
                for q in range(4):
                    at = builder.add(builder.add(builder.mul(ostride_, c64(r)), o_off_), c64(16 * q))
                    p = builder.bitcast(builder.gep(odata, [at]), v64.as_pointer())
                    builder.store(builder.add(builder.load(p, align=8), builder.sext(steps.out[4 * r + q], v64)), p,
                                  align=8)
            return context.get_dummy_value()

        return sig, codegen

    return dots


#: q16, one row.
q16_block1 = _q16_block(1)
#: q16, :data:`ROWS` rows at once.
q16_block_rows = _q16_block(ROWS)
