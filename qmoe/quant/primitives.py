"""Pure tensor math for quantization: straight-through estimators, activation
fake-quant, bit packing and the popcount dot product.

No modules, no configs: every function here takes arrays and returns arrays, so the
quantizers (``bitlinear``, ``ternary``, ``binary``...) read as formulas on top of it.

The STE functions return the quantized value *exactly* in the forward pass (a custom
autograd function rather than ``x + (q - x).detach()``, whose float rounding would make
the training forward differ from the deployed one by an ulp).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

#: Smallest scale a quantizer divides by; keeps an all-zero tensor from giving NaN.
EPS = 1e-8

#: Elements of the (B, W, N) XOR temporary handled at once by :func:`popcount_dot`
#: (2**22 uint64 words = 32 MB), so a batch of 256 does not allocate hundreds of MB.
_POPCOUNT_CHUNK = 1 << 22


class _STE(torch.autograd.Function):
    """Forward returns ``q``; backward hands the gradient to ``x`` (times ``mask``)."""

    @staticmethod
    def forward(ctx, x: Tensor, q: Tensor, mask: Tensor | None) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(mask)
        ctx.has_mask = mask is not None
        return q.clone()

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        (mask,) = ctx.saved_tensors
        if ctx.has_mask:
            grad = grad * mask
        return grad, None, None


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
        return q  # no graph to build: skip the autograd.Function call (deployed forms)
    if mask is not None:
        mask = mask.detach().to(x.dtype)
    return _STE.apply(x, q, mask)


def round_ste(x: Tensor) -> Tensor:
    """``round(x)`` forward (half to even), identity backward."""
    return ste(x, torch.round(x.detach()))


def sign_pm1(x: Tensor) -> Tensor:
    """``sign(x)`` with ``sign(0) = +1``, so the result has exactly the two values -1 and +1."""
    return torch.where(x >= 0, 1.0, -1.0).to(x.dtype)


def sign_ste(x: Tensor) -> Tensor:
    """:func:`sign_pm1` forward, identity backward."""
    return ste(x, sign_pm1(x.detach()))


def clip_round_ste(x: Tensor, lo: float, hi: float) -> Tensor:
    """``clip(round(x), lo, hi)`` forward; identity backward, zeroed where the clip was active.

    Args:
        x: float tensor (already divided by its scale).
        lo, hi: integer bounds of the grid.

    Returns:
        Integer-valued float tensor of the shape of ``x``.
    """
    r = torch.round(x.detach())
    inside = (r >= lo) & (r <= hi)
    return ste(x, r.clamp(lo, hi), inside)


def absmax_quantize(x: Tensor, bits: int = 8) -> Tensor:
    """Per-sample absmax fake quantization of activations (BitNet style), with STE.

    Each row over the last dimension (one sample, or one token) gets its own scale
    ``s_x = (2^(bits-1) - 1) / max|x|``; ``x_q = clip(round(x * s_x), -2^(bits-1), 2^(bits-1)-1) / s_x``.
    At 8 bits a sample therefore takes at most 256 (in practice 255) distinct values.

    Args:
        x: activations, shape (..., D).
        bits: integer width of the grid.

    Returns:
        Tensor of the shape of ``x``; gradient identity (zeroed where clipped).
    """
    qmax = 2 ** (bits - 1) - 1
    s_x = qmax / x.detach().abs().amax(dim=-1, keepdim=True).clamp_min(EPS)  # (..., 1)
    if torch.is_grad_enabled() and x.requires_grad:
        return clip_round_ste(x * s_x, -qmax - 1, qmax) / s_x
    # same ops, same values, without the STE bookkeeping (halves the deployed forms' latency)
    return torch.round(x * s_x).clamp_(-qmax - 1, qmax).div_(s_x)


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
