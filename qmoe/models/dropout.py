"""Dropout with a counter-based mask (training's dropout and the router's Monte-Carlo passes).

torch's CPU ``bernoulli_`` draws ~6 ns per element (15% of a mixture's training epoch, with
its nine expert dropouts and ten router passes per step). Here the mask of a call comes from
one 62-bit seed drawn from torch's global generator (so a training's own RNG stream and
``torch.manual_seed`` govern it exactly as before) and, per element ``i``, SplitMix64's output
for ``seed`` and counter ``i + 1``: element ``i`` is kept iff its top 24 bits are at least
``round(p 2^24)``. Kept elements are multiplied by ``1 / (1 - p)`` (float32), dropped ones are
0; the backward multiplies the gradient by the same mask. Integer arithmetic only: the same
mask on every CPU, whatever vector width the kernel runs at.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn
from torch.nn import functional as F

try:  # numba is a dependency; without it torch's dropout runs
    from numba import njit
except ImportError:  # pragma: no cover - exercised only without numba
    njit = None

#: Bits of each element's uniform draw (the keep threshold's resolution is 2^-24).
UNIFORM_BITS = 24
GAMMA = 0x9E3779B97F4A7C15  # SplitMix64's increment
MIX1, MIX2 = 0xBF58476D1CE4E5B9, 0x94D049BB133111EB

if njit is not None:
    _GAMMA, _MIX1, _MIX2 = np.uint64(GAMMA), np.uint64(MIX1), np.uint64(MIX2)
    _S30, _S27, _S31, _SU = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(64 - UNIFORM_BITS)

    @njit(cache=True, nogil=True)
    def dropout_forward(x, seed, threshold, scale, out, mask):  # noqa: ANN001, ANN201
        """``out = x * scale`` where kept, else 0; ``mask`` (uint8) 1 where kept."""
        z0 = np.uint64(seed)
        for i in range(x.shape[0]):
            z = z0 + np.uint64(i + 1) * _GAMMA
            z = (z ^ (z >> _S30)) * _MIX1
            z = (z ^ (z >> _S27)) * _MIX2
            z = z ^ (z >> _S31)
            keep = (z >> _SU) >= threshold
            mask[i] = np.uint8(1) if keep else np.uint8(0)
            out[i] = x[i] * scale if keep else np.float32(0.0)

    @njit(cache=True, nogil=True)
    def dropout_backward(grad, mask, scale, out):  # noqa: ANN001, ANN201
        """``out = grad * scale`` where kept, else 0."""
        for i in range(grad.shape[0]):
            out[i] = grad[i] * scale if mask[i] != 0 else np.float32(0.0)


def keep_threshold(p: float) -> int:
    """The 24-bit threshold below which an element is dropped: ``round(p 2^24)``."""
    return int(round(p * (1 << UNIFORM_BITS)))


def draw_seed() -> int:
    """One seed from torch's global generator (62 bits, so it stays a positive int64)."""
    return int(torch.randint(0, 1 << 62, (1,), dtype=torch.int64))


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, p: float) -> Tensor:  # noqa: ANN001
        out = torch.empty_like(x)
        mask = torch.empty(x.shape, dtype=torch.uint8)
        scale = np.float32(1.0) / np.float32(1.0 - p)
        dropout_forward(x.detach().view(-1).numpy(), draw_seed(), np.uint64(keep_threshold(p)), scale,
                        out.view(-1).numpy(), mask.view(-1).numpy())
        ctx.save_for_backward(mask)
        ctx.scale = scale
        return out

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # noqa: ANN001
        (mask,) = ctx.saved_tensors
        grad = grad.contiguous()
        out = torch.empty_like(grad)
        dropout_backward(grad.view(-1).numpy(), mask.view(-1).numpy(), ctx.scale, out.view(-1).numpy())
        return out, None


def dropout(x: Tensor, p: float, training: bool = True) -> Tensor:
    """``F.dropout(x, p, training)`` with the counter-based mask (module docstring); tensors
    the kernel cannot take (not contiguous float32 on the CPU) and ``p`` outside (0, 1) get
    torch's own dropout."""
    if not training or p == 0.0:
        return x
    if njit is None or not (0.0 < p < 1.0) or x.dtype is not torch.float32 or not x.is_cpu \
            or not x.is_contiguous():
        return F.dropout(x, p, training)
    return _Dropout.apply(x, float(p))


class Dropout(nn.Dropout):
    """``nn.Dropout`` with :func:`dropout`'s mask (still an ``nn.Dropout``: deployment drops it)."""

    def forward(self, x: Tensor) -> Tensor:
        return dropout(x, self.p, self.training)
