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

import torch
from torch import Tensor, nn

from qmoe.quant.config import QUANTIZERS, QuantConfig
from qmoe.quant.layers import FakeQuantLinear, QuantLinear
from qmoe.quant.packed import BitSerialLinear
from qmoe.quant.primitives import EPS, clip_round_ste


def ternary_gamma(weight: Tensor) -> Tensor:
    """Per-output-channel mean absolute weight, shape (out,)."""
    return weight.detach().abs().mean(dim=1).clamp_min(EPS)


def ternary_weight(weight: Tensor, alpha: Tensor) -> Tensor:
    """Fake-quantize ``weight`` (out, in) to ``{-1, 0, 1} * alpha`` per row, with STE.

    Gradients: to ``weight`` identity times ``alpha / gamma`` (1 at initialisation), zeroed
    where ``|round(W / gamma)| > 1`` was clipped; to ``alpha`` the usual product rule.
    """
    q = clip_round_ste(weight / ternary_gamma(weight)[:, None], -1, 1)  # (out, in)
    return q * alpha[:, None]


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

    def int_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        q = torch.round(weight / ternary_gamma(weight)[:, None]).clamp(-1, 1)
        return q.to(torch.int8), {"alpha": params["alpha"]}

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        """Plus and minus bit-planes against 8-bit activations (bit-serial popcount)."""
        q, scales = layer.int_weight()
        bias = None if layer.bias is None else layer.bias.detach()
        return BitSerialLinear.from_int(q, "ternary", scales["alpha"], bias, self)

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        return FakeQuantLinear.from_quant_linear(layer)

    def n_scales(self, in_features: int, out_features: int) -> int:
        return out_features  # alpha


QUANTIZERS.add("bitnet", TernaryConfig())
