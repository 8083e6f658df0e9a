"""BitLinear ``q{k}``, k in {1, 2, 4, 8, 16}: a k-bit weight grid per layer, 8-bit activations.

Per layer (DESIGN §3): ``mu = mean(W)``, ``s = max|W - mu| / (2^(k-1) - 1)``,
``Wq = clip(round((W - mu) / s), -2^(k-1), 2^(k-1) - 1) * s``; for k = 1
``Wq = sign(W - mu) * mean|W - mu|`` with ``sign(0) = +1`` (exactly two levels). The weight
stays centred: ``mu`` is not added back. q16 is a true 16-bit integer grid (``Wq / s`` are
int16 values), not float32. Activations are fake-quantized to 8 bits per sample.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor, nn

from qmoe.errors import ConfigError
from qmoe.quant.config import QUANTIZERS, QuantConfig
from qmoe.quant.layers import FakeQuantLinear, QuantLinear
from qmoe.quant.packed import BitSerialLinear, Int8Linear
from qmoe.quant.primitives import EPS, clip_round_ste, sign_pm1, ste

#: Bit widths BitLinear supports.
BITLINEAR_BITS = (1, 2, 4, 8, 16)


def bitlinear_weight(weight: Tensor, bits: int) -> Tensor:
    """Fake-quantize a layer's weight to the centred k-bit grid, with STE (see module doc).

    Args:
        weight: (out, in) float weight.
        bits: k in :data:`BITLINEAR_BITS`.

    Returns:
        (out, in) tensor with at most 2^k distinct values; gradient identity w.r.t. ``weight``
        (zeroed where the value was clipped).
    """
    mu = weight.detach().mean()
    centred = weight - mu  # (out, in)
    if bits == 1:
        mean_abs = centred.detach().abs().mean()
        return ste(centred, sign_pm1(centred.detach()) * mean_abs)
    qmax = 2 ** (bits - 1) - 1
    scale = centred.detach().abs().amax().clamp_min(EPS) / qmax
    return clip_round_ste(centred / scale, -qmax - 1, qmax) * scale


def bitlinear_int(weight: Tensor, bits: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The integer grid of :func:`bitlinear_weight`: ``(q, {"scale": s, "mu": mu})``.

    ``q`` is int8 (k <= 8) or int16 (k = 16), in ``[-2^(k-1), 2^(k-1) - 1]`` (``{-1, +1}`` for
    k = 1, where ``scale = mean|W - mu|``); ``q * scale`` equals ``bitlinear_weight`` exactly.
    """
    mu = weight.mean()
    centred = weight - mu
    dtype = torch.int16 if bits > 8 else torch.int8
    if bits == 1:
        return sign_pm1(centred).to(dtype), {"scale": centred.abs().mean(), "mu": mu}
    qmax = 2 ** (bits - 1) - 1
    scale = centred.abs().amax().clamp_min(EPS) / qmax
    q = torch.round(centred / scale).clamp(-qmax - 1, qmax)
    return q.to(dtype), {"scale": scale, "mu": mu}


@dataclass(frozen=True, kw_only=True)
class BitLinearConfig(QuantConfig):
    """``q{bits}``: k-bit BitLinear weights, 8-bit per-sample activations, trained with STE.

    Args:
        bits: weight width, one of 1, 2, 4, 8, 16.

    Raises:
        ConfigError: ``bits`` is not one of those.
    """

    bits: int
    activation_bits: ClassVar[int | None] = 8

    def __post_init__(self) -> None:
        if not isinstance(self.bits, int) or isinstance(self.bits, bool) or self.bits not in BITLINEAR_BITS:
            allowed = ", ".join(map(str, BITLINEAR_BITS))
            raise ConfigError(f"BitLinearConfig: bits={self.bits!r} is not supported; use one of {allowed}")

    @property
    def name(self) -> str:
        return f"q{self.bits}"

    @property
    def weight_bits(self) -> float:
        return float(self.bits)

    def fake_quant_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return bitlinear_weight(weight, self.bits)

    def int_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return bitlinear_int(weight, self.bits)

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        """q1: one bit-plane, q2: two bit-planes (bit-serial popcount); q4, q8: int8 kernel;
        q16: float (its 16-bit grid as float32 weights, 8-bit activation fake-quant)."""
        if self.bits == 16:
            return FakeQuantLinear.from_quant_linear(layer)
        q, scales = layer.int_weight()
        rscale = scales["scale"].float().expand(layer.out_features)  # (N,) one scale per layer
        bias = None if layer.bias is None else layer.bias.detach()
        if self.bits <= 2:
            kind = "pm1" if self.bits == 1 else "int2"
            return BitSerialLinear.from_int(q, kind, rscale, bias, self)
        return Int8Linear(q, rscale, bias, self)

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        return FakeQuantLinear.from_quant_linear(layer)

    def n_scales(self, in_features: int, out_features: int) -> int:
        return 2  # s and mu, per layer


for _bits in BITLINEAR_BITS:
    QUANTIZERS.add(f"q{_bits}", BitLinearConfig(bits=_bits))
