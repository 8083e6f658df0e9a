"""AdamW's update in one pass over a parameter (the optimizer's share of a training step was
35-40%: seven memory-bound torch passes over every weight, gradient and moment).

The kernel follows torch's single-tensor AdamW formula op for op in IEEE float32, with the
gradient clipping's multiplication folded in::

    g = grad * clip                                  # clip_grad_norm_'s clamped coefficient
    p = p * (1 - lr wd)
    m = fma(1 - beta1, g - m, m)                     # m.lerp_(g, 1 - beta1)
    v = fma((1 - beta2) g, g, v * beta2)             # v.mul_(beta2).addcmul_(g, g, 1 - beta2)
    d = sqrt(max(v, tiny)) / sqrt(1 - beta2^t) + eps
    p = p + (-lr / (1 - beta1^t)) m / d              # p.addcdiv_(m, d, -step_size)

Every operation is a single correctly rounded IEEE operation (``fma`` is LLVM's fused
multiply-add, rounded once, in hardware or in software), nothing is reassociated or contracted
(no fast-math), and no element depends on another: the result is the same bits on every x86
CPU, whatever vector width numba picks. torch's own passes are not: its ``sqrt`` goes through
MKL's vector math, which is not correctly rounded and depends on the CPU, and its ``lerp`` uses
an FMA only in its AVX2/AVX-512 builds. The two agree to within one float32 rounding per
operation (``tests/qmoe/test_optim.py`` checks the kernel bit for bit against an exact rational
reference, and against ``torch.optim.AdamW``).

``max(v, tiny)``: torch's CPU sqrt is ~5x slower on exact zeros, and the term it replaces,
``sqrt(v) / sqrt(1 - beta2^t)`` for ``v < tiny``, is below a 2^-25 fraction of ``eps``, so
``d`` rounds to ``eps`` either way (:class:`qmoe.optim.AdamW` checks that argument holds for
the group's settings before using the kernel).
"""

from __future__ import annotations

import numpy as np

try:  # numba is a dependency; without it the optimizer runs torch's passes
    from llvmlite import ir
    from numba import njit, types
    from numba.extending import intrinsic
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None

if njit is not None:

    @intrinsic
    def fma32(typingctx, a, b, c):  # noqa: ANN001, ANN201
        """``a * b + c`` rounded once (float32)."""
        sig = types.float32(types.float32, types.float32, types.float32)

        def codegen(context, builder, signature, args):  # noqa: ANN001, ANN202
            f32 = ir.FloatType()
            fn = builder.module.declare_intrinsic("llvm.fma", [f32], ir.FunctionType(f32, [f32, f32, f32]))
            return builder.call(fn, args)

        return sig, codegen

    # error_model="numpy": a division by zero gives inf/nan as torch does, never an exception
    @njit(cache=True, error_model="numpy", nogil=True)
    def adamw_step(p, g, m, v, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step):  # noqa: ANN001, ANN201
        """One AdamW step over flat float32 arrays ``p`` (parameter), ``g`` (its gradient, read
        only), ``m`` and ``v`` (the moments), in place; every scalar is float32 (see the module
        docstring for the formula)."""
        for i in range(p.shape[0]):
            gi = g[i] * clip
            pi = p[i] * decay
            mi = fma32(w1, gi - m[i], m[i])
            vi = fma32(w2 * gi, gi, v[i] * beta2)
            d = np.sqrt(tiny if vi < tiny else vi) / bc2_sqrt + eps  # a NaN stays NaN, as clamp_min
            p[i] = pi + (neg_step * mi) / d
            m[i] = mi
            v[i] = vi
