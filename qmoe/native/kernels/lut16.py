"""AVX2 ``vpshufb`` look-ups of 4-input subset sums (the LUT16 layout's kernels), as LLVM IR.

Without AVX2 (:data:`qmoe.native.target.HAS_AVX2`) the intrinsics compile to nothing, and no
LUT16 layout is ever built. Every sum is exact: the comments give the largest value each
integer lane can hold.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import I8, I16, I32, Loop, c64, data_ptr, shuffle, splat, vec, x86
from qmoe.native.target import HAS_AVX2

#: Steps of two pairs of groups (16 inputs) the 4-input table kernel sums in uint16.
LUT16_FLUSH = 16


def _lut16_index(q: int, bit: int) -> list[int]:
    """``pshufb`` control picking input ``4 q + bit`` for the table entries whose index has
    ``bit`` set, zero (0x80) for the others; the same in both 128-bit lanes."""
    lane = [4 * q + bit if (m >> bit) & 1 else 0x80 for m in range(16)]
    return lane + lane


@intrinsic
def lut16_tables4(typingctx, xq, q4, tab):  # noqa: ANN001, ANN201
    """Tables of 4 groups of 4 activations: groups ``4 q4 .. 4 q4 + 3`` (inputs ``16 q4 ..``).

    With ``u = x + 128`` (0..255) split in nibbles ``u = 16 h + l``, group g gets two tables of
    its 16 subset sums, ``L[m] = sum_i bit_i(m) l_i`` and ``H[m]`` alike (each <= 60, so four
    groups still fit a byte), 16 bytes each: ``tab[32 g : 32 g + 16] = L``,
    ``tab[32 g + 16 : 32 g + 32] = H`` (:func:`lut16_block` loads each into both 128-bit lanes).
    Four ``vpshufb`` of a register holding the l's in one lane and the h's in the other make
    both tables of a group, one 32-byte store. (Tables stored twice over, 64 bytes a group, took
    48 KB for 1536 inputs: with a block's weights more than the L1 cache; this is 3-10% faster.)
    """
    sig = types.void(xq, q4, tab)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        if not HAS_AVX2:
            return context.get_dummy_value()
        v16, v32 = vec(I8, 16), vec(I8, 32)
        x = builder.load(builder.gep(data_ptr(context, builder, signature.args[0], args[0], v16), [args[1]]),
                         align=16)
        u = builder.xor(x, splat(I8, 16, -128))  # x + 128 as an unsigned byte
        low = builder.and_(u, splat(I8, 16, 15))
        high = builder.lshr(u, splat(I8, 16, 4))
        src = shuffle(builder, low, high, range(32))  # lane 0: l, lane 1: h
        tabs = data_ptr(context, builder, signature.args[2], args[2], v32)
        for q in range(4):
            parts = [x86(builder, "avx2.pshuf.b", v32, [src, ir.Constant(v32, _lut16_index(q, bit))])
                     for bit in range(4)]
            t = builder.add(builder.add(parts[0], parts[1]), builder.add(parts[2], parts[3]))  # lanes: L, H
            builder.store(t, builder.gep(tabs, [builder.add(builder.mul(args[1], c64(4)), c64(q))]), align=32)
        return context.get_dummy_value()

    return sig, codegen


def _unpack_bytes(builder, a, b, high: bool):  # noqa: ANN001, ANN202
    """``vpunpck{l,h}bw``: bytes of ``a`` and ``b`` interleaved, within each 128-bit lane."""
    base = 8 if high else 0
    return shuffle(builder, a, b, [lane * 16 + base + k + 32 * s for lane in range(2) for k in range(8)
                                   for s in range(2)])


def _block_codegen(streams: int):  # noqa: ANN202
    """The codegen of :func:`lut16_block` (``streams`` = 1) and :func:`lut16_block2` (2)."""

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        if not HAS_AVX2:
            return context.get_dummy_value()
        tab_, w_, w_off_, npairs_, out_, o_off_ = args
        v8, v16, v32 = vec(I8, 32), vec(I16, 16), vec(I32, 8)
        tabs = data_ptr(context, builder, signature.args[0], tab_, vec(I8, 16))

        def table(k):  # noqa: ANN001, ANN202 - 16-byte table k in both 128-bit lanes (vbroadcasti128)
            v = builder.load(builder.gep(tabs, [k]), align=16)
            return shuffle(builder, v, v, list(range(16)) * 2)

        wbase = context.make_array(signature.args[1])(context, builder, w_).data
        first = builder.bitcast(builder.gep(wbase, [w_off_]), v8.as_pointer())
        rows = [first] + [builder.gep(first, [npairs_])] * (streams - 1)  # stream s: npairs rows on
        odata = context.make_array(signature.args[4])(context, builder, out_).data
        low4, w116 = splat(I8, 32, 15), ir.Constant(v8, [1, 16] * 16)
        zero8, zero16, zero32 = splat(I8, 32, 0), splat(I16, 16, 0), splat(I32, 8, 0)
        chunks = Loop(builder, c64(0), npairs_, c64(2 * LUT16_FLUSH), [zero32] * (4 * streams), "chunk")
        stop = builder.add(chunks.i, c64(2 * LUT16_FLUSH))
        stop = builder.select(builder.icmp_signed("<", stop, npairs_), stop, npairs_)
        steps = Loop(builder, chunks.i, stop, c64(2), [zero16] * (2 * streams), "step")
        sums = [[zero8, zero8] for _ in range(streams)]  # per stream: the L and the H look-ups
        for k in range(2):
            t = builder.add(steps.i, c64(k))
            idx = []
            for s in range(streams):
                v = builder.load(builder.gep(rows[s], [t]), align=32)
                idx.append((builder.and_(v, low4),
                            builder.and_(builder.bitcast(builder.lshr(builder.bitcast(v, v16), splat(I16, 16, 4)), v8),
                                         low4)))
            for g in range(2):  # group 2 t + g: its L and H are 16-byte tables 2 (2 t + g) and the next
                row = builder.add(builder.mul(t, c64(4)), c64(2 * g))
                tl, th = table(row), table(builder.add(row, c64(1)))  # loaded once for every stream
                for s in range(streams):
                    sums[s][0] = builder.add(sums[s][0], x86(builder, "avx2.pshuf.b", v8, [tl, idx[s][g]]))
                    sums[s][1] = builder.add(sums[s][1], x86(builder, "avx2.pshuf.b", v8, [th, idx[s][g]]))
        new = []
        for s, (low_sum, high_sum) in enumerate(sums):
            lo = x86(builder, "avx2.pmadd.ub.sw", v16, [_unpack_bytes(builder, low_sum, high_sum, False), w116])
            hi = x86(builder, "avx2.pmadd.ub.sw", v16, [_unpack_bytes(builder, low_sum, high_sum, True), w116])
            new += [builder.add(steps.vals[2 * s], lo), builder.add(steps.vals[2 * s + 1], hi)]
        steps.close(new)
        wide = []
        for s in range(streams):
            acc_lo, acc_hi = steps.out[2 * s], steps.out[2 * s + 1]  # outputs [0..7, 16..23] and [8..15, 24..31]
            for k, (src, half) in enumerate([(acc_lo, 0), (acc_hi, 0), (acc_lo, 1), (acc_hi, 1)]):
                part = shuffle(builder, src, src, range(8 * half, 8 * half + 8))
                wide.append(builder.add(chunks.vals[4 * s + k], builder.zext(part, v32)))
        chunks.close(wide)
        for k, v in enumerate(chunks.out):  # natural order: 0-7, 8-15, 16-23, 24-31, then the next stream's
            ptr = builder.gep(odata, [builder.add(o_off_, c64(8 * k))])
            builder.store(v, builder.bitcast(ptr, v32.as_pointer()), align=4)
        return context.get_dummy_value()

    return codegen


@intrinsic
def lut16_block(typingctx, tab, w, w_off, npairs, out, o_off):  # noqa: ANN001, ANN201
    """``out[o_off + r] = sum_g T_g[m_{r,g}]`` (int32) for the 32 outputs r of one block.

    ``w`` from byte ``w_off``: ``npairs`` (even) rows of 32 bytes, byte r of row t holding the
    4-bit weight patterns of output r for groups ``2 t`` (low nibble) and ``2 t + 1`` (high);
    ``T_g = 16 H_g + L_g`` from :func:`lut16_tables4`. Per step of two rows (4 groups): 8
    ``vpshufb``, byte sums (<= 4 x 60), ``16 H + L`` by ``vpmaddubsw`` into uint16 lanes
    (<= :data:`LUT16_FLUSH` x 4080 < 2^16), widened to int32 every :data:`LUT16_FLUSH` steps.
    """
    return types.void(tab, w, w_off, npairs, out, o_off), _block_codegen(1)


@intrinsic
def lut16_block2(typingctx, tab, w, w_off, npairs, out, o_off):  # noqa: ANN001, ANN201
    """:func:`lut16_block` of two blocks at once: the one at ``w_off`` into ``out[o_off:]`` and
    the next (its rows following, from byte ``w_off + 32 npairs``) into ``out[o_off + 32:]``;
    each table is loaded once for both (8-14% faster than two calls at 1536 x 640 here). The
    same sums, exactly: integer adds in the same lanes."""
    return types.void(tab, w, w_off, npairs, out, o_off), _block_codegen(2)
