"""LLVM intrinsics of the kernels: the operations numba has no word for, written as LLVM IR.

Generic operations (any CPU): :func:`popcount64`, :func:`bit_mask64`, :func:`gt_mask64`,
:func:`abs_max`, :func:`abs_sum16`, :func:`f32_pointer`, :func:`fma32`. x86 instructions, each behind the flag of
:mod:`qmoe.native.target` that says the target has it; without it the intrinsic compiles to
nothing, and no layout that would reach it is ever built (:mod:`qmoe.native.packing`):

- AVX2 (:func:`int8_rows4`, :func:`int4_rows4`): ``vpmaddubsw`` int8 dots; ``vpshufb`` table
  look-ups of 4-input subset sums, in :mod:`.lut16`;
- AVX-512 BW: ``vpermw`` look-ups of 5-input subset sums, in :mod:`.lut32`.

Every sum is exact: the comments give the largest value each integer lane can hold.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.target import HAS_AVX2

I8, I16, I32, I64 = ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)


def vec(ty: ir.Type, n: int) -> ir.VectorType:
    return ir.VectorType(ty, n)


def splat(ty: ir.Type, n: int, value: int) -> ir.Constant:
    return ir.Constant(vec(ty, n), [value] * n)


def c64(v: int) -> ir.Constant:
    return ir.Constant(I64, v)


def data_ptr(context, builder, arrtype, arr, vty):  # noqa: ANN001, ANN201
    """The data pointer of a numba array, as a pointer to ``vty``."""
    return builder.bitcast(context.make_array(arrtype)(context, builder, arr).data, vty.as_pointer())


def x86(builder, name, ret, args):  # noqa: ANN001, ANN201
    """Call the x86 intrinsic ``llvm.x86.<name>`` returning ``ret``."""
    fnty = ir.FunctionType(ret, [a.type for a in args])
    return builder.call(builder.module.declare_intrinsic("llvm.x86." + name, fnty=fnty), args)


def shuffle(builder, a, b, mask):  # noqa: ANN001, ANN201
    return builder.shuffle_vector(a, b, ir.Constant(vec(I32, len(mask)), list(mask)))


class Loop:
    """A counted loop in IR: ``for i in range(start, stop, step)`` carrying ``values``.

    ``loop = Loop(builder, start, stop, step, init)``; ``loop.i`` and ``loop.vals`` inside;
    ``loop.close(new_vals)`` ends it, after which ``loop.out`` holds the final values.
    The body runs at least once (callers guarantee ``start < stop``).
    """

    def __init__(self, builder, start, stop, step, init, name="loop"):  # noqa: ANN001
        self.builder, self.stop, self.step = builder, stop, step
        self.pre = builder.basic_block
        self.body = builder.append_basic_block(name)
        self.after = builder.append_basic_block(name + ".end")
        builder.branch(self.body)
        builder.position_at_end(self.body)
        self.i = builder.phi(start.type)
        self.i.add_incoming(start, self.pre)
        self.vals = []
        for v in init:
            ph = builder.phi(v.type)
            ph.add_incoming(v, self.pre)
            self.vals.append(ph)

    def close(self, new_vals):  # noqa: ANN001, ANN201
        b = self.builder
        nxt = b.add(self.i, self.step)
        self.i.add_incoming(nxt, b.basic_block)
        for ph, v in zip(self.vals, new_vals):
            ph.add_incoming(v, b.basic_block)
        b.cbranch(b.icmp_signed("<", nxt, self.stop), self.body, self.after)
        b.position_at_end(self.after)
        self.out = list(new_vals)


# -- generic ------------------------------------------------------------------------------
@intrinsic
def popcount64(typingctx, v):  # noqa: ANN001, ANN201 - numba intrinsic signature
    """Number of set bits of a uint64 (``llvm.ctpop``)."""
    sig = types.uint64(types.uint64)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.call(builder.module.declare_intrinsic("llvm.ctpop", [I64]), args)

    return sig, codegen


@intrinsic
def bit_mask64(typingctx, arr, start, shift):  # noqa: ANN001, ANN201
    """Bit ``7 - shift`` of each of the 64 int8 ``arr[start:start+64]``, packed in a uint64.

    Shifting each byte left by ``shift`` brings the wanted bit to the sign; the 64 signs are
    one ``<64 x i1>`` mask bitcast to i64. Bit ``i`` is element ``start + i``.
    """
    sig = types.uint64(arr, start, shift)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        vty = vec(I8, 64)
        base = context.make_array(signature.args[0])(context, builder, args[0]).data
        v = builder.load(builder.bitcast(builder.gep(base, [args[1]]), vty.as_pointer()), align=1)
        sh = builder.insert_element(ir.Constant(vty, None), builder.trunc(args[2], I8), ir.Constant(I32, 0))
        sh = shuffle(builder, sh, ir.Constant(vty, None), [0] * 64)
        neg = builder.icmp_signed("<", builder.shl(v, sh), splat(I8, 64, 0))
        return builder.bitcast(neg, I64)

    return sig, codegen


@intrinsic
def gt_mask64(typingctx, arr, start, tau):  # noqa: ANN001, ANN201
    """``arr[start:start+64] > tau`` (float32, ordered compare) packed in a uint64."""
    sig = types.uint64(arr, start, tau)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        vty = vec(ir.FloatType(), 64)
        base = context.make_array(signature.args[0])(context, builder, args[0]).data
        v = builder.load(builder.bitcast(builder.gep(base, [args[1]]), vty.as_pointer()), align=4)
        t = builder.insert_element(ir.Constant(vty, None), args[2], ir.Constant(I32, 0))
        t = shuffle(builder, t, ir.Constant(vty, None), [0] * 64)
        return builder.bitcast(builder.fcmp_ordered(">", v, t), I64)

    return sig, codegen


@intrinsic
def abs_max(typingctx, arr, top):  # noqa: ANN001, ANN201
    """``max(0, max|arr[:top]|)`` of float32 (``top`` a multiple of 64): ``fabs``, four running
    ``maxnum`` vectors, one horizontal ``fmax`` at the end (NaN ignored, as ``maxnum`` does;
    exact in any order)."""
    sig = types.float32(arr, top)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        vty = vec(ir.FloatType(), 16)
        mod = builder.module
        fabs = mod.declare_intrinsic("llvm.fabs.v16f32", fnty=ir.FunctionType(vty, [vty]))
        vmax = mod.declare_intrinsic("llvm.maxnum.v16f32", fnty=ir.FunctionType(vty, [vty, vty]))
        hmax = mod.declare_intrinsic("llvm.vector.reduce.fmax.v16f32",
                                     fnty=ir.FunctionType(ir.FloatType(), [vty]))
        ptr = data_ptr(context, builder, signature.args[0], args[0], vty)
        zero = ir.Constant(vty, [0.0] * 16)
        pre = builder.basic_block
        body, done = builder.append_basic_block("absmax"), builder.append_basic_block("absmax.end")
        builder.cbranch(builder.icmp_signed(">", args[1], c64(0)), body, done)
        builder.position_at_end(body)
        i = builder.phi(I64)  # in vectors of 16
        i.add_incoming(c64(0), pre)
        accs = [builder.phi(vty) for _ in range(4)]
        new = []
        for k, ph in enumerate(accs):
            ph.add_incoming(zero, pre)
            x = builder.load(builder.gep(ptr, [builder.add(i, c64(k))]), align=4)
            new.append(builder.call(vmax, [ph, builder.call(fabs, [x])]))
            ph.add_incoming(new[k], body)
        nxt = builder.add(i, c64(4))
        i.add_incoming(nxt, body)
        m = builder.call(vmax, [builder.call(vmax, [new[0], new[1]]), builder.call(vmax, [new[2], new[3]])])
        builder.cbranch(builder.icmp_signed("<", builder.mul(nxt, c64(16)), args[1]), body, done)
        builder.position_at_end(done)
        total = builder.phi(vty)
        total.add_incoming(zero, pre)
        total.add_incoming(m, body)
        return builder.call(hmax, [total])

    return sig, codegen


@intrinsic
def abs_sum16(typingctx, arr, top):  # noqa: ANN001, ANN201
    """``sum|arr[:top]|`` (``top`` a multiple of 16) in a fixed order: 16 lanes, lane l adding
    elements l, l + 16, ... in turn, then the lanes added in lane order (float32)."""
    sig = types.float32(arr, top)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        f32 = ir.FloatType()
        vty = vec(f32, 16)
        fabs = builder.module.declare_intrinsic("llvm.fabs.v16f32", fnty=ir.FunctionType(vty, [vty]))
        ptr = data_ptr(context, builder, signature.args[0], args[0], vty)
        zero = ir.Constant(vty, [0.0] * 16)
        nvec = builder.sdiv(args[1], c64(16))
        pre = builder.basic_block  # the lanes: one vector add per 16 elements
        body, done = builder.append_basic_block("abs16"), builder.append_basic_block("abs16.end")
        builder.cbranch(builder.icmp_signed(">", nvec, c64(0)), body, done)
        builder.position_at_end(body)
        i, acc = builder.phi(I64), builder.phi(vty)
        i.add_incoming(c64(0), pre)
        acc.add_incoming(zero, pre)
        new = builder.fadd(acc, builder.call(fabs, [builder.load(builder.gep(ptr, [i]), align=4)]))
        nxt = builder.add(i, c64(1))
        i.add_incoming(nxt, body)
        acc.add_incoming(new, body)
        builder.cbranch(builder.icmp_signed("<", nxt, nvec), body, done)
        builder.position_at_end(done)
        total = builder.phi(vty)
        total.add_incoming(zero, pre)
        total.add_incoming(new, body)
        s = ir.Constant(f32, 0.0)
        for lane in range(16):
            s = builder.fadd(s, builder.extract_element(total, ir.Constant(I32, lane)))
        return s

    return sig, codegen


@intrinsic
def f32_pointer(typingctx, addr):  # noqa: ANN001, ANN201
    """The integer address ``addr`` as a float32 pointer (``inttoptr``), for ``carray``."""
    sig = types.CPointer(types.float32)(addr)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

    return sig, codegen


@intrinsic
def fma32(typingctx, a, b, c):  # noqa: ANN001, ANN201
    """``a b + c`` of float32 values rounded once (``llvm.fma``: an FMA instruction where the
    target has one, else the C library's ``fmaf``; the same value either way)."""
    sig = types.float32(types.float32, types.float32, types.float32)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        f32 = ir.FloatType()
        fn = builder.module.globals.get("llvm.fma.f32") or ir.Function(
            builder.module, ir.FunctionType(f32, [f32] * 3), "llvm.fma.f32")
        return builder.call(fn, list(args))

    return sig, codegen


# -- AVX2: int8 dots (vpmaddubsw) -----------------------------------------------------------
def _hsum_store(builder, acc, odata, at):  # noqa: ANN001, ANN202
    """Store the sum of the 8 int32 lanes of ``acc`` at ``odata[at]``."""
    s = builder.add(shuffle(builder, acc, acc, range(4)), shuffle(builder, acc, acc, range(4, 8)))
    s = builder.add(shuffle(builder, s, s, [0, 1]), shuffle(builder, s, s, [2, 3]))
    s = builder.add(builder.extract_element(s, ir.Constant(I32, 0)), builder.extract_element(s, ir.Constant(I32, 1)))
    builder.store(s, builder.gep(odata, [at]))


def _int_rows4(nibbles: bool):  # noqa: ANN202
    """The 4-row int8 dot intrinsic: ``int8_rows4`` (bytes) or ``int4_rows4`` (nibbles)."""

    @intrinsic
    def rows4(typingctx, xs, xa, w, w_off, stride, nchunks, flush, out, o_off):  # noqa: ANN001, ANN202
        sig = types.void(xs, xa, w, w_off, stride, nchunks, flush, out, o_off)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            if not HAS_AVX2:
                return context.get_dummy_value()
            xs_, xa_, w_, w_off_, stride_, nchunks_, flush_, out_, o_off_ = args
            v8, v16, v32 = vec(I8, 32), vec(I16, 16), vec(I32, 8)
            xsp = data_ptr(context, builder, signature.args[0], xs_, v8)
            xap = data_ptr(context, builder, signature.args[1], xa_, v8)
            wbase = context.make_array(signature.args[2])(context, builder, w_).data
            odata = context.make_array(signature.args[7])(context, builder, out_).data
            ones, zero16, zero32 = splat(I16, 16, 1), splat(I16, 16, 0), splat(I32, 8, 0)
            rows = [builder.bitcast(builder.gep(wbase, [builder.add(w_off_, builder.mul(stride_, c64(r)))]),
                                    v8.as_pointer()) for r in range(4)]

            def products(k):  # noqa: ANN001, ANN202 - the 4 rows' int16 pair sums of chunk k
                out = []
                if nibbles:  # chunk k: 64 inputs; byte b holds w[64k + b] (low), w[64k + 32 + b]
                    x0 = builder.load(builder.gep(xsp, [builder.mul(k, c64(2))]), align=32)
                    x1 = builder.load(builder.gep(xsp, [builder.add(builder.mul(k, c64(2)), c64(1))]), align=32)
                    for r in range(4):
                        v = builder.load(builder.gep(rows[r], [k]), align=32)
                        lo = builder.and_(v, splat(I8, 32, 15))
                        hi = builder.and_(builder.bitcast(builder.lshr(builder.bitcast(v, v16), splat(I16, 16, 4)),
                                                          v8), splat(I8, 32, 15))
                        # (w + 8) in 0..15 times x in -127..127: pairs <= 3810, a chunk adds <= 7620
                        out.append(builder.add(x86(builder, "avx2.pmadd.ub.sw", v16, [lo, x0]),
                                               x86(builder, "avx2.pmadd.ub.sw", v16, [hi, x1])))
                else:  # chunk k: 32 inputs; |x| (0..127) times w sign(x) (|w| <= 127): pairs <= 32258
                    xs_k = builder.load(builder.gep(xsp, [k]), align=32)
                    xa_k = builder.load(builder.gep(xap, [k]), align=32)
                    for r in range(4):
                        v = builder.load(builder.gep(rows[r], [k]), align=32)
                        signed = x86(builder, "avx2.psign.b", v8, [v, xs_k])
                        out.append(x86(builder, "avx2.pmadd.ub.sw", v16, [xa_k, signed]))
                return out

            def widen(p):  # noqa: ANN001, ANN202 - int16 pairs summed into int32
                return x86(builder, "avx2.pmadd.wd", v32, [p, ones])

            one_by_one, grouped = builder.append_basic_block("each"), builder.append_basic_block("grouped")
            join = builder.append_basic_block("join")
            builder.cbranch(builder.icmp_signed("==", flush_, c64(1)), one_by_one, grouped)
            builder.position_at_end(one_by_one)  # every chunk widened (q8, ptq8)
            each = Loop(builder, c64(0), nchunks_, c64(1), [zero32] * 4, "chunk1")
            each.close([builder.add(a, widen(p)) for a, p in zip(each.vals, products(each.i))])
            end_each = builder.basic_block
            builder.branch(join)
            builder.position_at_end(grouped)  # ``flush`` chunks summed in int16 first
            groups = Loop(builder, c64(0), nchunks_, flush_, [zero32] * 4, "group")
            stop = builder.add(groups.i, flush_)
            stop = builder.select(builder.icmp_signed("<", stop, nchunks_), stop, nchunks_)
            chunk = Loop(builder, groups.i, stop, c64(1), [zero16] * 4, "chunk")
            chunk.close([builder.add(a, p) for a, p in zip(chunk.vals, products(chunk.i))])
            groups.close([builder.add(a, widen(p)) for a, p in zip(groups.vals, chunk.out)])
            end_grouped = builder.basic_block
            builder.branch(join)
            builder.position_at_end(join)
            sums = []
            for r in range(4):
                ph = builder.phi(v32)
                ph.add_incoming(each.out[r], end_each)
                ph.add_incoming(groups.out[r], end_grouped)
                sums.append(ph)
            for r in range(4):
                _hsum_store(builder, sums[r], odata, builder.add(o_off_, c64(r)))
            return context.get_dummy_value()

        return sig, codegen

    return rows4


#: ``int8_rows4(xs, xa, w, w_off, stride, nchunks, flush, out, o_off)``: int32 dots of 4 rows of
#: int8 weights (from byte ``w_off``, ``stride`` bytes apart, ``32 nchunks`` each, no -128) with
#: the activations ``xs`` (int8) and ``xa = |xs|`` (uint8), int16 sums flushed every ``flush``
#: chunks, into ``out[o_off .. o_off + 3]``.
int8_rows4 = _int_rows4(False)
#: ``int4_rows4``: the same for weights stored as ``w + 8`` nibbles (q4, ``64 nchunks`` inputs),
#: giving ``sum (w + 8) x``.
int4_rows4 = _int_rows4(True)
