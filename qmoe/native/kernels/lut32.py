"""AVX-512 BW intrinsics of the 5-input table kernel (:func:`~.dots.dots_lut32`): the tables
of 5-activation subset sums (:func:`lut32_tables`, ``vpmaddubsw``) and the ``vpermw`` look-ups
into them (:func:`lut32_block1`, :func:`lut32_block2`).

Each compiles to nothing without AVX-512 BW (:data:`~qmoe.native.target.HAS_VPERMW`), and no
layout that would reach it is ever built then. Every sum is exact: the comments give the
largest value each integer lane can hold.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import I8, I16, I32, Loop, c64, data_ptr, shuffle, splat, vec, x86
from qmoe.native.target import HAS_VPERMW

#: Outputs per block of the 5-input (``vpermw``) table kernel; steps summed in int16.
LUT32_BLOCK, LUT32_FLUSH = 32, 16


def _table_masks(pair: int) -> ir.Constant:
    """``vpmaddubsw``'s unsigned operand for inputs ``2 pair`` and ``2 pair + 1`` of a group:
    word m holds bits ``2 pair`` and ``2 pair + 1`` of m (0 past input 4)."""
    out = []
    for m in range(32):
        out += [(m >> (2 * pair)) & 1, (m >> (2 * pair + 1)) & 1 if 2 * pair + 1 < 5 else 0]
    return ir.Constant(vec(I8, 64), out)


@intrinsic
def lut32_tables(typingctx, xq, ngroups, tab):  # noqa: ANN001, ANN201
    """``tab`` row q (32 int16) = the subset sums ``T[m] = sum_i bit_i(m) xq[5 q + i]`` of
    group q, for ``q < ngroups`` (>= 1; ``xq`` int8, readable to ``5 ngroups + 1``). Per group
    three ``vpmaddubsw`` of the constant bit patterns (:func:`_table_masks`) by a broadcast pair
    of activations (``|bit x + bit x'| <= 254``: never saturates), added (``|T| <= 635``)."""
    sig = types.void(xq, ngroups, tab)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        if not HAS_VPERMW:
            return context.get_dummy_value()
        v8, v16 = vec(I8, 64), vec(I16, 32)
        base = context.make_array(signature.args[0])(context, builder, args[0]).data
        rows = data_ptr(context, builder, signature.args[2], args[2], v16)
        masks = [_table_masks(k) for k in range(3)]
        loop = Loop(builder, c64(0), args[1], c64(1), [], "tables")
        at = builder.mul(loop.i, c64(5))
        t = None
        for k in range(3):
            pair = builder.load(builder.bitcast(builder.gep(base, [builder.add(at, c64(2 * k))]), I16.as_pointer()),
                                align=1)
            word = builder.insert_element(ir.Constant(v16, None), pair, ir.Constant(I32, 0))
            word = shuffle(builder, word, ir.Constant(v16, None), [0] * 32)
            p = x86(builder, "avx512.pmaddubs.w.512", v16, [masks[k], builder.bitcast(word, v8)])
            t = p if t is None else builder.add(t, p)
        builder.store(t, builder.gep(rows, [loop.i]), align=64)
        loop.close([])
        return context.get_dummy_value()

    return sig, codegen


def _permute_i16(builder, table, idx):  # noqa: ANN001, ANN202
    """``table[idx & 31]`` per lane of two <32 x i16> (one ``vpermw``)."""
    return x86(builder, "avx512.permvar.hi.512", vec(I16, 32), [table, idx])


def _lut32_block(n_planes: int):  # noqa: ANN202
    """The ``vpermw`` table block for weights of ``n_planes`` planes.

    ``lut32_block(tab, wl, w_off, plane_steps, nsteps, out, o_off)``: for the 32 outputs of one
    block, ``out[o_off + 32 p + r]`` (int32) = sum over the ``nsteps`` steps g of
    ``tab[3g + t][(u_r >> 5t) & 31]``, t < 3, where ``u`` is row ``w_off + p plane_steps + g``
    of ``wl`` seen as rows of 32 uint16 (``tab``: rows of 32 int16 subset sums of 5 inputs,
    |sum| <= 640). Sums stay int16 for :data:`LUT32_FLUSH` steps (<= 16 x 3 x 640 < 2^15).
    """
    v16, v32 = vec(I16, 32), vec(I32, 16)

    @intrinsic
    def lut32_block(typingctx, tab, wl, w_off, plane_steps, nsteps, out, o_off):  # noqa: ANN001, ANN202
        sig = types.void(tab, wl, w_off, plane_steps, nsteps, out, o_off)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            if not HAS_VPERMW:
                return context.get_dummy_value()
            tab_, wl_, w_off_, pstride, nsteps_, out_, o_off_ = args
            tabs = data_ptr(context, builder, signature.args[0], tab_, v16)
            wrows = data_ptr(context, builder, signature.args[1], wl_, v16)
            odata = context.make_array(signature.args[5])(context, builder, out_).data
            zero16, zero32 = splat(I16, 32, 0), splat(I32, 16, 0)
            chunks = Loop(builder, c64(0), nsteps_, c64(LUT32_FLUSH), [zero32] * (2 * n_planes), "chunk")
            stop = builder.add(chunks.i, c64(LUT32_FLUSH))
            stop = builder.select(builder.icmp_signed("<", stop, nsteps_), stop, nsteps_)

            def step(g, p, acc):  # noqa: ANN001, ANN202 - acc + step g's three look-ups of plane p
                t = [builder.load(builder.gep(tabs, [builder.add(builder.mul(g, c64(3)), c64(k))]), align=64)
                     for k in range(3)]
                row = builder.add(builder.add(w_off_, builder.mul(c64(p), pstride)), g)
                u = builder.load(builder.gep(wrows, [row]), align=64)
                s0 = _permute_i16(builder, t[0], u)  # vpermw reads the low 5 bits
                s1 = _permute_i16(builder, t[1], builder.lshr(u, splat(I16, 32, 5)))
                s2 = _permute_i16(builder, t[2], builder.lshr(u, splat(I16, 32, 10)))
                return builder.add(acc, builder.add(builder.add(s0, s1), s2))

            # two steps a turn into two sums (the second skipped past stop): half the loop's
            # own instructions, and two independent add chains
            steps = Loop(builder, chunks.i, stop, c64(2), [zero16] * (2 * n_planes), "step")
            first = [step(steps.i, p, steps.vals[p]) for p in range(n_planes)]
            g1 = builder.add(steps.i, c64(1))
            before = builder.basic_block
            second, merge = builder.append_basic_block("step.second"), builder.append_basic_block("step.merge")
            builder.cbranch(builder.icmp_signed("<", g1, stop), second, merge)
            builder.position_at_end(second)
            taken = [step(g1, p, steps.vals[n_planes + p]) for p in range(n_planes)]
            after_second = builder.basic_block
            builder.branch(merge)
            builder.position_at_end(merge)
            later = []
            for p in range(n_planes):
                ph = builder.phi(v16)
                ph.add_incoming(taken[p], after_second)
                ph.add_incoming(steps.vals[n_planes + p], before)
                later.append(ph)
            steps.close(first + later)
            sums = [builder.add(steps.out[p], steps.out[n_planes + p]) for p in range(n_planes)]
            wide = []
            for p in range(n_planes):
                for h in range(2):
                    half = shuffle(builder, sums[p], sums[p], range(16 * h, 16 * h + 16))
                    wide.append(builder.add(chunks.vals[2 * p + h], builder.sext(half, v32)))
            chunks.close(wide)
            for k, v in enumerate(chunks.out):  # plane p, half h -> out[o_off + 32 p + 16 h]
                ptr = builder.gep(odata, [builder.add(o_off_, c64(16 * k))])
                builder.store(v, builder.bitcast(ptr, v32.as_pointer()), align=4)
            return context.get_dummy_value()

        return sig, codegen

    return lut32_block


lut32_block1, lut32_block2 = _lut32_block(1), _lut32_block(2)
