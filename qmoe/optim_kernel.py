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

from qmoe.quant.qat_kernels import njit

if njit is not None:  # numba is a dependency; without it the optimizer runs torch's passes
    # defined with the fake-quant kernels: the variants that also compute the next forward's
    # weight statistics (adamw_layer_stats, adamw_row_gamma) share its code and their lane sums,
    # and numba's on-disk cache is invalidated per file (see qmoe.quant.qat_kernels)
    from qmoe.quant.qat_kernels import adamw_layer_stats, adamw_row_gamma, adamw_step, fma32  # noqa: F401
