"""Pure tensor math for quantization: straight-through estimators, activation
fake-quant, bit packing and the popcount dot product.

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

#: Elements of the (B, W, N) XOR temporary handled at once by :func:`popcount_dot`
#: (2**22 uint64 words = 32 MB), so a batch of 256 does not allocate hundreds of MB.
_POPCOUNT_CHUNK = 1 << 22


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


def ste(x: Tensor, q: Tensor, mask: Tensor | None = None) -> Tensor:
    """Straight-through estimator: the value of ``q``, the gradient of ``x``.

    Args:
        x: the float tensor gradients flow to.
        q: its quantized value, same shape (taken as a constant).
        mask: optional 0/1 tensor broadcastable to ``x``; the gradient is zeroed where it is 0
            (where the value was clipped).

    Returns:
        A tensor equal to ``q`` whose gradient w.r.t. ``x`` is ``grad * mask`` (identity without mask).
    """
    q = q.detach()
    if not (torch.is_grad_enabled() and x.requires_grad):
        return q
    mask = None if mask is None else mask.detach().to(x.dtype)
    return _QuantSTE.apply(x, lambda _: (q.clone(), mask))  # the output must not alias q


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward (half to even), identity backward."""
    return quant_ste(x, lambda t: (torch.round(t), None))


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


def sign_ste(x: Tensor) -> Tensor:
    """:func:`sign_pm1` forward, identity backward."""
    return quant_ste(x, lambda t: (sign_pm1(t), None))


def clip_round(x: Tensor, lo: float, hi: float) -> tuple[Tensor, Tensor]:
    """``(clip(round(x), lo, hi), mask)``: ``mask`` is 1.0 where ``round(x)`` is inside ``[lo, hi]``,
    else 0.0 (NaN counts as outside)."""
    r = torch.round(x)
    q = r.clamp(lo, hi)
    return q, (q == r).to(x.dtype)


def clip_round_ste(x: Tensor, lo: float, hi: float) -> Tensor:
    """``clip(round(x), lo, hi)`` forward; identity backward, zeroed where the clip was active.

    Args:
        x: float tensor (already divided by its scale).
        lo, hi: integer bounds of the grid.

    Returns:
        Integer-valued float tensor of the shape of ``x``.
    """
    return quant_ste(x, lambda t: clip_round(t, lo, hi))


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


def pack_bits(bits: np.ndarray) -> np.ndarray:
    """Pack a boolean array along its last axis into uint64 words.

    Bit ``i`` of the row goes to word ``i // 64``; the tail of the last word is zero-padded,
    so two packed rows XOR to zero in the padding and the padding never counts as a mismatch.

    Args:
        bits: bool array, shape (..., D).

    Returns:
        uint64 array, shape (..., ceil(D / 64)).
    """
    bits = np.asarray(bits, dtype=bool)
    d = bits.shape[-1]
    n_words = -(-d // 64)
    pad = n_words * 64 - d
    if pad:
        widths = [(0, 0)] * (bits.ndim - 1) + [(0, pad)]
        bits = np.pad(bits, widths)
    packed = np.packbits(bits, axis=-1, bitorder="little")  # (..., n_words * 8) uint8
    return np.ascontiguousarray(packed).view(np.uint64)  # (..., n_words)


def popcount_dot(x_packed: np.ndarray, w_packed_t: np.ndarray, d: int) -> np.ndarray:
    """Dot products of ±1 vectors from their packed bits: ``d - 2 * popcount(x XOR w)``.

    A set bit means +1 and a clear bit -1; equal bits contribute +1 and different bits -1,
    so the dot is the length minus twice the number of differing bits.

    Args:
        x_packed: uint64, shape (B, W): one packed input per row (:func:`pack_bits`).
        w_packed_t: uint64, shape (W, N): the packed weight rows *transposed* (word-major), so
            the XOR's inner loop runs over the N outputs (3x faster in numpy than over W words).
        d: the true vector length (before padding to 64 W bits), below 2^31.

    Returns:
        int32 array, shape (B, N).
    """
    b, n_words = x_packed.shape
    n = w_packed_t.shape[1]
    step = max(1, _POPCOUNT_CHUNK // max(1, n * n_words))
    if b <= step:  # one chunk (always at batch 1): skip the loop's bookkeeping
        xor = x_packed[:, :, None] ^ w_packed_t[None, :, :]  # (B, W, N)
        return d - 2 * np.bitwise_count(xor).sum(axis=1, dtype=np.int32)
    mismatches = np.empty((b, n), dtype=np.int32)
    for i in range(0, b, step):
        xor = x_packed[i : i + step, :, None] ^ w_packed_t[None, :, :]  # (b_i, W, N)
        mismatches[i : i + step] = np.bitwise_count(xor).sum(axis=1, dtype=np.int32)
    return d - 2 * mismatches
