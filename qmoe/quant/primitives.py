"""Pure tensor math for quantization: the straight-through estimator, ``sign_pm1`` and the
activation fake-quant.

No modules, no configs: every function here takes arrays and returns arrays, so the
quantizers (``bitlinear``, ``ternary``, ``binary``...) read as formulas on top of it.

The STE functions return the quantized value *exactly* in the forward pass (a custom
autograd function rather than ``x + (q - x).detach()``, whose float rounding would make
the training forward differ from the deployed one by an ulp).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
from torch import Tensor

#: Smallest scale a quantizer divides by; keeps an all-zero tensor from giving NaN.
EPS = 1e-8

#: A quantizer for :func:`quant_ste`: float tensor -> (its quantized value, and the 0/1 float
#: factor of the gradient -- 0 where the value clipped -- or None when nothing can clip).
Quantize = Callable[[Tensor], tuple[Tensor, "Tensor | None"]]


class _QuantSTE(torch.autograd.Function):
    """Forward: ``quantize(x)`` evaluated once, without a graph; backward: the incoming
    gradient itself (no copy), or times the 0/1 mask ``quantize`` returned.

    One node per quantized tensor: the forward costs the quantizer's own passes and the
    backward none (or one), where a graph of scale, round and rescale nodes cost a dozen.
    """

    @staticmethod
    def forward(ctx, x: Tensor, quantize: Quantize) -> Tensor:  # type: ignore[override]
        q, mask = quantize(x)
        ctx.has_mask = mask is not None
        if ctx.has_mask:
            ctx.save_for_backward(mask)
        return q

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        if ctx.has_mask:
            (mask,) = ctx.saved_tensors
            grad = grad * mask
        return grad, None


def quant_ste(x: Tensor, quantize: Quantize) -> Tensor:
    """Straight-through estimator around ``quantize``: its value, the gradient of ``x``.

    Args:
        x: the float tensor gradients flow to.
        quantize: computes ``(q, mask)`` from ``x`` (called without autograd, on ``x`` itself:
            it must not modify it in place); ``mask`` is a 0/1 float tensor broadcastable to
            ``x`` (0 where the value clipped) or None (nothing clips).

    Returns:
        ``q``; its gradient w.r.t. ``x`` is the incoming gradient times ``mask`` (identity without).
    """
    if torch.is_grad_enabled() and x.requires_grad:
        return _QuantSTE.apply(x, quantize)
    return quantize(x.detach())[0]  # no graph to build (eval, deployed forms)


def sign_pm1(x: Tensor) -> Tensor:
    """``sign(x)`` with ``sign(0) = +1`` (and NaN -> -1), so the result has exactly the two
    values -1 and +1: ``where(x >= 0, 1, -1)``.

    Computed with float ops only (``sign(sign(x) + 1/2)``): torch's CPU kernels that read or
    write bool tensors (comparisons, ``where``, ``masked_fill``) are 5-30x slower than a float
    pass, which made this the costliest op of a q1 training step.
    """
    return sign_pm1_(x.detach().clone())  # no gradient, as a comparison has none


def sign_pm1_(x: Tensor) -> Tensor:
    """:func:`sign_pm1` in place on ``x`` (a float tensor the caller owns); returns ``x``."""
    return x.nan_to_num_(nan=-1.0).sign_().add_(0.5).sign_()


def absmax_scale(x: Tensor, bits: int = 8) -> Tensor:
    """Per-row activation scale ``s_x = (2^(bits-1) - 1) / max|x|`` (max clamped to :data:`EPS`),
    shape (..., 1). Computed as torch computes ``qmax / t`` (``t.reciprocal() * qmax``), which
    the deployed kernels reproduce."""
    qmax = 2 ** (bits - 1) - 1
    return qmax / x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(EPS)  # (..., 1)


def _absmax_fake_quant(x: Tensor, bits: int) -> tuple[Tensor, None]:
    qmax = 2 ** (bits - 1) - 1
    from qmoe.quant import qat_kernels

    if qat_kernels.fusable(x) and x.dim() > 0:  # the same values in one pass per row
        out = torch.empty_like(x)
        d = x.shape[-1]
        qat_kernels.absmax_rows(qat_kernels.as_np(x).reshape(-1, d), np.float32(qmax), np.float32(EPS),
                                out.numpy().reshape(-1, d))
        return out, None
    s_x = absmax_scale(x, bits)  # (..., 1)
    # Nothing clips: |x| <= max|x| gives |x * s_x| <= qmax (1 + 2^-23) (monotone float
    # multiplication), which rounds to at most qmax; the clamp only keeps the grid explicit.
    return torch.mul(x, s_x).round_().clamp_(-qmax - 1, qmax).div_(s_x), None


def absmax_quantize(x: Tensor, bits: int = 8) -> Tensor:
    """Per-sample absmax fake quantization of activations (BitNet style), with STE.

    Each row over the last dimension (one sample, or one token) gets its own scale
    ``s_x = (2^(bits-1) - 1) / max|x|``; ``x_q = clip(round(x * s_x), -2^(bits-1), 2^(bits-1)-1) / s_x``.
    At 8 bits a sample therefore takes at most 256 (in practice 255) distinct values.

    Args:
        x: activations, shape (..., D).
        bits: integer width of the grid.

    Returns:
        Tensor of the shape of ``x``; gradient identity (the absmax grid never clips).
    """
    return quant_ste(x, lambda t: _absmax_fake_quant(t, bits))
