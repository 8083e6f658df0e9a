"""Numba kernels of the packed deployed forms: whole MLPs in one compiled call.

Three kernel families, each a driver that runs every layer of an MLP for every sample
(quantize the input, integer dot products, rescale, ReLU) without returning to Python:

- :func:`mlp_int8`: int8 weights x int8 activations, int32 accumulation (q4, q8, ptq8).
- :func:`mlp_bitserial`: weights as 1 or 2 packed bit-planes against 8-bit activations
  (q1, q2, bitnet), by table lookups where the CPU has AVX-512 BW (:func:`lut_acc`: the 32
  subset sums of each group of 5 activations, indexed by the weights' 5 bits, 32 outputs
  per ``vpermw``), else bit-serially (:func:`bitserial_acc`: the activations' 8 bit-planes,
  AND + popcount).
- :func:`mlp_xnor`: 1-bit weights and 1-bit inputs, ``dot = d - 2 popcount(x XOR w)`` (binary).

An MLP is described by three flat arrays (see :data:`REC`): ``meta`` (int64, one record of
:data:`REC` ints per layer), ``fp`` (float32: per layer ``rscale[N], bias[N], extra``) and
``w`` (the weights of every layer, int8 or uint64). One layer is an MLP of length one.
``mlp_*_at`` are the same drivers reading the input rows in place from an address.

Batch-1 latency is the point of these kernels (issue 8), so the loops are written to
vectorise and to have no data-dependent branches (a mispredicted branch per activation costs
more than its arithmetic): each is checked with ``inspect_asm`` and timed on fresh inputs.
Where numba has no word for an instruction (``ctpop``, ``vpermw``, a byte mask, a vector
``fmax``) a small ``@intrinsic`` emits the generic LLVM operation or, for ``vpermw``, the x86
one behind :data:`HAS_VPERMW`.

Activations are quantized exactly as :func:`qmoe.quant.primitives.absmax_quantize` does in
torch (``s = (1 / max|x|) * 127`` in float32 -- torch's ``127 / t`` is ``t.reciprocal() * 127``
-- then ``round`` half to even and clip), so the first layer's integers equal the QAT ones.
A layer's output is ``float32(acc) * (rscale_j / s) + bias_j`` (binary: ``float32(dot) *
(beta * alpha_j) + bias_j``), computed in float32 without fused multiply-add, so the numpy
reference in the tests reproduces it bit for bit.

Every function is compiled once per machine (``cache=True``: the machine code is kept on disk
next to this file, or in numba's user cache when that is read-only). The first use in a
process loads it from the cache (~0.1-0.3 s per driver); the very first use on a machine
compiles it (a few seconds per driver).

Importing this module imports numba; :func:`require_numba` turns its absence into a
:class:`~qmoe.errors.QmoeError` that says how to install it.

All kernels live in this one file on purpose: numba's on-disk cache is invalidated per source
file, so a driver cached with an inlined helper from *another* file would keep running the
old helper after that file changed.
"""

from __future__ import annotations

import numpy as np

from qmoe.errors import QmoeError

try:  # numba is a declared dependency; a clear error (not an ImportError) if it is missing
    import numba
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError as _err:  # pragma: no cover - exercised only without numba
    numba = None
    _IMPORT_ERROR: ImportError | None = _err
else:
    _IMPORT_ERROR = None


def target_cpu() -> tuple[str, frozenset[str]]:
    """The CPU numba compiles for and its enabled features, decided as numba decides them:
    ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` where set, else the host's. An empty
    ``NUMBA_CPU_FEATURES`` leaves the features to the CPU name, which LLVM knows and this
    function does not: none are reported then, so the kernels take their portable paths."""
    if numba is None:
        return "", frozenset()
    import llvmlite.binding as llvm
    from numba.core import config

    name = config.CPU_NAME or llvm.get_host_cpu_name()
    features = config.CPU_FEATURES
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return name, frozenset(f[1:] for f in features.split(",") if f.startswith("+"))


#: The table kernel (:func:`lut_acc`) runs where ``vpermw`` exists; elsewhere the bit-serial
#: layers keep the word-major planes of :func:`bitserial_acc`.
HAS_VPERMW = "avx512bw" in target_cpu()[1]

#: ints per layer record of ``meta``:
#: ``d_in, n_out, w_offset, f_offset, relu, p0, p1, p2, p3, p4`` (p* are family parameters:
#: bit-serial ``n_planes, shift0, shift1, offset, lut`` -- ``lut`` 1 for the table layout of
#: :func:`lut_acc`, 0 for the word-major planes of :func:`bitserial_acc`; the others leave them 0).
REC = 10
#: Outputs per block of the table kernel (one 512-bit vector of int16 sums).
LUT_BLOCK = 32
#: Inputs per table of the table kernel (32 subset sums: one ``vpermw`` table).
LUT_GROUP = 5
#: Steps (3 groups, 15 inputs) summed in int16 before widening: ``16 * 15 * 128 < 2^15``.
LUT_FLUSH = 16
#: Independent partial sums of the float mean (binary's beta), so it vectorises.
LANES = 16
#: Smallest ``max|x|`` the activation scale divides by (``primitives.EPS`` in float32).
EPS32 = np.float32(1e-8)


def require_numba() -> None:
    """Raise a :class:`QmoeError` saying how to install numba when it cannot be imported."""
    if numba is None:
        raise QmoeError(
            "the packed deployed forms (q1, q2, q4, q8, bitnet, ptq8, binary) need numba, which "
            f"could not be imported ({_IMPORT_ERROR}); install it with `pip install numba` "
            "(it is a dependency of qmoe: `pip install -e .` installs it)")


if numba is not None:

    # -- intrinsics: two generic LLVM operations numba does not expose --------------------
    @intrinsic
    def popcount64(typingctx, v):  # noqa: ANN001, ANN201 - numba intrinsic signature
        """Number of set bits of a uint64 (``llvm.ctpop``: one vpopcntq/popcnt)."""
        sig = types.uint64(types.uint64)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            fn = builder.module.declare_intrinsic("llvm.ctpop", [ir.IntType(64)])
            return builder.call(fn, args)

        return sig, codegen

    @intrinsic
    def bit_mask64(typingctx, arr, start, shift):  # noqa: ANN001, ANN201
        """Bit ``7 - shift`` of each of the 64 int8 ``arr[start:start+64]``, packed in a uint64.

        Shifting each byte left by ``shift`` brings the wanted bit to the sign; the 64 signs
        are one ``<64 x i1>`` mask bitcast to i64 (one vpmovb2m / two pmovmskb on x86).
        Bit ``i`` of the result is element ``start + i`` (little endian, as ``np.packbits``).
        """
        sig = types.uint64(arr, start, shift)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            vty = ir.VectorType(ir.IntType(8), 64)
            vec = builder.load(builder.bitcast(builder.gep(data, [args[1]]), vty.as_pointer()), align=1)
            sh = builder.insert_element(ir.Constant(vty, None), builder.trunc(args[2], ir.IntType(8)),
                                        ir.Constant(ir.IntType(32), 0))
            sh = builder.shuffle_vector(sh, ir.Constant(vty, None),
                                        ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
            neg = builder.icmp_signed("<", builder.shl(vec, sh), ir.Constant(vty, [0] * 64))
            return builder.bitcast(neg, ir.IntType(64))

        return sig, codegen

    @intrinsic
    def gt_mask64(typingctx, arr, start, tau):  # noqa: ANN001, ANN201
        """``arr[start:start+64] > tau`` (float32, ordered compare) packed in a uint64."""
        sig = types.uint64(arr, start, tau)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            vty = ir.VectorType(ir.FloatType(), 64)
            vec = builder.load(builder.bitcast(builder.gep(data, [args[1]]), vty.as_pointer()), align=4)
            t = builder.insert_element(ir.Constant(vty, None), args[2], ir.Constant(ir.IntType(32), 0))
            t = builder.shuffle_vector(t, ir.Constant(vty, None),
                                       ir.Constant(ir.VectorType(ir.IntType(32), 64), [0] * 64))
            return builder.bitcast(builder.fcmp_ordered(">", vec, t), ir.IntType(64))

        return sig, codegen

    @intrinsic
    def f32_pointer(typingctx, addr):  # noqa: ANN001, ANN201
        """The integer address ``addr`` as a float32 pointer (``inttoptr``), for ``carray``."""
        sig = types.CPointer(types.float32)(addr)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            return builder.inttoptr(args[0], context.get_value_type(signature.return_type))

        return sig, codegen

    @intrinsic
    def abs_max64(typingctx, arr, start):  # noqa: ANN001, ANN201
        """``max|arr[start:start+64]|`` of float32: four vector loads, ``fabs``, a ``maxnum``
        tree and one horizontal ``fmax`` (NaN ignored, as ``maxnum`` does)."""
        sig = types.float32(arr, start)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            vty = ir.VectorType(ir.FloatType(), 16)
            mod = builder.module
            fabs = mod.declare_intrinsic("llvm.fabs.v16f32", fnty=ir.FunctionType(vty, [vty]))
            vmax = mod.declare_intrinsic("llvm.maxnum.v16f32", fnty=ir.FunctionType(vty, [vty, vty]))
            hmax = mod.declare_intrinsic("llvm.vector.reduce.fmax.v16f32",
                                         fnty=ir.FunctionType(ir.FloatType(), [vty]))
            data = context.make_array(signature.args[0])(context, builder, args[0]).data
            base = builder.bitcast(builder.gep(data, [args[1]]), vty.as_pointer())
            v = [builder.call(fabs, [builder.load(builder.gep(base, [ir.Constant(ir.IntType(64), k)]),
                                                  align=4)]) for k in range(4)]
            m = builder.call(vmax, [builder.call(vmax, [v[0], v[1]]), builder.call(vmax, [v[2], v[3]])])
            return builder.call(hmax, [m])

        return sig, codegen

    def _permute_i16(builder, table, idx):  # noqa: ANN001, ANN202
        """``table[idx & 31]`` per lane of two <32 x i16> (one ``vpermw``; lane by lane without
        AVX-512 BW, where the table layout is never used but the drivers still compile)."""
        vty = ir.VectorType(ir.IntType(16), 32)
        if HAS_VPERMW:
            fn = builder.module.declare_intrinsic("llvm.x86.avx512.permvar.hi.512",
                                                  fnty=ir.FunctionType(vty, [vty, vty]))
            return builder.call(fn, [table, idx])
        out = ir.Constant(vty, None)
        for lane in range(32):
            i = builder.and_(builder.extract_element(idx, ir.Constant(ir.IntType(32), lane)),
                             ir.Constant(ir.IntType(16), 31))
            out = builder.insert_element(out, builder.extract_element(table, i),
                                         ir.Constant(ir.IntType(32), lane))
        return out

    def _lut_block(n_planes: int):  # noqa: ANN202
        """The inner loop of :func:`lut_acc` for weights of ``n_planes`` planes, as an intrinsic.

        ``lut_block(tab, wl, w_off, plane_steps, nsteps, out, o_off)``: for the 32 outputs of
        one block, ``out[o_off + 32 p + r]`` (int32) = sum over the ``nsteps`` steps g of
        ``tab[3g + t][(u_r >> 5t) & 31]``, t < 3, where ``u`` is row ``w_off + p plane_steps + g``
        of ``wl`` seen as rows of 32 uint16 (``tab``: rows of 32 int16). Sums are kept in int16
        for :data:`LUT_FLUSH` steps, then widened.
        """
        i16, i32, i64 = ir.IntType(16), ir.IntType(32), ir.IntType(64)
        v16, v32 = ir.VectorType(i16, 32), ir.VectorType(i32, 16)

        @intrinsic
        def lut_block(typingctx, tab, wl, w_off, plane_steps, nsteps, out, o_off):  # noqa: ANN001, ANN202
            sig = types.void(tab, wl, w_off, plane_steps, nsteps, out, o_off)

            def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
                tab_, wl_, w_off_, pstride, nsteps_, out_, o_off_ = args
                tabs = builder.bitcast(context.make_array(signature.args[0])(context, builder, tab_).data,
                                       v16.as_pointer())
                wrows = builder.bitcast(context.make_array(signature.args[1])(context, builder, wl_).data,
                                        v16.as_pointer())
                odata = context.make_array(signature.args[5])(context, builder, out_).data
                c64 = lambda v: ir.Constant(i64, v)  # noqa: E731
                entry = builder.basic_block
                chunk, inner = builder.append_basic_block("chunk"), builder.append_basic_block("inner")
                widen, done = builder.append_basic_block("widen"), builder.append_basic_block("done")
                builder.branch(chunk)
                # chunk: LUT_FLUSH steps at a time, int32 sums (lanes 0-15 and 16-31) carried
                builder.position_at_end(chunk)
                start = builder.phi(i64)
                start.add_incoming(c64(0), entry)
                sums = []
                for _ in range(2 * n_planes):
                    ph = builder.phi(v32)
                    ph.add_incoming(ir.Constant(v32, [0] * 16), entry)
                    sums.append(ph)
                stop = builder.add(start, c64(LUT_FLUSH))
                stop = builder.select(builder.icmp_signed("<", stop, nsteps_), stop, nsteps_)
                builder.branch(inner)
                # inner: one step, 3 tables; one uint16 vector and 3 lookups per plane
                builder.position_at_end(inner)
                g = builder.phi(i64)
                g.add_incoming(start, chunk)
                acc = []
                for _ in range(n_planes):
                    ph = builder.phi(v16)
                    ph.add_incoming(ir.Constant(v16, [0] * 32), chunk)
                    acc.append(ph)
                t = [builder.load(builder.gep(tabs, [builder.add(builder.mul(g, c64(3)), c64(k))]), align=64)
                     for k in range(3)]
                nxt = []
                for p in range(n_planes):
                    at = builder.add(builder.add(w_off_, builder.mul(c64(p), pstride)), g)
                    u = builder.load(builder.gep(wrows, [at]), align=64)
                    s0 = _permute_i16(builder, t[0], u)  # vpermw reads the low 5 bits
                    s1 = _permute_i16(builder, t[1], builder.lshr(u, ir.Constant(v16, [5] * 32)))
                    s2 = _permute_i16(builder, t[2], builder.lshr(u, ir.Constant(v16, [10] * 32)))
                    nxt.append(builder.add(acc[p], builder.add(builder.add(s0, s1), s2)))
                g1 = builder.add(g, c64(1))
                g.add_incoming(g1, inner)
                for p in range(n_planes):
                    acc[p].add_incoming(nxt[p], inner)
                builder.cbranch(builder.icmp_signed("<", g1, stop), inner, widen)
                # widen: int16 sums into the int32 ones
                builder.position_at_end(widen)
                wide = []
                for p in range(n_planes):
                    for h in range(2):
                        half = builder.shuffle_vector(nxt[p], nxt[p], ir.Constant(
                            ir.VectorType(i32, 16), list(range(16 * h, 16 * h + 16))))
                        wide.append(builder.add(sums[2 * p + h], builder.sext(half, v32)))
                for ph, v in zip(sums, wide):
                    ph.add_incoming(v, widen)
                start.add_incoming(stop, widen)
                builder.cbranch(builder.icmp_signed("<", stop, nsteps_), chunk, done)
                builder.position_at_end(done)
                for k, v in enumerate(wide):  # plane p, half h -> out[o_off + 32 p + 16 h]
                    ptr = builder.gep(odata, [builder.add(o_off_, c64(16 * k))])
                    builder.store(v, builder.bitcast(ptr, v32.as_pointer()), align=4)
                return context.get_dummy_value()

            return sig, codegen

        return lut_block

    lut_block1, lut_block2 = _lut_block(1), _lut_block(2)

    # -- activations ----------------------------------------------------------------------
    @njit(cache=True, inline="always")
    def max_abs(h, d):  # noqa: ANN001, ANN201
        """``max|h[:d]|`` (exact in any order; NaN ignored): 64 values per :func:`abs_max64`.

        Branch-free: a running ``if a > m`` mispredicts on every new input (~0.6 µs a layer).
        """
        m = np.float32(0.0)
        top = d - d % 64
        for i in range(0, top, 64):
            a = abs_max64(h, i)
            m = a if a > m else m
        for i in range(top, d):
            a = abs(h[i])
            m = a if a > m else m
        return m

    @njit(cache=True, inline="always")
    def quantize_row(h, d, xq):  # noqa: ANN001, ANN201
        """``xq[:d] = clip(round(h[:d] * s), -128, 127)`` (any integer ``xq``); returns ``(s, sum)``.

        ``s = (1 / max(max|h|, EPS)) * 127`` in float32, the same operations as torch.
        """
        m = max_abs(h, d)
        if m < EPS32:
            m = EPS32
        s = (np.float32(1.0) / m) * np.float32(127.0)
        total = 0
        for i in range(d):
            v = np.rint(h[i] * s)
            v = min(max(v, np.float32(-128.0)), np.float32(127.0))
            q = np.int16(v)
            xq[i] = q
            total += q
        return s, total

    @njit(cache=True)
    def quantize_rows(x, xq):  # noqa: ANN001, ANN201
        """Batch form of :func:`quantize_row`: int8 ``xq`` (B, D) and float32 scales (B,)."""
        b, d = x.shape
        scales = np.empty(b, np.float32)
        row = np.empty(d, np.int16)
        for n in range(b):
            scales[n], _ = quantize_row(x[n], d, row)
            for i in range(d):
                xq[n, i] = np.int8(row[i])
        return scales

    @njit(cache=True, inline="always")
    def mean_abs(h, d):  # noqa: ANN001, ANN201
        """``sum|h[:d]| / d`` in float32 (the binary layer's ``beta``), in a fixed order.

        16 lane sums (lane l adds elements l, l + 16, ...), added together in lane order, then
        the tail: deterministic, and it vectorises (float sums cannot be reordered by the
        compiler, so a single running sum would cost one add latency per element).
        """
        lanes = np.zeros(LANES, np.float32)
        top = d - d % LANES
        for i in range(0, top, LANES):
            for l in range(LANES):
                lanes[l] += abs(h[i + l])
        s = np.float32(0.0)
        for l in range(LANES):
            s += lanes[l]
        for i in range(top, d):
            s += abs(h[i])
        return s / np.float32(d)

    @njit(cache=True)
    def mean_abs_rows(x):  # noqa: ANN001, ANN201
        """:func:`mean_abs` of every row of a (B, D) float32 array, shape (B, 1)."""
        out = np.empty((x.shape[0], 1), np.float32)
        for n in range(x.shape[0]):
            out[n, 0] = mean_abs(x[n], x.shape[1])
        return out

    # -- integer dot products of one layer (shared by the drivers and the tests) ----------
    @njit(cache=True)
    def int8_acc(xq, w, w_off, d, n, acc):  # noqa: ANN001, ANN201
        """``acc[j] = sum_i xq[i] * w[w_off + j*d + i]`` in int32 (int16 ``xq``, int8 ``w``)."""
        for j in range(n):
            row = w[w_off + j * d: w_off + (j + 1) * d]  # a view: non-negative indices vectorise
            s = 0
            for i in range(d):
                s += np.int32(xq[i]) * np.int32(row[i])
            acc[j] = np.int32(s)  # exact: |acc| <= d * 128 * 128 < 2^31 for d < 131072

    @njit(cache=True, inline="always")
    def bit_planes(xq, nw, planes):  # noqa: ANN001, ANN201
        """Split int8 activations (zero padded to ``64 nw``) into 8 bit-planes, (nw * 8,) uint64."""
        for k in range(nw):
            for b in range(8):
                planes[k * 8 + b] = bit_mask64(xq, k * 64, 7 - b)

    @njit(cache=True, inline="always")
    def _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, p):  # noqa: ANN001, ANN201
        """``sum_i x_i * bit_i(p)`` over one word, from the 8 two's-complement planes of x."""
        return (np.int64(popcount64(x0 & p)) + (np.int64(popcount64(x1 & p)) << 1)
                + (np.int64(popcount64(x2 & p)) << 2) + (np.int64(popcount64(x3 & p)) << 3)
                + (np.int64(popcount64(x4 & p)) << 4) + (np.int64(popcount64(x5 & p)) << 5)
                + (np.int64(popcount64(x6 & p)) << 6) - (np.int64(popcount64(x7 & p)) << 7))

    @njit(cache=True, inline="always")
    def _plane4(x, o, p, q, r, t):  # noqa: ANN001, ANN201
        """``popcount(x[o] & p) + ...`` over plane ``o`` of 4 consecutive words (planes ``x``)."""
        return (np.int64(popcount64(x[o] & p)) + np.int64(popcount64(x[o + 8] & q))
                + np.int64(popcount64(x[o + 16] & r)) + np.int64(popcount64(x[o + 24] & t)))

    @njit(cache=True, inline="always")
    def _weighted_pc4(x, p, q, r, t):  # noqa: ANN001, ANN201
        """:func:`_weighted_pc` of 4 words (planes ``x[0:32]``, weight words ``p, q, r, t``):
        each plane's popcounts are summed over the 4 words before its one shift, so the inner
        loop is mostly AND + popcount + add (~25% fewer vector ops than word by word)."""
        return (_plane4(x, 0, p, q, r, t) + (_plane4(x, 1, p, q, r, t) << 1)
                + (_plane4(x, 2, p, q, r, t) << 2) + (_plane4(x, 3, p, q, r, t) << 3)
                + (_plane4(x, 4, p, q, r, t) << 4) + (_plane4(x, 5, p, q, r, t) << 5)
                + (_plane4(x, 6, p, q, r, t) << 6) - (_plane4(x, 7, p, q, r, t) << 7))

    @njit(cache=True)
    def bitserial_acc(planes, xsum, w, w_off, nw, n, n_planes, sh0, sh1, offset, acc):  # noqa: ANN001, ANN201
        """Integer dots of 8-bit activations with bit-plane weights, by AND + popcount.

        The weight of output j at input i is ``(B0 << sh0) - (B1 << sh1) + offset`` with
        ``B0, B1`` its bits in the planes (``B1 = 0`` when ``n_planes == 1``); the planes are
        stored word-major, ``w[w_off + (k * n_planes + p) * n + j]``, so the inner loop runs
        over the outputs (vectorised, no horizontal sums). Words go four at a time, then one
        by one. ``xsum = sum_i x_i`` serves the ``offset`` term. Exact: int64 throughout.
        """
        for j in range(n):
            acc[j] = offset * xsum
        step = n_planes * n
        top = nw - nw % 4
        for k in range(0, top, 4):
            x = planes[k * 8: k * 8 + 32]
            base = w_off + k * step
            w0, w1 = w[base: base + n], w[base + step: base + step + n]
            w2, w3 = w[base + 2 * step: base + 2 * step + n], w[base + 3 * step: base + 3 * step + n]
            if n_planes == 1:
                for j in range(n):
                    acc[j] += _weighted_pc4(x, w0[j], w1[j], w2[j], w3[j]) << sh0
            else:
                v0, v1 = w[base + n: base + 2 * n], w[base + step + n: base + step + 2 * n]
                v2 = w[base + 2 * step + n: base + 2 * step + 2 * n]
                v3 = w[base + 3 * step + n: base + 3 * step + 2 * n]
                for j in range(n):
                    t0 = _weighted_pc4(x, w0[j], w1[j], w2[j], w3[j])
                    t1 = _weighted_pc4(x, v0[j], v1[j], v2[j], v3[j])
                    acc[j] += (t0 << sh0) - (t1 << sh1)
        for k in range(top, nw):  # the last words one by one
            x0, x1, x2, x3 = planes[k * 8], planes[k * 8 + 1], planes[k * 8 + 2], planes[k * 8 + 3]
            x4, x5, x6, x7 = planes[k * 8 + 4], planes[k * 8 + 5], planes[k * 8 + 6], planes[k * 8 + 7]
            base = w_off + k * step
            w0 = w[base: base + n]
            if n_planes == 1:
                for j in range(n):
                    acc[j] += _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, w0[j]) << sh0
            else:
                w1 = w[base + n: base + 2 * n]
                for j in range(n):
                    t0 = _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, w0[j])
                    t1 = _weighted_pc(x0, x1, x2, x3, x4, x5, x6, x7, w1[j])
                    acc[j] += (t0 << sh0) - (t1 << sh1)

    @njit(cache=True, inline="always")
    def lut_tables(xq, ngroups, tab):  # noqa: ANN001, ANN201
        """The sums of every subset of each group of 5 activations: ``tab[32 q + m] = sum_i
        xq[5 q + i] * bit_i(m)`` (int16), ``q < ngroups``."""
        for q in range(ngroups):
            x0, x1, x2 = np.int16(xq[5 * q]), np.int16(xq[5 * q + 1]), np.int16(xq[5 * q + 2])
            x3, x4 = np.int16(xq[5 * q + 3]), np.int16(xq[5 * q + 4])
            t = tab[q * 32: q * 32 + 32]
            for m in range(32):  # one vector: masks of m's bits select the activations
                t[m] = ((np.int16(-(m & 1)) & x0) + (np.int16(-((m >> 1) & 1)) & x1)
                        + (np.int16(-((m >> 2) & 1)) & x2) + (np.int16(-((m >> 3) & 1)) & x3)
                        + (np.int16(-((m >> 4) & 1)) & x4))

    @njit(cache=True)
    def lut_acc(xq, xsum, wl, w_off, d, n, n_planes, sh0, sh1, offset, tab, acc32,  # noqa: ANN001, ANN201
                acc):
        """Integer dots of 8-bit activations with bit-plane weights, by table lookups.

        The same dots as :func:`bitserial_acc` (weight ``(B0 << sh0) - (B1 << sh1) + offset``),
        computed as ``sum_q tab_q[bits_q(B_p)]``: the activations' 32 subset sums of each group
        of 5 inputs (:func:`lut_tables`) are looked up with the plane's 5 weight bits of that
        group, 32 outputs per ``vpermw`` (160 products per instruction, where AND + popcount
        does 64). Weights ``wl`` (uint16, from element ``w_off``, a multiple of 32): blocks of
        32 outputs, then planes, then steps of 3 groups (15 inputs), then outputs; an element
        holds the step's groups in bits 0-4, 5-9 and 10-14 (zero-padded past D and N). Exact:
        int16 sums of at most :data:`LUT_FLUSH` steps, then int32 (``|dot| < 2^31`` for
        D < 2^24), then int64. ``xq`` is zero-padded to a multiple of 15; ``tab`` is 64-byte
        aligned, room for ``ceil(D / 15) * 3 * 32`` int16.
        """
        nsteps = (d + 3 * LUT_GROUP - 1) // (3 * LUT_GROUP)
        lut_tables(xq, 3 * nsteps, tab)
        for b in range((n + LUT_BLOCK - 1) // LUT_BLOCK):
            at, o = w_off // 32 + b * n_planes * nsteps, b * n_planes * LUT_BLOCK
            if n_planes == 1:
                lut_block1(tab, wl, at, nsteps, nsteps, acc32, o)
            else:
                lut_block2(tab, wl, at, nsteps, nsteps, acc32, o)
        for j in range(n):
            i = (j // LUT_BLOCK) * n_planes * LUT_BLOCK + j % LUT_BLOCK
            v = (np.int64(acc32[i]) << sh0) + offset * xsum
            if n_planes == 2:
                v -= np.int64(acc32[i + LUT_BLOCK]) << sh1
            acc[j] = v

    @njit(cache=True)
    def xnor_acc(xw, w, w_off, nw, n, d, acc):  # noqa: ANN001, ANN201
        """``acc[j] = d - 2 popcount(x XOR w_j)`` with word-major weights ``w[w_off + k*n + j]``.

        Four words per pass over the outputs (one accumulator update per 4 words), then the rest.
        """
        for j in range(n):
            acc[j] = 0
        top = nw - nw % 4
        for k in range(0, top, 4):
            x0, x1, x2, x3 = xw[k], xw[k + 1], xw[k + 2], xw[k + 3]
            base = w_off + k * n
            w0, w1 = w[base: base + n], w[base + n: base + 2 * n]
            w2, w3 = w[base + 2 * n: base + 3 * n], w[base + 3 * n: base + 4 * n]
            for j in range(n):
                acc[j] += (np.int64(popcount64(x0 ^ w0[j])) + np.int64(popcount64(x1 ^ w1[j]))
                           + np.int64(popcount64(x2 ^ w2[j])) + np.int64(popcount64(x3 ^ w3[j])))
        for k in range(top, nw):
            xk = xw[k]
            wk = w[w_off + k * n: w_off + (k + 1) * n]
            for j in range(n):
                acc[j] += np.int64(popcount64(xk ^ wk[j]))
        for j in range(n):
            acc[j] = d - 2 * acc[j]

    # -- whole-MLP drivers ------------------------------------------------------------------
    @njit(cache=True, inline="always")
    def _aligned_bytes(n_bytes):  # noqa: ANN001, ANN201
        """``n_bytes`` of scratch starting on a 64-byte (cache line) boundary: a vector loop
        over a misaligned accumulator splits every load and store across two lines (~25%)."""
        raw = np.empty(n_bytes + 64, np.uint8)
        off = (64 - raw.ctypes.data % 64) % 64
        return raw[off: off + n_bytes]

    @njit(cache=True, inline="always")
    def _max_width(meta):  # noqa: ANN001, ANN201
        widest = 64
        for r in range(0, meta.shape[0], REC):
            widest = max(widest, meta[r], meta[r + 1])
        return widest + 64

    @njit(cache=True, inline="always")
    def _rescale(acc, fp, f_off, n, s, relu, out):  # noqa: ANN001, ANN201
        """``out[j] = float32(acc[j]) * (rscale[j] / s) + bias[j]``, then ReLU if asked.

        One loop per case, each a select: a ``relu`` test inside the loop kept it scalar, and
        its branch on the sign of ``y`` mispredicted on every new input (~2 µs per MLP).
        """
        if relu:
            for j in range(n):
                y = np.float32(acc[j]) * (fp[f_off + j] / s) + fp[f_off + n + j]
                out[j] = y if y > np.float32(0.0) else np.float32(0.0)
        else:
            for j in range(n):
                out[j] = np.float32(acc[j]) * (fp[f_off + j] / s) + fp[f_off + n + j]

    @njit(cache=True)
    def mlp_int8(x, meta, fp, w, out):  # noqa: ANN001, ANN201
        """Run an int8 MLP on float32 rows ``x`` (B, D) into ``out`` (B, N_last)."""
        width = _max_width(meta)
        h = np.empty(width, np.float32)
        y = np.empty(width, np.float32)
        xq = np.zeros(width, np.int16)
        acc = _aligned_bytes(4 * width).view(np.int32)
        for b in range(x.shape[0]):
            h[: x.shape[1]] = x[b]
            for r in range(0, meta.shape[0], REC):
                d, n, w_off, f_off, relu = meta[r], meta[r + 1], meta[r + 2], meta[r + 3], meta[r + 4]
                s, _ = quantize_row(h, d, xq)
                int8_acc(xq, w, w_off, d, n, acc)
                _rescale(acc, fp, f_off, n, s, relu, y)
                h, y = y, h
            out[b, :] = h[: out.shape[1]]

    @njit(cache=True)
    def mlp_bitserial(x, meta, fp, w, out):  # noqa: ANN001, ANN201
        """Run a bit-serial (1- or 2-plane weights, 8-bit activations) MLP on ``x`` (B, D).

        Each layer uses the kernel of its layout (``p4``): :func:`lut_acc` or :func:`bitserial_acc`.
        """
        width = _max_width(meta)
        h = np.empty(width, np.float32)
        y = np.empty(width, np.float32)
        xq = np.zeros(width, np.int8)  # zero padded to whole 64-bit words
        planes = np.empty((width // 64 + 1) * 8, np.uint64)
        acc = _aligned_bytes(8 * width).view(np.int64)
        tab = _aligned_bytes(2 * 8 * width).view(np.int16)  # 32 int16 per group of 5 inputs
        acc32 = _aligned_bytes(4 * 2 * width).view(np.int32)  # 2 planes x the padded outputs
        wl = w.view(np.uint16)
        for b in range(x.shape[0]):
            h[: x.shape[1]] = x[b]
            for r in range(0, meta.shape[0], REC):
                d, n, w_off, f_off, relu = meta[r], meta[r + 1], meta[r + 2], meta[r + 3], meta[r + 4]
                nw = (d + 63) // 64
                s, xsum = quantize_row(h, d, xq)
                for i in range(d, d + 64):  # both kernels read zeros past d (width >= d + 64)
                    xq[i] = 0
                if meta[r + 9]:
                    lut_acc(xq, xsum, wl, 4 * w_off, d, n, meta[r + 5], meta[r + 6], meta[r + 7],
                            meta[r + 8], tab, acc32, acc)
                else:
                    bit_planes(xq, nw, planes)
                    bitserial_acc(planes, xsum, w, w_off, nw, n, meta[r + 5], meta[r + 6], meta[r + 7],
                                  meta[r + 8], acc)
                _rescale(acc, fp, f_off, n, s, relu, y)
                h, y = y, h
            out[b, :] = h[: out.shape[1]]

    @njit(cache=True)
    def mlp_xnor(x, meta, fp, w, out):  # noqa: ANN001, ANN201
        """Run a binary MLP (inputs ``> tau``, sign weights, XNOR-popcount) on ``x`` (B, D).

        Per layer ``fp`` holds ``alpha[N], bias[N], tau``.
        """
        width = _max_width(meta)
        h = np.full(width, -np.inf, np.float32)  # -inf padding is never > tau: zero bits
        y = np.empty(width, np.float32)
        xw = np.empty(width // 64 + 1, np.uint64)
        acc = _aligned_bytes(8 * width).view(np.int64)
        for b in range(x.shape[0]):
            h[: x.shape[1]] = x[b]
            for r in range(0, meta.shape[0], REC):
                d, n, w_off, f_off, relu = meta[r], meta[r + 1], meta[r + 2], meta[r + 3], meta[r + 4]
                nw = (d + 63) // 64
                tau = fp[f_off + 2 * n]
                for i in range(d, nw * 64):
                    h[i] = -np.inf
                for k in range(nw):
                    xw[k] = gt_mask64(h, k * 64, tau)
                beta = mean_abs(h, d)
                xnor_acc(xw, w, w_off, nw, n, d, acc)
                if relu:  # one select per case, as in _rescale
                    for j in range(n):
                        v = np.float32(acc[j]) * (beta * fp[f_off + j]) + fp[f_off + n + j]
                        y[j] = v if v > np.float32(0.0) else np.float32(0.0)
                else:
                    for j in range(n):
                        y[j] = np.float32(acc[j]) * (beta * fp[f_off + j]) + fp[f_off + n + j]
                h, y = y, h
            out[b, :] = h[: out.shape[1]]

    # -- the same drivers reading the input in place (the batch-1 path of qmoe.quant.packed) --
    # ``x_addr`` is the address of ``b`` contiguous float32 rows of ``meta[0]`` values (a torch
    # tensor's ``data_ptr()``, which the caller keeps alive): no numpy view of the tensor to
    # build, ~0.7 µs of a 10 µs call.
    @njit(cache=True)
    def mlp_int8_at(x_addr, b, meta, fp, w, out):  # noqa: ANN001, ANN201
        """:func:`mlp_int8` of the rows at ``x_addr``."""
        mlp_int8(numba.carray(f32_pointer(x_addr), (b, meta[0])), meta, fp, w, out)

    @njit(cache=True)
    def mlp_bitserial_at(x_addr, b, meta, fp, w, out):  # noqa: ANN001, ANN201
        """:func:`mlp_bitserial` of the rows at ``x_addr``."""
        mlp_bitserial(numba.carray(f32_pointer(x_addr), (b, meta[0])), meta, fp, w, out)

    @njit(cache=True)
    def mlp_xnor_at(x_addr, b, meta, fp, w, out):  # noqa: ANN001, ANN201
        """:func:`mlp_xnor` of the rows at ``x_addr``."""
        mlp_xnor(numba.carray(f32_pointer(x_addr), (b, meta[0])), meta, fp, w, out)

    # -- integer dot products alone, for exactness tests --------------------------------------
    @njit(cache=True)
    def int8_dots(xq, w, n):  # noqa: ANN001, ANN201
        """(B, N) int64 dots of int8 rows ``xq`` (B, D) with the flat int8 weights ``w``."""
        b, d = xq.shape
        out = np.empty((b, n), np.int64)
        row = np.zeros(d, np.int16)
        acc = np.empty(n, np.int32)
        for r in range(b):
            for i in range(d):
                row[i] = xq[r, i]
            int8_acc(row, w, 0, d, n, acc)
            for j in range(n):
                out[r, j] = acc[j]
        return out

    @njit(cache=True)
    def bitserial_dots(xq, w, n, n_planes, sh0, sh1, offset, lut):  # noqa: ANN001, ANN201
        """(B, N) int64 dots of int8 rows ``xq`` (B, D) with the bit-plane weights ``w`` (uint64)
        in the table layout (``lut``) or the word-major planes."""
        b, d = xq.shape
        nw = (d + 63) // 64
        width = nw * 64 + 64
        out = np.empty((b, n), np.int64)
        row = np.zeros(nw * 64 + 64, np.int8)
        planes = np.empty(nw * 8, np.uint64)
        acc = np.empty(n, np.int64)
        tab = _aligned_bytes(2 * 8 * width).view(np.int16)
        acc32 = np.empty(2 * (n + LUT_BLOCK), np.int32)
        for r in range(b):
            xsum = 0
            for i in range(d):
                row[i] = xq[r, i]
                xsum += np.int64(xq[r, i])
            if lut:
                lut_acc(row, xsum, w.view(np.uint16), 0, d, n, n_planes, sh0, sh1, offset, tab, acc32, acc)
            else:
                bit_planes(row, nw, planes)
                bitserial_acc(planes, xsum, w, 0, nw, n, n_planes, sh0, sh1, offset, acc)
            out[r, :] = acc[:n]
        return out

    @njit(cache=True)
    def xnor_dots(x, tau, w, n):  # noqa: ANN001, ANN201
        """(B, N) int64 ±1 dots of the binarised rows ``x > tau`` (float32 (B, D)) with ``w``."""
        b, d = x.shape
        nw = (d + 63) // 64
        out = np.empty((b, n), np.int64)
        h = np.full(nw * 64, -np.inf, np.float32)
        xw = np.empty(nw, np.uint64)
        acc = np.empty(n, np.int64)
        t32 = np.float32(tau)
        for r in range(b):
            h[:d] = x[r]
            for k in range(nw):
                xw[k] = gt_mask64(h, k * 64, t32)
            xnor_acc(xw, w, 0, nw, n, d, acc)
            out[r, :] = acc[:n]
        return out

    # -- memory bandwidth probe (qmoe bench) ------------------------------------------------
    @njit(cache=True)
    def read_sum(buf):  # noqa: ANN001, ANN201
        """Sum of a uint64 buffer: streams it once through the core (a read-bandwidth probe)."""
        s = np.uint64(0)
        for i in range(buf.shape[0]):
            s += buf[i]
        return s
