"""fp32 dots for several rows at once: the batch path of the float layers (fp32 experts and
the mixture's router), and the one-row kernel of the panel layout.

A block of :data:`BLOCK` outputs of :data:`FROWS` rows stays in registers over the whole input
(16 of AVX-512's 32 registers, in blocks of 64 outputs; 12 of AVX2's 16, in blocks of 16), and
each weight vector is loaded once for all the rows. Each sum is
``fma(x_{D-1}, w_{D-1}, ... fma(x_1, w_1, fma(x_0, w_0, 0)))``: input order, one fused
multiply-add (one rounding) per input, no reassociation, so the outputs equal the one-row
kernels' (:func:`~.dots.dots_float`, :func:`~.dots.dots_float_panels`) bit for bit and never
depend on the batch. Behind :data:`~qmoe.native.target.HAS_AVX512` or
:data:`~qmoe.native.target.HAS_AVX2` (:data:`FBLOCK`; without either the intrinsics compile to
nothing and float layers run row by row).

The weights are (D, N) (:data:`~qmoe.native.layout.FLOAT`) or in panels of 16 outputs
(:data:`~qmoe.native.layout.FLOAT_PANELS`). In (D, N) a block's weights for one input are
``4 N`` bytes from the next input's, so each input's load is a new cache line far from the
last: at batch 256 the 1536-640 layer ran at ~36 GFLOP/s on a Zen 3 core, against ~89 for
torch's fp32 GEMM. In panels a block reads its weights as one sequential stream; with
:data:`FROWS` rows and fused multiply-adds it runs faster than torch's GEMM there (the numbers
are in ``qmoe bench``), which is why AVX2 targets lower fp32 layers to panels.
"""

from __future__ import annotations

import math

from llvmlite import ir
from numba import njit, types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import Loop, c64, vec
from qmoe.native.kernels.vnni import GROUP_MAX, ROWS
from qmoe.native.layout import PANEL
from qmoe.native.target import HAS_AVX2, HAS_AVX512

#: Whether float layers run their rows in blocks (:func:`float_block_rows`) on this target.
FBLOCK = HAS_AVX512 or HAS_AVX2
#: float32 lanes of a register, and registers of outputs per row in a block: 4 x 16 on
#: AVX-512; 2 x 8 on AVX2 (3 x 8 outputs spilled and ran slower).
LANES, VECTORS = (16, 4) if HAS_AVX512 else (8, 2)
#: Outputs per block.
BLOCK = LANES * VECTORS
#: Rows of :func:`float_block_rows`: 6 on AVX2 (12 accumulators, the two weight vectors and the
#: broadcast input take 15 of the 16 registers; each weight vector read from L2 serves 6 rows,
#: ~1.2x the rate of 4 rows at batch 256 on a Zen 3 core), :data:`~.vnni.ROWS` on AVX-512.
FROWS = ROWS if HAS_AVX512 else 6
#: Rows of a group run :data:`FROWS` at a time in steps of this many (the rest, a multiple of
#: :data:`~.vnni.ROWS` below it, :data:`~.vnni.ROWS` at a time).
FSTEP = FROWS * ROWS // math.gcd(FROWS, ROWS)
#: Rows of a group (:func:`~.rows.group_size`) of a chain of float layers only whose weights
#: exceed :data:`~.vnni.GROUP_WEIGHTS`, on AVX2: 24 (two :data:`FSTEP`); 24 rows of 1536 inputs
#: (147 KB) and a 96 KB panel stay in a 512 KB L2, 64 rows (393 KB) did not. On a Zen 3 core
#: (512 KB L2), the paper's fp32 MLP at batch 256 ran ~8% faster than with 64-row groups (4 of 4
#: alternated runs, q8 and q16 unchanged); AVX-512 keeps :data:`~.vnni.GROUP_MAX` (unmeasured).
FGROUP = GROUP_MAX if HAS_AVX512 else 2 * FSTEP
#: Blocks of one row at once (:func:`float_blocks_row`): 4 x 2 accumulators on AVX2, 2 x 4 on
#: AVX-512, as many chains of fused multiply-adds as the units have in flight.
ROW_BLOCKS = 2 if HAS_AVX512 else 4
#: Inputs a block runs for every row of a group before its next inputs (:func:`~.rows.dots_float_rows`):
#: a block's weights are one cache line per input on AVX2, ``4 N`` bytes apart, and those of a
#: whole 1536-input column map to too few of the L2 cache's sets to stay there from row to row
#: when ``4 N`` is a multiple of a large power of two (N = 640: 1536 lines on 128 sets of 8);
#: 384 inputs at a time stay. AVX-512's blocks of 4 lines spread over 4 times the sets.
CHUNK = 1 << 40 if HAS_AVX512 else 384
F32 = ir.FloatType()


def _block_codegen(rows, blocks=1):  # noqa: ANN001, ANN202
    """The code of :func:`float_block_rows` for ``rows`` rows and ``blocks`` blocks of outputs
    (more than one: whole blocks only)."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        if not FBLOCK:
            return context.get_dummy_value()
        xs_, xstride_, w_, w_off_, i0_, i1_, wbase_, qstride_, istride_, bstride_, j0_, cols_, out_, ostride_ = args
        v16 = vec(F32, LANES)
        i32, i32x16 = ir.IntType(32), vec(ir.IntType(32), LANES)
        name = f"llvm.masked.load.v{LANES}f32.p0v{LANES}f32"
        masked_load = builder.module.globals.get(name) or ir.Function(
            builder.module, ir.FunctionType(v16, [v16.as_pointer(), i32, vec(ir.IntType(1), LANES), v16]), name)
        limit = builder.insert_element(ir.Constant(i32x16, None), builder.trunc(cols_, i32), ir.Constant(i32, 0))
        limit = builder.shuffle_vector(limit, ir.Constant(i32x16, None), ir.Constant(i32x16, [0] * LANES))
        masks = [builder.icmp_signed("<", ir.Constant(i32x16, list(range(LANES * q, LANES * q + LANES))), limit)
                 for q in range(VECTORS)]
        xdata = context.make_array(signature.args[0])(context, builder, xs_).data
        wdata = context.make_array(signature.args[2])(context, builder, w_).data
        wf = builder.bitcast(builder.gep(wdata, [w_off_]), F32.as_pointer())
        odata = context.make_array(signature.args[12])(context, builder, out_).data
        zero = ir.Constant(v16, [0.0] * LANES)
        fma_name = f"llvm.fma.v{LANES}f32"
        fma = builder.module.globals.get(fma_name) or ir.Function(builder.module, ir.FunctionType(v16, [v16] * 3),
                                                                  fma_name)
        first = builder.icmp_signed("==", i0_, c64(0))
        vptr = lambda base, k: builder.bitcast(builder.gep(base, [k]), v16.as_pointer())  # noqa: E731
        # accumulator k = (r blocks + b) VECTORS + q: row r, block b, vector q
        outs = [builder.add(builder.add(builder.mul(ostride_, c64(r)), j0_), c64(BLOCK * b + LANES * q))
                for r in range(rows) for b in range(blocks) for q in range(VECTORS)]
        bases = [builder.add(builder.add(wbase_, builder.mul(bstride_, c64(b))), builder.mul(qstride_, c64(q)))
                 for b in range(blocks) for q in range(VECTORS)]

        def emit(whole):  # noqa: ANN001, ANN202 - the loop, for whole blocks or a partial one
            init = [builder.select(first, zero, builder.load(vptr(odata, o), align=4)) for o in outs]
            loop = Loop(builder, i0_, i1_, c64(1), init, "input")  # i0 < i1
            i, accs = loop.i, loop.vals
            at = builder.mul(i, istride_)
            ptrs = [vptr(wf, builder.add(at, base)) for base in bases]
            if whole:  # plain loads: 30% faster than masked ones at batch 256 on Zen 3
                wv = [builder.load(p, align=4) for p in ptrs]
            else:
                wv = [builder.call(masked_load, [p, ir.Constant(i32, 4), m, zero]) for p, m in zip(ptrs, masks)]
            new = []
            for r in range(rows):
                x = builder.load(builder.gep(xdata, [builder.add(builder.mul(xstride_, c64(r)), i)]), align=4)
                xb = builder.insert_element(ir.Constant(v16, None), x, ir.Constant(i32, 0))
                xb = builder.shuffle_vector(xb, ir.Constant(v16, None), ir.Constant(i32x16, [0] * LANES))
                new += [builder.call(fma, [xb, wk, accs[len(wv) * r + k]]) for k, wk in enumerate(wv)]
            loop.close(new)
            for o, v in zip(outs, loop.out):
                builder.store(v, vptr(odata, o), align=4)

        if blocks > 1:
            emit(True)
            return context.get_dummy_value()
        with builder.if_else(builder.icmp_signed("==", cols_, c64(BLOCK))) as (whole, partial):
            with whole:
                emit(True)
            with partial:
                emit(False)
        return context.get_dummy_value()

    return codegen


@intrinsic
def float_block_rows(typingctx, xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride,  # noqa: ANN001, ANN201, PLR0913
                     j0, cols, out, ostride):
    """For the :data:`BLOCK` outputs ``j0 <= j < j0 + BLOCK`` of float32 weights at byte ``w_off``
    of ``w`` and each row ``r <`` :data:`FROWS` of ``xs[r xstride:]``:
    ``out[r ostride + j] = sum_i xs[r xstride + i] W[i, j]`` (float32, ``i`` ascending, one
    fused multiply-add each) over the inputs ``i0 <= i < i1`` (``i0 < i1``), from 0 if ``i0``
    is 0, else from the sum of the inputs before, which ``out`` holds (a float32 stored and
    loaded again is the same value). The block's :data:`LANES` weights ``j0 + LANES q ..`` of
    input ``i`` are the floats at ``wbase + q qstride + i istride`` (:func:`~.rows.dots_float_rows`;
    ``bstride`` is not read). Only the first ``cols`` (1..:data:`BLOCK`) weights of each input
    are read (masked loads: a last, partial block reads nothing past the weights); the outputs
    past them are 0 or any value."""
    sig = types.void(xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride, j0, cols, out, ostride)
    return sig, _block_codegen(FROWS)


@intrinsic
def float_block_rows4(typingctx, xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride,  # noqa: ANN001, ANN201, PLR0913
                      j0, cols, out, ostride):
    """:func:`float_block_rows` for :data:`~.vnni.ROWS` rows (the rows of a group past its
    :data:`FROWS`-row blocks)."""
    return types.void(xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride, j0, cols, out, ostride), \
        _block_codegen(ROWS)


@intrinsic
def float_block_row(typingctx, xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride,  # noqa: ANN001, ANN201, PLR0913
                    j0, cols, out, ostride):
    """:func:`float_block_rows` for the row ``xs`` alone (the one-row kernel of the panels,
    :func:`~.dots.dots_float_panels`; ``xstride`` and ``ostride`` are not read)."""
    return types.void(xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride, j0, cols, out, ostride), \
        _block_codegen(1)


@intrinsic
def float_blocks_row(typingctx, xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride,  # noqa: ANN001, ANN201, PLR0913
                     j0, cols, out, ostride):
    """:func:`float_block_row` for the :data:`ROW_BLOCKS` whole blocks from output ``j0`` at
    once, block ``b``'s weights ``b bstride`` floats after block 0's (``cols`` is not read): one
    row's sums are a chain of dependent additions per output, and one block alone leaves the
    vector units waiting on them."""
    return types.void(xs, xstride, w, w_off, i0, i1, wbase, qstride, istride, bstride, j0, cols, out, ostride), \
        _block_codegen(1, ROW_BLOCKS)


@njit(inline="always")
def panel_strides(j0, d):  # noqa: ANN001, ANN201
    """``(wbase, qstride)`` of :func:`float_block_rows` for the block at output ``j0`` of
    :data:`~qmoe.native.layout.FLOAT_PANELS` weights with ``d`` inputs (``istride`` is
    :data:`~qmoe.native.layout.PANEL`): vector ``q`` is in panel ``(j0 + LANES q) // PANEL``, at
    ``(j0 + LANES q) % PANEL`` of it."""
    return j0 * d, LANES if LANES < PANEL else LANES * d
