"""``bitnet``: ternary weights {-1, 0, +1} with a learned per-output-channel scale, 8-bit activations.

Per output row j (DESIGN §3): ``gamma_j = mean|W_j|``,
``Wq_j = clip(round(W_j / gamma_j), -1, 1) * alpha_j``, where ``alpha`` is a parameter of
the layer initialised to the initial weights' ``gamma``. Deployed as two bit-planes per weight
(plus and minus masks, 2 bits) plus ``alpha`` in float32, with 8-bit activations.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from qmoe.quant import qat_kernels
from qmoe.quant.config import QUANTIZERS, QuantConfig
from qmoe.quant.layers import FakeQuantLinear, QuantLinear
from qmoe.quant.packed import packed_linear
from qmoe.quant.primitives import EPS, absmax_quantize


def ternary_gamma(weight: Tensor) -> Tensor:
    """Per-output-channel mean absolute weight, clamped to :data:`EPS`, shape (out,).

    On float32 CPU weights (numba installed) each row's mean is
    :func:`qmoe.quant.qat_kernels.row_gamma`'s float64 sum in a fixed lane order, rounded once
    (the same on every x86 CPU, within a float32 rounding of the exact mean; torch's
    ``mean(dim=1)`` differs from it by its own summation error, a few ulp). Elsewhere torch's.
    A weight the optimizer updates gets them from the optimizer's pass over it
    (:func:`qmoe.quant.qat_kernels.adamw_row_gamma`: the same bits), saving a read of W.
    """
    w = weight.detach()
    if w.dim() == 2 and w.dtype is torch.float32 and w.is_cpu and w.numel() > 0 \
            and qat_kernels.fusable(w.contiguous()):
        if w.is_contiguous():
            cached = qat_kernels.cached_stats(weight, "rows")
            if cached is not None:
                return torch.from_numpy(cached)  # a new array each step: nobody else writes it
            cached = qat_kernels.cached_stats(weight, "ternary")  # _TernaryLinear's (evaluation)
            if cached is not None:
                return torch.from_numpy(cached[0])
            qat_kernels.request_stats(weight, "rows", EPS)
        gamma = torch.empty(w.shape[0])
        qat_kernels.row_gamma(qat_kernels.as_np(w.contiguous()), np.float32(EPS), gamma.numpy())
        return gamma
    return w.abs().mean(dim=1).clamp_min(EPS)


class _TernarySTE(torch.autograd.Function):
    """``clip(round(W / gamma), -1, 1) * alpha`` per row, with the straight-through gradients
    of :func:`ternary_weight` written out.

    Cheaper than the autograd graph of the same formula: one node. On contiguous float32 CPU
    tensors (:mod:`qmoe.quant.qat_kernels`) the forward reads W twice (the row means of
    :func:`ternary_gamma`, then the values), keeping ``round(W / gamma)`` as int8 for the backward,
    which is one pass with no division. Elsewhere, torch's ops: one (out, in)
    temporary in the forward, two in the backward, ``round(W / gamma)`` recomputed bit for bit,
    float passes only (torch's CPU kernels on bool masks are 5-30x slower than a float pass).
    """

    @staticmethod
    def forward(ctx, weight: Tensor, alpha: Tensor) -> Tensor:  # type: ignore[override]
        gamma = ternary_gamma(weight)  # (out,)
        buf = torch.empty_like(weight)  # (out, in)
        if qat_kernels.fusable(weight, alpha):  # one pass; round(W / gamma) kept for the backward
            rounded = torch.empty(weight.shape, dtype=torch.int8)
            np_ = qat_kernels.as_np
            qat_kernels.ternary(np_(weight), gamma.numpy(), np_(alpha), buf.numpy(), rounded.numpy())
            ctx.save_for_backward(weight, alpha, gamma, rounded)
            return buf
        ctx.save_for_backward(weight, alpha, gamma, None)
        return _ternary_values(weight, gamma, alpha, out=buf)

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, Tensor | None]:  # type: ignore[override]
        weight, alpha, gamma, rounded = ctx.saved_tensors
        if rounded is not None and qat_kernels.fusable(grad):  # one pass, no division
            grad_w, grad_alpha = torch.empty_like(weight), torch.empty_like(gamma)
            np_ = qat_kernels.as_np
            qat_kernels.ternary_grads(rounded.numpy(), np_(alpha), gamma.numpy(), np_(grad), grad_w.numpy(),
                                      grad_alpha.numpy())
            return (grad_w if ctx.needs_input_grad[0] else None,
                    grad_alpha if ctx.needs_input_grad[1] else None)
        r = torch.div(weight, gamma[:, None]).round_()  # (out, in) integers, as in the forward
        grad_alpha = grad_w = None
        if ctx.needs_input_grad[1]:  # product rule: sum_in grad * ternary value
            grad_alpha = r.clamp(-1, 1).mul_(grad).sum(dim=1)  # (out,)
        if ctx.needs_input_grad[0]:
            # STE: grad * alpha / gamma where round(W / gamma) is in [-1, 1], 0 where it clipped;
            # -clamp(|r| - 2, -1, 0) is exactly 1 for |r| <= 1 and 0 for |r| >= 2
            ratio = (alpha / gamma).neg_()[:, None]  # (out, 1)
            grad_w = r.abs_().sub_(2.0).clamp_(-1.0, 0.0).mul_(ratio).mul_(grad)  # (out, in)
        return grad_w, grad_alpha


def ternary_weight(weight: Tensor, alpha: Tensor) -> Tensor:
    """Fake-quantize ``weight`` (out, in) to ``{-1, 0, 1} * alpha`` per row, with STE.

    Gradients: to ``weight`` identity times ``alpha / gamma`` (1 at initialisation), zeroed
    where ``|round(W / gamma)| > 1`` was clipped; to ``alpha`` the usual product rule
    (``sum_in grad * clip(round(W / gamma), -1, 1)``).
    """
    if torch.is_grad_enabled() and (weight.requires_grad or alpha.requires_grad):
        return _TernarySTE.apply(weight, alpha)
    return _ternary_values(weight, ternary_gamma(weight), alpha, out=torch.empty_like(weight))


class _TernaryLinear(torch.autograd.Function):
    """A bitnet layer's training forward -- absmax rows of ``x``, :func:`ternary_weight`,
    ``addmm`` -- as one autograd node, on contiguous float32 CPU tensors (the kernels').

    The same values and gradients as the graph of those three nodes, bit for bit: the forward
    computes what they compute; the backward takes autograd's products for ``addmm``
    (``g @ W_q``, ``g^T @ x_q``, ``sum(g)``), and :class:`_TernarySTE`'s kernel turns
    ``g^T @ x_q`` into the weight's and ``alpha``'s gradients in place
    (:func:`qmoe.quant.qat_kernels.ternary_grads_`): a buffer this node made, so no other
    (out, in) tensor is written or read (the graph's backward wrote a new one, then read both).
    One node where the graph had three (and a transpose's): their Python and autograd overhead
    was a part of what a bitnet step cost over fp32's. The weight itself comes from the
    optimizer's last update of it while that is current (:class:`qmoe.optim.AdamW` computes it
    in its pass over the weight, :func:`qmoe.quant.qat_kernels.adamw_row_gamma`).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, alpha: Tensor) -> Tensor:  # type: ignore[override]
        x_q = absmax_quantize(x, TernaryConfig.activation_bits)  # no graph: autograd is off in here
        cached = qat_kernels.take_stats(weight, "ternary")  # the optimizer's (its last update of weight)
        if cached is not None and cached[3] is alpha and cached[4] == alpha._version:
            gamma, w_q, rounded = torch.from_numpy(cached[0]), cached[1], cached[2]
        else:
            qat_kernels.request_stats(weight, "ternary", EPS, alpha)
            gamma = ternary_gamma(weight)
            w_q = torch.empty_like(weight)
            rounded = torch.empty(weight.shape, dtype=torch.int8)
            np_ = qat_kernels.as_np
            qat_kernels.ternary(np_(weight), gamma.numpy(), np_(alpha), w_q.numpy(), rounded.numpy())
        ctx.save_for_backward(x_q, w_q, alpha, gamma, rounded)
        return torch.addmm(bias, x_q, w_q.t())

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_q, w_q, alpha, gamma, rounded = ctx.saved_tensors
        need_x, need_w, need_b, need_alpha = ctx.needs_input_grad
        grad_w = grad_alpha = None
        if need_w or need_alpha:
            grad_w = grad.t().mm(x_q)  # (out, in), new: the STE's kernel rewrites it in place
            grad_alpha = torch.empty_like(gamma)
            qat_kernels.ternary_grads_(rounded.numpy(), qat_kernels.as_np(alpha), gamma.numpy(), grad_w.numpy(),
                                       grad_alpha.numpy())
        return (grad.mm(w_q) if need_x else None, grad_w if need_w else None,
                grad.sum(0) if need_b else None, grad_alpha if need_alpha else None)


def _ternary_values(weight: Tensor, gamma: Tensor, alpha: Tensor, out: Tensor) -> Tensor:
    """``clip(round(W / gamma), -1, 1) * alpha`` per row into ``out`` (out, in)."""
    if qat_kernels.fusable(weight, gamma, alpha, out):  # the same values in one pass
        np_ = qat_kernels.as_np
        qat_kernels.ternary(np_(weight), np_(gamma), np_(alpha), out.numpy(), np.empty((0, 0), np.int8))
        return out
    q = torch.div(weight, gamma[:, None], out=out).round_().clamp_(-1, 1)  # (out, in) ternary
    return q.mul_(alpha[:, None])


@dataclass(frozen=True, kw_only=True)
class TernaryConfig(QuantConfig):
    """``bitnet``: ternary weights with learned per-channel ``alpha``, 8-bit activations."""

    activation_bits: ClassVar[int | None] = 8
    param_names: ClassVar[tuple[str, ...]] = ("alpha",)

    @property
    def name(self) -> str:
        return "bitnet"

    @property
    def weight_bits(self) -> float:
        return 2.0  # packed ternary

    def init_params(self, weight: Tensor) -> dict[str, Tensor]:
        return {"alpha": ternary_gamma(weight).clone()}

    def fake_quant_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return ternary_weight(weight, params["alpha"])

    def one_node_linear(self, x: Tensor, weight: Tensor, bias: Tensor, params: Mapping[str, Tensor]) -> Tensor | None:
        """:class:`_TernaryLinear` where the kernels take every tensor; else None (the graph)."""
        alpha = params["alpha"]
        if not (qat_kernels.fusable(x, weight, bias, alpha) and weight.dim() == 2 and weight.numel() > 0
                and x.shape[0] > 0):
            return None
        return _TernaryLinear.apply(x, weight, bias, alpha)

    def int_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        q = torch.round(weight / ternary_gamma(weight)[:, None]).clamp(-1, 1)
        return q.to(torch.int8), {"alpha": params["alpha"]}

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        """Plus and minus bit-planes (``ternary``) against 8-bit activations, rescaled by ``alpha``."""
        q, scales = layer.int_weight()
        bias = None if layer.bias is None else layer.bias.detach()
        return packed_linear("ternary", q, bias, self, rescale=scales["alpha"])

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        return FakeQuantLinear.from_quant_linear(layer)

    def n_scales(self, in_features: int, out_features: int) -> int:
        return out_features  # alpha


QUANTIZERS.add("bitnet", TernaryConfig())
