"""AVX-512 VNNI dots: one block of 64 outputs for one or several rows, int8 weights by
``vpdpbusd`` and int16 weights (q16) by ``vpdpwssd``.

``vpdpbusd`` multiplies 64 unsigned bytes by 64 signed bytes and adds each group of 4 products
to an int32 lane, in one instruction (the AVX2 path needs ``vpsignb``, ``vpmaddubsw`` and
``vpmaddwd`` for 32 products). The activations enter as ``x + 128`` (unsigned, 1..255), each
group of 4 broadcast to every lane; a lane holds one output, so no horizontal sums. Several
rows share each weight load: at batch sizes the weights are read once per :data:`ROWS` rows
instead of once per row. ``vpdpwssd`` multiplies 32 pairs of int16 and adds each pair's two
products to an int32 lane; the q16 kernel sums :data:`Q16_PAIRS` pairs in int32 lanes, then
widens them to int64 (exact, as :func:`~.dots.dots_q16`). Bit-plane weights (q1, q2, bitnet)
enter as their bits and become int8 in registers (:func:`_planes_block`). Behind
:data:`~qmoe.native.target.HAS_VNNI` like :mod:`.simd`'s intrinsics: without it the intrinsic
compiles to nothing and its layout is never built. The q16 one alone also has an AVX2 body
(``vpmaddwd``, the same pair sums; :func:`_q16_avx2`), so its layout serves AVX2 CPUs too.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import I16, I32, I64, Loop, c64, data_ptr, vec, x86
from qmoe.native.target import HAS_AVX2, HAS_VNNI

#: Rows the batch kernel runs per pass over a layer's weights (4 rows x 4 registers of outputs
#: = 16 accumulators, of AVX-512's 32 registers).
ROWS = 4
#: Rows the batch path runs through a chain at once (:mod:`.rows`), :data:`ROWS` at a time
#: per block of outputs: a block's weights come from memory once per group and from the L2
#: cache for the group's other rows. A model whose weights fit in L2 beside the row buffers
#: (at most :data:`GROUP_WEIGHTS` bytes) keeps them there from group to group and runs groups
#: of :data:`GROUP`; a larger one streams them from L3 once per group and runs groups of
#: :data:`GROUP_MAX` (:func:`~.rows.group_size`).
GROUP = 16
#: Rows of a group when the model's weights exceed :data:`GROUP_WEIGHTS`: a quarter of the
#: passes over them from L3 (32, 128 and 256 rows were no better). The row buffers are sized
#: for it (~1.8 MB of scratch at width 1600, allocated once per model).
GROUP_MAX = 64
#: Weight bytes above which a model runs groups of :data:`GROUP_MAX`. Measured on a 2 MiB L2,
#: batch 256, MLPs 1536-N-320-50 of int8, q16 or fp32 weights: 1.2-1.5 MB of weights gained
#: nothing or lost up to 10% with 64 rows, 1.7 MB and more gained 4-25%.
GROUP_WEIGHTS = 3 << 19  # 1.5 MiB
#: Outputs per block (:data:`qmoe.native.packing.VNNI_BLOCK`): 4 registers of 16 int32.
BLOCK = 64
#: Pairs of inputs the q16 kernel sums in int32 before widening to int64:
#: ``2 x 128 x 127 x 32768 < 2^31`` (activations within +-127, :mod:`.act`).
Q16_PAIRS = 128


def _dpbusd_rows(builder, dpbusd, words, xwords, k, accs, wv, rows):  # noqa: ANN001, ANN202, PLR0913
    """``vpdpbusd`` of the 4 weight registers ``wv`` of group ``k`` with each row's broadcast
    group of 4 activations (row r's int32 words at ``words[r xwords:]``): the new sums."""
    v32 = vec(I32, 16)
    new = []
    for r in range(rows):
        x = builder.load(builder.gep(words, [builder.add(builder.mul(xwords, c64(r)), k)]), align=4)
        xb = builder.insert_element(ir.Constant(v32, None), x, ir.Constant(I32, 0))
        xb = builder.shuffle_vector(xb, ir.Constant(v32, None), ir.Constant(v32, [0] * 16))
        new += [builder.call(dpbusd, [accs[4 * r + q], xb, wv[q]]) for q in range(4)]
    return new


def _store_rows(builder, sums, odata, o_off, ostride, rows, add=False):  # noqa: ANN001, ANN202, PLR0913
    """Row r's 4 registers of int32 ``sums`` to ``odata[r ostride + o_off:]`` (``add``: added
    to what is there)."""
    v32 = vec(I32, 16)
    for r in range(rows):
        for q in range(4):
            at = builder.add(builder.add(builder.mul(ostride, c64(r)), o_off), c64(16 * q))
            p = builder.bitcast(builder.gep(odata, [at]), v32.as_pointer())
            v = builder.add(builder.load(p, align=4), sums[4 * r + q]) if add else sums[4 * r + q]
            builder.store(v, p, align=4)


def _vnni_block(rows: int, add: bool = False):  # noqa: ANN202
    """The block intrinsic for ``rows`` rows (``add``: its sums added to ``out``'s values).

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
            groups.close(_dpbusd_rows(builder, dpbusd, words, xwords, k, accs, wv, rows))
            _store_rows(builder, groups.out, odata, o_off_, ostride_, rows, add)
            return context.get_dummy_value()

        return sig, codegen

    return dots


#: One row (batch 1, and the rows left over from the batch kernel).
vnni_block1 = _vnni_block(1)
#: :data:`ROWS` rows at once.
vnni_block_rows = _vnni_block(ROWS)
#: :data:`ROWS` rows at once, added to ``out`` (a block's groups chunk by chunk).
vnni_block_rows_add = _vnni_block(ROWS, add=True)


def _splat8(builder, v):  # noqa: ANN001, ANN202
    """The int64 ``v`` as 64 int8 lanes."""
    v8 = vec(ir.IntType(8), 64)
    b = builder.insert_element(ir.Constant(v8, None), builder.trunc(v, ir.IntType(8)), ir.Constant(I32, 0))
    return builder.shuffle_vector(b, ir.Constant(v8, None), ir.Constant(vec(I32, 64), [0] * 64))


def _plane_weights(builder, bits, k, n_planes, lo, hi, step):  # noqa: ANN001, ANN202, PLR0913
    """The 4 registers of int8 weights (as 16 int32) of group ``k`` from its planes' uint64
    words at ``bits[(k n_planes + p) 4 + q]``: ``hi`` or ``lo`` by plane 0, minus ``step`` by
    plane 1 (int8 splats)."""
    m64, v32 = vec(ir.IntType(1), 64), vec(I32, 16)
    base = builder.mul(k, c64(4 * n_planes))
    wv = []
    for q in range(4):
        b0 = builder.load(builder.gep(bits, [builder.add(base, c64(q))]), align=8)
        wq = builder.select(builder.bitcast(b0, m64), hi, lo)
        if n_planes == 2:
            b1 = builder.load(builder.gep(bits, [builder.add(base, c64(4 + q))]), align=8)
            wq = builder.sub(wq, builder.select(builder.bitcast(b1, m64), step, ir.Constant(wq.type, [0] * 64)))
        wv.append(builder.bitcast(wq, v32))
    return wv


def _planes_block(rows: int, n_planes: int):  # noqa: ANN202
    """The block intrinsic of bit-plane weights (:data:`~qmoe.native.layout.PLANES_VNNI`) for
    ``rows`` rows: :func:`_vnni_block`'s dots, each group's int8 weights made in registers
    from its bits (a quarter of the bytes to read for two planes).

    ``dots(xu, xstride, w, w_off, groups, lo, hi, step, out, o_off, ostride)``: the block at
    byte ``w_off`` of ``w`` holds per group k of 4 inputs and per plane p 4 uint64 (word
    ``(k n_planes + p) 4 + q``, 8-byte aligned), bit t of word q the plane's bit of output
    ``16 q + t // 4``, input ``4 k + t % 4``; each weight is ``hi`` where plane 0's bit is set,
    ``lo`` where not, minus ``step`` where plane 1's bit is set (int8; ternary 0, 1, 1; int2
    0, 1, 2; pm1 -1, 1 and no plane 1). The rest as :func:`_vnni_block`'s ``dots``.
    """

    @intrinsic
    def dots(typingctx, xu, xstride, w, w_off, groups, lo, hi, step, out, o_off, ostride):  # noqa: ANN001, ANN202
        sig = types.void(xu, xstride, w, w_off, groups, lo, hi, step, out, o_off, ostride)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            if not HAS_VNNI:
                return context.get_dummy_value()
            xu_, xstride_, w_, w_off_, groups_, lo_, hi_, step_, out_, o_off_, ostride_ = args
            v32 = vec(I32, 16)
            fnty = ir.FunctionType(v32, [v32, v32, v32])
            dpbusd = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpbusd.512", fnty=fnty)
            words = data_ptr(context, builder, signature.args[0], xu_, I32)
            lo, hi, step = (_splat8(builder, v) for v in (lo_, hi_, step_))
            wbase = context.make_array(signature.args[2])(context, builder, w_).data
            bits = builder.bitcast(builder.gep(wbase, [w_off_]), I64.as_pointer())
            odata = context.make_array(signature.args[8])(context, builder, out_).data
            xwords = builder.sdiv(xstride_, c64(4))
            groups = Loop(builder, c64(0), groups_, c64(1), [ir.Constant(v32, [0] * 16)] * (4 * rows), "group")
            k, accs = groups.i, groups.vals
            wv = _plane_weights(builder, bits, k, n_planes, lo, hi, step)
            groups.close(_dpbusd_rows(builder, dpbusd, words, xwords, k, accs, wv, rows))
            _store_rows(builder, groups.out, odata, o_off_, ostride_, rows)
            return context.get_dummy_value()

        return sig, codegen

    return dots


def _planes_expand(n_planes: int):  # noqa: ANN202
    """``expand(w, w_off, k0, k1, lo, hi, step, buf)``: the int8 weights of groups
    ``k0 <= k < k1`` of the bit-plane block at byte ``w_off`` of ``w`` (as :func:`_planes_block`
    makes them) into the 64-byte aligned ``buf``, in :func:`_vnni_block`'s layout (group
    ``k - k0`` at byte ``256 (k - k0)``): made once, then read by several groups of rows."""

    @intrinsic
    def expand(typingctx, w, w_off, k0, k1, lo, hi, step, buf):  # noqa: ANN001, ANN202
        sig = types.void(w, w_off, k0, k1, lo, hi, step, buf)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            if not HAS_VNNI:
                return context.get_dummy_value()
            w_, w_off_, k0_, k1_, lo_, hi_, step_, buf_ = args
            v32 = vec(I32, 16)
            lo, hi, step = (_splat8(builder, v) for v in (lo_, hi_, step_))
            wbase = context.make_array(signature.args[0])(context, builder, w_).data
            bits = builder.bitcast(builder.gep(wbase, [w_off_]), I64.as_pointer())
            out = data_ptr(context, builder, signature.args[7], buf_, v32)
            loop = Loop(builder, k0_, k1_, c64(1), [], "group")
            wv = _plane_weights(builder, bits, loop.i, n_planes, lo, hi, step)
            at = builder.mul(builder.sub(loop.i, k0_), c64(4))
            for q in range(4):
                builder.store(wv[q], builder.gep(out, [builder.add(at, c64(q))]), align=64)
            loop.close([])
            return context.get_dummy_value()

        return sig, codegen

    return expand


#: Bit-plane weights made into int8 for several groups of rows: one plane, two planes.
planes1_expand = _planes_expand(1)
planes2_expand = _planes_expand(2)
#: Bit-plane weights, :data:`ROWS` rows at once: one plane (pm1), two planes (ternary, int2).
planes1_block_rows = _planes_block(ROWS, 1)
planes2_block_rows = _planes_block(ROWS, 2)


def _q16_block(rows: int):  # noqa: ANN202
    """The q16 block intrinsic for ``rows`` rows.

    ``dots(xw, xstride, w, w_off, k0, k1, out, o_off, ostride)``: for the 64 outputs j of the
    block at byte ``w_off`` of ``w`` (rows of (64 outputs, 2 inputs) int16, 64-byte aligned),
    its pairs ``k0 <= k < k1`` (at most :data:`Q16_PAIRS`, at least one) and each row
    r < ``rows`` of int32 words ``xw[r xstride:]`` (word k: the int16 activations ``2k`` (low
    half) and ``2k + 1``): ``out[r ostride + o_off + j] += sum_k x_2k w_j,2k + x_2k+1 w_j,2k+1``,
    summed in int32 (exact: ``2 x 128 x 127 x 32768 < 2^31``), added to the int64 ``out``.

    With AVX-512 VNNI, ``vpdpwssd`` on 4 registers of 16 outputs, the rows at once; with AVX2
    only (:func:`_q16_avx2`), ``vpmaddwd`` and ``vpaddd`` on 8 registers of 8 outputs, a row at a
    time (4 rows would need 32 accumulators): the same int32 pair sums, added in the same order.
    """

    @intrinsic
    def dots(typingctx, xw, xstride, w, w_off, k0, k1, out, o_off, ostride):  # noqa: ANN001, ANN202
        sig = types.void(xw, xstride, w, w_off, k0, k1, out, o_off, ostride)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            if not (HAS_VNNI or HAS_AVX2):
                return context.get_dummy_value()
            xw_, xstride_, w_, w_off_, k0_, k1_, out_, o_off_, ostride_ = args
            words = data_ptr(context, builder, signature.args[0], xw_, I32)
            wbase = context.make_array(signature.args[2])(context, builder, w_).data
            odata = context.make_array(signature.args[6])(context, builder, out_).data
            if not HAS_VNNI:
                _q16_avx2(builder, words, xstride_, builder.gep(wbase, [w_off_]), k0_, k1_, odata, o_off_, ostride_,
                          rows)
                return context.get_dummy_value()
            v32, v64 = vec(I32, 16), vec(I64, 16)
            fnty = ir.FunctionType(v32, [v32, v32, v32])
            dpwssd = builder.module.declare_intrinsic("llvm.x86.avx512.vpdpwssd.512", fnty=fnty)
            wrows = builder.bitcast(builder.gep(wbase, [w_off_]), v32.as_pointer())
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


def _q16_avx2(builder, words, xstride, wptr, k0, k1, odata, o_off, ostride, rows):  # noqa: ANN001, ANN202, PLR0913
    """The AVX2 body of the q16 block intrinsic (:func:`_q16_block`), row after row: register
    q holds outputs ``8q .. 8q + 7``, the bytes ``32q ..`` of each pair's 256 (the layout's
    16-output lanes split in halves); ``vpmaddwd`` gives each lane's pair sum in int32."""
    v8, v16, v64 = vec(I32, 8), vec(I16, 16), vec(I64, 8)
    wrows = builder.bitcast(wptr, v8.as_pointer())
    for r in range(rows):
        steps = Loop(builder, k0, k1, c64(1), [ir.Constant(v8, [0] * 8)] * 8, f"pair{r}")
        k, accs = steps.i, steps.vals
        x = builder.load(builder.gep(words, [builder.add(builder.mul(xstride, c64(r)), k)]), align=4)
        xb = builder.insert_element(ir.Constant(v8, None), x, ir.Constant(I32, 0))
        xb = builder.bitcast(builder.shuffle_vector(xb, ir.Constant(v8, None), ir.Constant(v8, [0] * 8)), v16)
        new = []
        for q in range(8):
            wv = builder.load(builder.gep(wrows, [builder.add(builder.mul(k, c64(8)), c64(q))]), align=32)
            new.append(builder.add(accs[q], x86(builder, "avx2.pmadd.wd", v8, [xb, builder.bitcast(wv, v16)])))
        steps.close(new)
        for q in range(8):
            at = builder.add(builder.add(builder.mul(ostride, c64(r)), o_off), c64(8 * q))
            p = builder.bitcast(builder.gep(odata, [at]), v64.as_pointer())
            builder.store(builder.add(builder.load(p, align=8), builder.sext(steps.out[q], v64)), p, align=8)


#: q16, one row.
q16_block1 = _q16_block(1)
#: q16, :data:`ROWS` rows at once.
q16_block_rows = _q16_block(ROWS)
