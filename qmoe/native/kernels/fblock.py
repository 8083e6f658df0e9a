"""fp32 dots for several rows at once: the batch path of the float layers (fp32 experts, q16's
float form aside, and the mixture's router).

The one-row kernel (:func:`~.dots.dots_float`) keeps its sums in memory and re-reads them for
every input, so a float layer runs at the speed of the L1 cache, once per row. Here a block of
:data:`BLOCK` outputs of :data:`~.vnni.ROWS` rows stays in 16 AVX-512 registers over the whole
input, and each weight vector is loaded once for all the rows. Each sum is still
``((0 + x_0 w_0) + x_1 w_1) + ...`` in input order, with a rounded product and a rounded sum
(no fused multiply-add, no reassociation): the outputs equal the one-row kernel's bit for bit.
Behind :data:`~qmoe.native.target.HAS_AVX512` (without it the intrinsic compiles to nothing
and the batch path keeps float layers row by row).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import Loop, c64, vec
from qmoe.native.kernels.vnni import ROWS
from qmoe.native.target import HAS_AVX512

#: Outputs per block: 4 registers of 16 float32.
BLOCK = 64
F32 = ir.FloatType()


@intrinsic
def float_block_rows(typingctx, xs, xstride, w, w_off, d, n, j0, cols, out, ostride):  # noqa: ANN001, ANN201, PLR0913
    """For the :data:`BLOCK` outputs ``j0 <= j < j0 + BLOCK`` of the (D, N) float32 weights at
    byte ``w_off`` of ``w`` and each row ``r < ROWS`` of ``xs[r xstride:]``:
    ``out[r ostride + j] = sum_i xs[r xstride + i] W[i, j]`` (float32, ``i`` ascending, from 0).
    Only the first ``cols`` (1..64) weights of each input are read (masked loads: a last,
    partial block reads nothing past the weights); the outputs past them are 0 or any value."""
    sig = types.void(xs, xstride, w, w_off, d, n, j0, cols, out, ostride)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        if not HAS_AVX512:
            return context.get_dummy_value()
        xs_, xstride_, w_, w_off_, d_, n_, j0_, cols_, out_, ostride_ = args
        v16 = vec(F32, 16)
        i32x16 = vec(ir.IntType(32), 16)
        name = "llvm.masked.load.v16f32.p0v16f32"
        masked_load = builder.module.globals.get(name) or ir.Function(
            builder.module, ir.FunctionType(v16, [v16.as_pointer(), ir.IntType(32), vec(ir.IntType(1), 16), v16]),
            name)
        i32 = ir.IntType(32)
        limit = builder.insert_element(ir.Constant(i32x16, None), builder.trunc(cols_, i32), ir.Constant(i32, 0))
        limit = builder.shuffle_vector(limit, ir.Constant(i32x16, None), ir.Constant(i32x16, [0] * 16))
        masks = [builder.icmp_signed("<", ir.Constant(i32x16, list(range(16 * q, 16 * q + 16))), limit)
                 for q in range(4)]
        xdata = context.make_array(signature.args[0])(context, builder, xs_).data
        wbase = context.make_array(signature.args[2])(context, builder, w_).data
        wf = builder.bitcast(builder.gep(wbase, [w_off_]), F32.as_pointer())
        odata = context.make_array(signature.args[8])(context, builder, out_).data
        zero = ir.Constant(v16, [0.0] * 16)
        loop = Loop(builder, c64(0), d_, c64(1), [zero] * (4 * ROWS), "input")  # d >= 1
        i, accs = loop.i, loop.vals
        at = builder.add(builder.mul(i, n_), j0_)
        ptrs = [builder.bitcast(builder.gep(wf, [builder.add(at, c64(16 * q))]), v16.as_pointer()) for q in range(4)]
        wv = [builder.call(masked_load, [ptrs[q], ir.Constant(i32, 4), masks[q], zero]) for q in range(4)]
        new = []
        for r in range(ROWS):
            x = builder.load(builder.gep(xdata, [builder.add(builder.mul(xstride_, c64(r)), i)]), align=4)
            xb = builder.insert_element(ir.Constant(v16, None), x, ir.Constant(ir.IntType(32), 0))
            xb = builder.shuffle_vector(xb, ir.Constant(v16, None), ir.Constant(vec(ir.IntType(32), 16), [0] * 16))
            new += [builder.fadd(accs[4 * r + q], builder.fmul(xb, wv[q])) for q in range(4)]
        loop.close(new)
        for r in range(ROWS):
            for q in range(4):
                o = builder.add(builder.add(builder.mul(ostride_, c64(r)), j0_), c64(16 * q))
                builder.store(loop.out[4 * r + q], builder.bitcast(builder.gep(odata, [o]), v16.as_pointer()),
                              align=4)
        return context.get_dummy_value()

    return sig, codegen
