"""``ptq8``: train in float, then post-training int8 with PyTorch dynamic quantization.

The deployed layer is ``torch.ao.nn.quantized.dynamic.Linear``: weights int8 per tensor
(symmetric, one scale and zero point), activations quantized on the fly per batch, real
int8 GEMM kernels (fbgemm/x86). ``torch.ao.quantization`` is deprecated in recent torch
but still works; its warnings are silenced only around the conversion, and it is imported
lazily so ``import qmoe.quant`` stays cheap.
"""

from __future__ import annotations

import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from qmoe.quant.config import QUANTIZERS, QuantConfig
from qmoe.quant.layers import QuantLinear

FORM = "torch-dynamic-int8"


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
        bias = None if layer.bias is None else layer.bias.detach()
        out = dynamic_int8_linear(layer.weight.detach(), bias)
        out.form = FORM
        out.config = self
        return out

    def n_scales(self, in_features: int, out_features: int) -> int:
        return 2  # per-tensor scale and zero point


QUANTIZERS.add("ptq8", Int8PTQConfig())
