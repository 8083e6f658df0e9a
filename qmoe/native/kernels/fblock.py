"""fp32 dots for several rows at once: the batch path of the float layers (fp32 experts, q16's
float form aside, and the mixture's router).

The one-row kernel (:func:`~.dots.dots_float`) keeps its sums in memory and re-reads them for
every input, so a float layer runs at the speed of the L1 cache, once per row. Here a block of
:data:`BLOCK` outputs of :data:`~.vnni.ROWS` rows stays in registers over the whole input (16
of AVX-512's 32, in blocks of 64 outputs; 8 of AVX2's 16, in blocks of 16), and each weight
vector is loaded once for all the rows. Each sum is still ``((0 + x_0 w_0) + x_1 w_1) + ...`` in
input order, with a rounded product and a rounded sum (no fused multiply-add, no
reassociation): the outputs equal the one-row kernel's bit for bit. Behind
:data:`~qmoe.native.target.HAS_AVX512` or :data:`~qmoe.native.target.HAS_AVX2` (:data:`FBLOCK`;
without either the intrinsic compiles to nothing and the batch path keeps float layers row by
row).
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import Loop, c64, vec
from qmoe.native.kernels.vnni import ROWS
from qmoe.native.target import HAS_AVX2, HAS_AVX512

#: Whether float layers run their rows in blocks (:func:`float_block_rows`) on this target.
FBLOCK = HAS_AVX512 or HAS_AVX2
#: float32 lanes of a register, and registers of outputs per row in a block: 4 x 16 on
#: AVX-512; 2 x 8 on AVX2, where 4 rows of them, a weight vector each and the broadcast input
#: take 11 of the 16 registers (3 x 8 outputs spilled and ran slower).
LANES, VECTORS = (16, 4) if HAS_AVX512 else (8, 2)
#: Outputs per block.
BLOCK = LANES * VECTORS
#: Inputs a block runs for every row of a group before its next inputs (:func:`~.rows.dots_float_rows`):
#: a block's weights are one cache line per input on AVX2, ``4 N`` bytes apart, and those of a
#: whole 1536-input column map to too few of the L2 cache's sets to stay there from row to row
#: when ``4 N`` is a multiple of a large power of two (N = 640: 1536 lines on 128 sets of 8);
#: 384 inputs at a time stay. AVX-512's blocks of 4 lines spread over 4 times the sets.
CHUNK = 1 << 40 if HAS_AVX512 else 384
F32 = ir.FloatType()


@intrinsic
def float_block_rows(typingctx, xs, xstride, w, w_off, i0, i1, n, j0, cols, out, ostride):  # noqa: ANN001, ANN201, PLR0913
    """For the :data:`BLOCK` outputs ``j0 <= j < j0 + BLOCK`` of the (D, N) float32 weights at
    byte ``w_off`` of ``w`` and each row ``r < ROWS`` of ``xs[r xstride:]``:
    ``out[r ostride + j] = sum_i xs[r xstride + i] W[i, j]`` (float32, ``i`` ascending) over the
    inputs ``i0 <= i < i1`` (``i0 < i1``), from 0 if ``i0`` is 0, else from the sum of the
    inputs before, which ``out`` holds (a float32 stored and loaded again is the same value).
    Only the first ``cols`` (1..:data:`BLOCK`) weights of each input are read (masked loads: a last,
    partial block reads nothing past the weights); the outputs past them are 0 or any value."""
    sig = types.void(xs, xstride, w, w_off, i0, i1, n, j0, cols, out, ostride)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        if not FBLOCK:
            return context.get_dummy_value()
        xs_, xstride_, w_, w_off_, i0_, i1_, n_, j0_, cols_, out_, ostride_ = args
        v16 = vec(F32, LANES)
        i32x16 = vec(ir.IntType(32), LANES)
        name = f"llvm.masked.load.v{LANES}f32.p0v{LANES}f32"
        masked_load = builder.module.globals.get(name) or ir.Function(
            builder.module, ir.FunctionType(v16, [v16.as_pointer(), ir.IntType(32), vec(ir.IntType(1), LANES), v16]),
            name)
        i32 = ir.IntType(32)
        limit = builder.insert_element(ir.Constant(i32x16, None), builder.trunc(cols_, i32), ir.Constant(i32, 0))
        limit = builder.shuffle_vector(limit, ir.Constant(i32x16, None), ir.Constant(i32x16, [0] * LANES))
        masks = [builder.icmp_signed("<", ir.Constant(i32x16, list(range(LANES * q, LANES * q + LANES))), limit)
                 for q in range(VECTORS)]
        xdata = context.make_array(signature.args[0])(context, builder, xs_).data
        wbase = context.make_array(signature.args[2])(context, builder, w_).data
        wf = builder.bitcast(builder.gep(wbase, [w_off_]), F32.as_pointer())
        odata = context.make_array(signature.args[9])(context, builder, out_).data
        zero = ir.Constant(v16, [0.0] * LANES)
        first = builder.icmp_signed("==", i0_, c64(0))
        init = []
        for r in range(ROWS):
            for q in range(VECTORS):
                o = builder.add(builder.add(builder.mul(ostride_, c64(r)), j0_), c64(LANES * q))
                held = builder.load(builder.bitcast(builder.gep(odata, [o]), v16.as_pointer()), align=4)
                init.append(builder.select(first, zero, held))
        loop = Loop(builder, i0_, i1_, c64(1), init, "input")  # i0 < i1
        i, accs = loop.i, loop.vals
        at = builder.add(builder.mul(i, n_), j0_)
        ptrs = [builder.bitcast(builder.gep(wf, [builder.add(at, c64(LANES * q))]), v16.as_pointer())
                for q in range(VECTORS)]
        wv = [builder.call(masked_load, [ptrs[q], ir.Constant(i32, 4), masks[q], zero]) for q in range(VECTORS)]
        new = []
        for r in range(ROWS):
            x = builder.load(builder.gep(xdata, [builder.add(builder.mul(xstride_, c64(r)), i)]), align=4)
            xb = builder.insert_element(ir.Constant(v16, None), x, ir.Constant(ir.IntType(32), 0))
            xb = builder.shuffle_vector(xb, ir.Constant(v16, None), ir.Constant(vec(ir.IntType(32), LANES), [0] * LANES))
            new += [builder.fadd(accs[VECTORS * r + q], builder.fmul(xb, wv[q])) for q in range(VECTORS)]
        loop.close(new)
        for r in range(ROWS):
            for q in range(VECTORS):
                o = builder.add(builder.add(builder.mul(ostride_, c64(r)), j0_), c64(LANES * q))
                builder.store(loop.out[VECTORS * r + q], builder.bitcast(builder.gep(odata, [o]), v16.as_pointer()),
                              align=4)
        return context.get_dummy_value()

    return sig, codegen
