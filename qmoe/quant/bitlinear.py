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

import numpy as np
import torch
from torch import Tensor, nn

from qmoe.errors import ConfigError
from qmoe.quant import qat_kernels, qat_signs
from qmoe.quant.config import QUANTIZERS, QuantConfig
from qmoe.quant.layers import FakeQuantLinear, QuantLinear
from qmoe.quant.packed import packed_linear
from qmoe.quant.primitives import EPS, quant_ste, sign_pm1_

#: Bit widths BitLinear supports.
BITLINEAR_BITS = (1, 2, 4, 8, 16)


def bitlinear_scale(weight: Tensor, bits: int) -> tuple[Tensor, Tensor]:
    """The layer's ``(mu, s)`` (0-dim float32, detached): ``mu = mean(W)``; ``s = max|W - mu| / qmax``,
    or ``s = mean|W - mu|`` for k = 1.

    On float32 CPU weights (numba installed) the means are :mod:`qmoe.quant.qat_kernels`'
    float64 sums in a fixed lane order, rounded once: the same on every x86 CPU, within a
    float32 rounding of the exact mean (torch's float32 ``mean()`` differs from it by its own
    summation error, a few ulp). Elsewhere, torch's ``mean()``.
    """
    w = weight.detach()
    if w.dtype is torch.float32 and w.is_cpu and w.numel() > 0 and qat_kernels.fusable(w.contiguous()):
        mu, scale = _kernel_scale(qat_kernels.as_np(w.contiguous()).reshape(-1), bits)
        return torch.tensor(mu), torch.tensor(scale)
    mu = w.mean()
    if bits == 1:
        return mu, (w - mu).abs_().mean()
    return mu, _range_scale(w, mu, bits)


def _kernel_scale(w: np.ndarray, bits: int, stats: tuple | None = None) -> tuple[np.float32, np.float32]:
    """``(mu, s)`` of a flat float32 weight by the kernels: one pass for the sum, min and max
    (k >= 2; ``s`` from them as :func:`_range_scale`), two passes for k = 1. ``stats``: those
    of ``w`` (:func:`qat_kernels.layer_stats`' values) when already known, saving that pass."""
    n = w.shape[0]
    if bits == 1:
        mu = np.float32((qat_kernels.block_sum(w, 0, n) if stats is None else stats[0]) / n)
        return mu, np.float32(qat_kernels.abs_centred_sum(w, mu) / n)
    total, w_min, w_max = qat_kernels.layer_stats(w) if stats is None else stats
    mu = np.float32(total / n)
    with np.errstate(all="ignore"):  # inf/NaN weights give inf/NaN scales, as torch's
        c_max = np.maximum(np.float32(w_max - mu), np.float32(mu - w_min))
        return mu, np.maximum(c_max, np.float32(EPS)) / np.float32(2 ** (bits - 1) - 1)


def _range_scale(w: Tensor, mu: Tensor, bits: int) -> Tensor:
    """``max|W - mu| / qmax`` (0-dim) without an (out, in) temporary: float subtraction is
    monotone, so the largest ``|fl(w - mu)|`` is ``fl(max W - mu)`` or ``fl(mu - min W)``."""
    w_min, w_max = torch.aminmax(w)
    c_max = torch.maximum(w_max - mu, mu - w_min)
    return c_max.clamp_min(EPS) / (2 ** (bits - 1) - 1)


def _grid(weight: Tensor, mu: Tensor, scale: Tensor, bits: int) -> Tensor:
    """``clip(round((W - mu) / s), -2^(k-1), 2^(k-1) - 1)`` as an integer-valued float tensor.

    The clip never acts: ``|W - mu| <= qmax s`` (to an ulp), so ``|(W - mu) / s|`` stays
    below ``qmax + 1/2`` and rounds into ``[-qmax, qmax]``; the STE therefore needs no mask.
    """
    qmax = 2 ** (bits - 1) - 1
    return (weight - mu).div_(scale).round_().clamp_(-qmax - 1, qmax)  # (out, in), 4 passes


def _fake_quant(weight: Tensor, bits: int) -> tuple[Tensor, None]:
    if not qat_kernels.fusable(weight) or weight.numel() == 0:
        mu, scale = bitlinear_scale(weight, bits)
        if bits == 1:
            return sign_pm1_(weight - mu).mul_(scale), None
        return _grid(weight, mu, scale, bits).mul_(scale), None
    # the same formulas in two passes over W (k = 1: three, the last reading 1/32 of W: qat_signs):
    # the statistics, then the values; in training, the statistics come from the optimizer's pass
    # over W (its last step wrote this W: qat_kernels.adamw_layer_stats, the same bits as
    # layer_stats), saving one pass
    out = torch.empty_like(weight)
    w, o = qat_kernels.as_np(weight).reshape(-1), out.numpy().reshape(-1)
    stats = qat_kernels.cached_stats(weight, "layer")
    if stats is None:
        qat_kernels.request_stats(weight, "layer")
    if bits == 1:  # _kernel_scale's mu and scale, the signs kept as bits for the last pass
        n = w.shape[0]
        mu = np.float32((qat_kernels.block_sum(w, 0, n) if stats is None else stats[0]) / n)
        signs = np.empty(n // qat_signs.LANES, np.uint16)
        qat_signs.signs_from(w, mu, signs, np.float32(qat_signs.centred_signs(w, mu, signs) / n), o)
        return out, None
    mu, scale = _kernel_scale(w, bits, stats)
    qmax = 2 ** (bits - 1) - 1
    qat_kernels.grid(w, mu, scale, np.float32(-qmax - 1), np.float32(qmax), o)
    return out, None


def bitlinear_weight(weight: Tensor, bits: int) -> Tensor:
    """Fake-quantize a layer's weight to the centred k-bit grid, with STE (see module doc).

    Args:
        weight: (out, in) float weight.
        bits: k in :data:`BITLINEAR_BITS`.

    Returns:
        (out, in) tensor with at most 2^k distinct values; gradient identity w.r.t. ``weight``
        (the grid is scaled to the weights' range, so no value ever clips).
    """
    return quant_ste(weight, lambda w: _fake_quant(w, bits))


def bitlinear_int(weight: Tensor, bits: int) -> tuple[Tensor, dict[str, Tensor]]:
    """The integer grid of :func:`bitlinear_weight`: ``(q, {"scale": s, "mu": mu})``.

    ``q`` is int8 (k <= 8) or int16 (k = 16), in ``[-2^(k-1), 2^(k-1) - 1]`` (``{-1, +1}`` for
    k = 1, where ``scale = mean|W - mu|``); ``q * scale`` equals ``bitlinear_weight`` exactly.
    """
    weight = weight.detach()
    mu, scale = bitlinear_scale(weight, bits)
    dtype = torch.int16 if bits > 8 else torch.int8
    if bits == 1:
        return sign_pm1_(weight - mu).to(dtype), {"scale": scale, "mu": mu}
    return _grid(weight, mu, scale, bits).to(dtype), {"scale": scale, "mu": mu}


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
    straight_through: ClassVar[bool] = True  # neither the grid nor the absmax rows clip

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

    def straight_through_weight(self, weight: Tensor) -> Tensor:
        return _fake_quant(weight, self.bits)[0]  # bitlinear_weight's values; its STE is the identity

    def int_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return bitlinear_int(weight, self.bits)

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        """q1: one bit-plane (``pm1``), q2: two (``int2``); q4, q8: ``int8``; q16: ``q16``
        (int16 weights), all against 8-bit activations, one scale ``s`` per layer."""
        q, scales = layer.int_weight()
        kind = {1: "pm1", 2: "int2", 16: "q16"}.get(self.bits, "int8")
        bias = None if layer.bias is None else layer.bias.detach()
        return packed_linear(kind, q, bias, self, rescale=scales["scale"].float())

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        return FakeQuantLinear.from_quant_linear(layer)

    def n_scales(self, in_features: int, out_features: int) -> int:
        return 2  # s and mu, per layer


for _bits in BITLINEAR_BITS:
    QUANTIZERS.add(f"q{_bits}", BitLinearConfig(bits=_bits))
