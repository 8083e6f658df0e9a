"""The binary layer's XNOR-popcount dots on AVX2, 16 outputs at a time (LLVM IR).

:func:`xnor_block16` counts, for 16 consecutive outputs, the bits where the activation words
and the outputs' weight words differ, over every word: four 256-bit vectors (16 weight words,
one per output) per input word, each XOR-ed with the input word, their bytes counted by two
``vpshufb`` nibble look-ups into byte counters that stay in registers, and turned into one
64-bit count per output (``vpsadbw``) only every :data:`CHUNK` words. The scalar loop it
replaces (``popcnt`` per output and word, and the running count loaded and stored each time)
spends about twice the instructions per word.

Every count is exact: a byte counter grows by at most 8 per word, so :data:`CHUNK` = 31 words
keep it at most 248 < 256 before it is widened.
"""

from __future__ import annotations

from llvmlite import ir
from numba import types
from numba.extending import intrinsic

from qmoe.native.kernels.simd import I8, I16, I64, Loop, c64, splat, vec, x86
from qmoe.native.target import HAS_AVX2

#: Words counted in byte counters before they are widened (8 bits a word: 31 x 8 = 248 < 256).
CHUNK = 31
#: Outputs per block: four vectors of four 64-bit words.
BLOCK = 16
_NIBBLE_BITS = [bin(i).count("1") for i in range(16)] * 2  # vpshufb looks up within each 128-bit half


@intrinsic
def xnor_block16(typingctx, xw, nw, w, w_off, n, j, acc):  # noqa: ANN001, ANN201
    """``acc[j + t] = sum_k popcount(xw[k] ^ W[k, j + t])`` for ``t < 16``: ``xw`` uint64 (nw
    words), ``W`` the uint64 weights word-major ``(nw, n)`` at byte ``w_off`` of the uint8 ``w``,
    ``acc`` int64. Compiles to nothing where the target has no AVX2 (never called there)."""
    sig = types.void(xw, nw, w, w_off, n, j, acc)

    def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
        if not HAS_AVX2:
            return context.get_dummy_value()
        xw_, nw_, w_, w_off_, n_, j_, acc_ = args
        v8, v64 = vec(I8, 32), vec(I64, 4)
        xdata = context.make_array(signature.args[0])(context, builder, xw_).data
        wbase = context.make_array(signature.args[2])(context, builder, w_).data
        adata = context.make_array(signature.args[6])(context, builder, acc_).data
        # the block's first word: byte w_off + 8 j, then 8 n bytes a word
        wptr = builder.bitcast(builder.gep(wbase, [builder.add(w_off_, builder.mul(j_, c64(8)))]), v8.as_pointer())
        row = builder.mul(n_, c64(8))  # bytes from one word to the next
        lut = ir.Constant(v8, _NIBBLE_BITS)
        low4, zero8, zero64 = splat(I8, 32, 15), splat(I8, 32, 0), splat(I64, 4, 0)

        def counts(k):  # noqa: ANN001, ANN202 - the 4 vectors' byte counts of word k
            x = builder.insert_element(ir.Constant(v64, None), builder.load(builder.gep(xdata, [k])), c64(0))
            x = builder.bitcast(builder.shuffle_vector(x, x, ir.Constant(vec(ir.IntType(32), 4), [0] * 4)), v8)
            base = builder.gep(builder.bitcast(wptr, I8.as_pointer()), [builder.mul(k, row)])
            out = []
            for b in range(4):
                v = builder.load(builder.bitcast(builder.gep(base, [c64(32 * b)]), v8.as_pointer()), align=1)
                t = builder.xor(v, x)
                lo = builder.and_(t, low4)
                hi = builder.and_(builder.bitcast(builder.lshr(builder.bitcast(t, vec(I16, 16)), splat(I16, 16, 4)),
                                                  v8), low4)
                out.append(builder.add(x86(builder, "avx2.pshuf.b", v8, [lut, lo]),
                                       x86(builder, "avx2.pshuf.b", v8, [lut, hi])))
            return out

        chunks = Loop(builder, c64(0), nw_, c64(CHUNK), [zero64] * 4, "xchunk")
        stop = builder.add(chunks.i, c64(CHUNK))
        stop = builder.select(builder.icmp_signed("<", stop, nw_), stop, nw_)
        words = Loop(builder, chunks.i, stop, c64(1), [zero8] * 4, "xword")
        words.close([builder.add(a, c) for a, c in zip(words.vals, counts(words.i))])
        chunks.close([builder.add(t, x86(builder, "avx2.psad.bw", v64, [a, zero8]))
                      for t, a in zip(chunks.vals, words.out)])
        out = builder.bitcast(builder.gep(adata, [j_]), v64.as_pointer())
        for b in range(4):
            builder.store(chunks.out[b], builder.gep(out, [c64(b)]), align=8)
        return context.get_dummy_value()

    return sig, codegen
