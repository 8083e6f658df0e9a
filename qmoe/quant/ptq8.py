"""``ptq8``: train in float, then post-training int8.

The weights are rounded to int8 by PyTorch's dynamic quantization (per tensor, symmetric:
one scale, zero point 0). The deployed layer is the int8 kernel of
``int8`` layer (:mod:`qmoe.quant.packed`): activations quantized to int8 per *sample* (absmax,
as the QAT forms), int32 accumulation. (PyTorch's own dynamic int8 Linear quantizes the
activations per *batch*, so a sample's output depends on its batch mates, and it is no faster
than float at batch 1; :func:`dynamic_int8_linear` keeps it for comparison in ``qmoe bench``.)
``torch.ao.quantization`` is deprecated in recent torch but still works; its warnings are
silenced only around the conversion, and it is imported lazily so ``import qmoe.quant``
stays cheap.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from qmoe.errors import QmoeError
from qmoe.quant.config import QUANTIZERS, QuantConfig
from qmoe.quant.layers import FakeQuantLinear, QuantLinear
from qmoe.quant.packed import packed_linear

#: ``form`` of PyTorch's dynamic int8 Linear (the comparison row of ``qmoe bench``).
TORCH_DYNAMIC_FORM = "torch-dynamic-int8"


def dynamic_int8_linear(weight: Tensor, bias: Tensor | None) -> nn.Module:
    """A ``torch.ao`` dynamically quantized int8 Linear with the given float weight and bias."""
    out_features, in_features = weight.shape
    linear = nn.Linear(in_features, out_features, bias=bias is not None)
    with torch.no_grad():
        linear.weight.copy_(weight)
        if bias is not None:
            linear.bias.copy_(bias)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", UserWarning)
        from torch.ao.quantization import quantize_dynamic

        wrapped = quantize_dynamic(nn.Sequential(linear.eval()), {nn.Linear}, dtype=torch.qint8)
    return wrapped[0]


@dataclass(frozen=True, kw_only=True)
class Int8PTQConfig(QuantConfig):
    """``ptq8``: float training, int8 dynamic quantization at deployment."""

    post_training: ClassVar[bool] = True

    @property
    def name(self) -> str:
        return "ptq8"

    @property
    def weight_bits(self) -> float:
        return 8.0

    def int_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        qweight = dynamic_int8_linear(weight, None).weight()
        scales = {
            "scale": torch.tensor(qweight.q_scale(), dtype=torch.float32),
            "zero_point": torch.tensor(qweight.q_zero_point()),
        }
        return qweight.int_repr(), scales

    def deployed_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return dynamic_int8_linear(weight, None).weight().dequantize()

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        q, scales = layer.int_weight()
        if int(scales["zero_point"]) != 0:  # symmetric per-tensor quantization gives 0
            raise QmoeError(f"ptq8: weight zero point {int(scales['zero_point'])} != 0 is not supported")
        bias = None if layer.bias is None else layer.bias.detach()
        return packed_linear("int8", q, bias, self, rescale=scales["scale"])

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        bias = None if layer.bias is None else layer.bias.detach()
        return FakeQuantLinear(layer.deployed_weight(), bias, self, activation_bits=8)

    def torch_dynamic_linear(self, layer: QuantLinear) -> nn.Module:
        """PyTorch's dynamic int8 Linear of ``layer`` (per-batch activations), for comparison."""
        bias = None if layer.bias is None else layer.bias.detach()
        out = dynamic_int8_linear(layer.weight.detach(), bias)
        out.form = TORCH_DYNAMIC_FORM
        out.config = self
        return out

    def n_scales(self, in_features: int, out_features: int) -> int:
        return 2  # per-tensor scale and zero point


QUANTIZERS.add("ptq8", Int8PTQConfig())
