"""Modules: :class:`QuantLinear` (training, any quantizer) and :class:`FakeQuantLinear`
(the frozen deployed form of the QAT quantizers)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from qmoe.quant.config import QuantConfig, get_quantizer
from qmoe.quant.primitives import absmax_quantize


class QuantLinear(nn.Linear):
    """A Linear layer trained with the fake quantization of ``config``.

    The forward pass quantizes activations (per sample, if ``config.activation_bits``) and
    uses :meth:`quantized_weight`; rounding goes through straight-through estimators. For
    ``fp32`` and the post-training configs (``ptq8``, ``binary``) the forward is plain float;
    their quantization happens in :func:`qmoe.quant.deploy`.

    Args:
        in_features, out_features: as ``nn.Linear``.
        config: a quantizer config or its registry name.
        bias: whether the layer has a (float) bias.

    Raises:
        UnknownNameError: ``config`` is an unknown name.
    """

    def __init__(self, in_features: int, out_features: int, config: QuantConfig | str,
                 bias: bool = True, device: Any = None, dtype: Any = None) -> None:
        # set before nn.Linear.__init__, which calls reset_parameters -> reset_quant_params
        self.config = get_quantizer(config)
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)

    def reset_parameters(self) -> None:
        """Re-initialise weight and bias like ``nn.Linear``, then the quantizer's parameters."""
        super().reset_parameters()
        self.reset_quant_params()

    @torch.no_grad()
    def reset_quant_params(self) -> None:
        """(Re)initialise the quantizer's own parameters (bitnet's ``alpha``) from the weight.

        Call it after re-initialising ``weight`` outside :meth:`reset_parameters`
        (e.g. a custom Xavier init), so ``alpha`` starts at the new weights' gamma.
        """
        for name, value in self.config.init_params(self.weight.detach()).items():
            if name in self._parameters:
                self._parameters[name].copy_(value)
            else:
                self.register_parameter(name, nn.Parameter(value.clone()))

    def quant_params(self) -> dict[str, Tensor]:
        """The quantizer's own parameters by name (empty for all but bitnet)."""
        return {name: getattr(self, name) for name in self.config.param_names}

    def quantized_weight(self) -> Tensor:
        """The weight the forward pass uses (quantized for QAT configs; float for
        fp32/ptq8/binary, whose deployed weight is :meth:`deployed_weight`). Keeps the graph."""
        return self.config.fake_quant_weight(self.weight, self.quant_params())

    def deployed_weight(self) -> Tensor:
        """The effective (dequantized) weight of the deployed layer, detached.

        Equal to :meth:`quantized_weight` for QAT configs; the int8-rounded weight for ptq8;
        ``sign(W) * alpha`` per row for binary (whose deployment also binarises the inputs).
        """
        return self.config.deployed_weight(self.weight.detach(), _detached(self.quant_params()))

    def int_weight(self) -> tuple[Tensor, dict[str, Tensor]] | None:
        """``(integer weight, {scale name: float tensor})`` as stored in the deployment, or None
        for a float deployment (fp32). Dequantization per method: q{k} ``q * scale`` (``mu`` is
        stored but not added back), bitnet/binary ``q * alpha[:, None]``,
        ptq8 ``(q - zero_point) * scale``."""
        return self.config.int_weight(self.weight.detach(), _detached(self.quant_params()))

    def forward(self, x: Tensor) -> Tensor:
        if self._one_node(x):
            if self.config.straight_through:
                return _StraightThroughLinear.apply(x, self.weight, self.bias, self.config)
            out = self.config.one_node_linear(x, self.weight, self.bias, self.quant_params())
            if out is not None:
                return out
        return self.graph_forward(x)

    def graph_forward(self, x: Tensor) -> Tensor:
        """The forward as a graph of its parts: activation STE, weight STE, ``F.linear``."""
        if self.config.activation_bits is not None:
            x = absmax_quantize(x, self.config.activation_bits)
        return F.linear(x, self.quantized_weight(), self.bias)

    def _one_node(self, x: Tensor) -> bool:
        """Whether this training step may run as one autograd node (a batch of rows, a bias):
        :class:`_StraightThroughLinear` for a quantizer whose weight STE is the identity
        (``straight_through``), else the config's :meth:`~QuantConfig.one_node_linear` if it has one."""
        return torch.is_grad_enabled() and self.weight.requires_grad and self.bias is not None and x.dim() == 2

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, config={self.config.name}"


class _StraightThroughLinear(torch.autograd.Function):
    """:meth:`QuantLinear.graph_forward` as one autograd node, for quantizers whose activation
    and weight STEs are both the identity (q1-q16).

    The graph runs two STE nodes, ``addmm``'s and a transpose's per layer and step; their Python
    and autograd overhead is part of what a q-form's step costs over fp32's. Here the
    forward computes the same values (``absmax`` rows, the weight's grid, ``addmm``) and the
    backward the same products autograd does for ``addmm`` (``g @ W_q``, ``g^T @ x_q``,
    ``sum(g)``), so training gives the same bits either way (tests/qmoe/quant/test_quant_layers.py).
    """

    @staticmethod
    def forward(ctx, x: Tensor, weight: Tensor, bias: Tensor, config: QuantConfig) -> Tensor:  # type: ignore[override]
        if config.activation_bits is not None:
            x = absmax_quantize(x, config.activation_bits)  # no graph: autograd is off in here
        w_q = config.straight_through_weight(weight)
        ctx.save_for_backward(x, w_q)
        return torch.addmm(bias, x, w_q.t())

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, ...]:  # type: ignore[override]
        x_q, w_q = ctx.saved_tensors
        need_x, need_w, need_b, _ = ctx.needs_input_grad
        return (grad.mm(w_q) if need_x else None, grad.t().mm(x_q) if need_w else None,
                grad.sum(0) if need_b else None, None)


class FakeQuantLinear(nn.Linear):
    """Deployed form of a QAT layer: precomputed quantized weight + the same activation fake-quant.

    Its output equals the eval-mode output of the :class:`QuantLinear` it came from exactly.

    Args:
        weight, bias: the frozen (quantized) weight and the float bias.
        config: the quantizer config.
        activation_bits: width of the per-sample activation fake-quant; defaults to the
            config's (ptq8's float reference passes 8: its deployment quantizes activations).

    Attributes:
        form: ``"torch-fakequant-<name>"``.
        activation_bits: width of the activation fake-quant, or None.
    """

    def __init__(self, weight: Tensor, bias: Tensor | None, config: QuantConfig,
                 activation_bits: int | None = None) -> None:
        out_features, in_features = weight.shape
        super().__init__(in_features, out_features, bias=bias is not None,
                         device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            self.weight.copy_(weight)
            if bias is not None:
                self.bias.copy_(bias)
        self.config = config
        self.activation_bits = activation_bits if activation_bits is not None else config.activation_bits
        self.form = f"torch-fakequant-{config.name}"
        self.requires_grad_(False)

    @classmethod
    def from_quant_linear(cls, layer: QuantLinear) -> FakeQuantLinear:
        """Freeze ``layer``: its quantized weight is computed once here."""
        bias = None if layer.bias is None else layer.bias.detach()
        return cls(layer.deployed_weight(), bias, layer.config)

    def forward(self, x: Tensor) -> Tensor:
        if self.activation_bits is not None:
            x = absmax_quantize(x, self.activation_bits)
        return F.linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, form={self.form}"


def _detached(params: Mapping[str, Tensor]) -> dict[str, Tensor]:
    return {k: v.detach() for k, v in params.items()}
