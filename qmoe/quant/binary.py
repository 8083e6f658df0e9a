"""``binary``: post-training binarisation evaluated with packed bits and popcount.

The layer trains in float. At deployment (DESIGN §3, popcount):

- inputs:  ``x_b = +1 where x > tau else -1`` — ``tau`` (default 0.05) thresholds the
  *inputs*, which are standardised features (first layer) or ReLU outputs (later layers);
- weights: ``w_b = +1 where W >= 0 else -1`` — binarised by *sign*, not by ``tau``: trained
  weights have magnitude ~0.02, so an absolute 0.05 threshold would make nearly all of them -1;
- ``dot = d - 2 * popcount(x_b XOR w_b)`` on packed uint64 words (the native ``binary``
  layer, :mod:`qmoe.quant.packed`);
- ``y = dot * (alpha_j * beta) + b_j`` with ``alpha_j = mean|W_j|`` per output channel and
  ``beta = mean|x|`` per sample (float32, summed left to right).

:func:`binary_float_reference` computes the same from float ±1 matrices with a torch matmul;
the packed layer equals it exactly: the integer dot is exact in both, the thresholding is
the same float32 comparison and ``beta`` comes from the same function (the kernels' own).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from qmoe.errors import ConfigError
from qmoe.quant.config import QUANTIZERS, QuantConfig
from qmoe.quant.layers import QuantLinear
from qmoe.quant.packed import packed_linear
from qmoe.quant.primitives import sign_pm1


def binary_alpha(weight: Tensor) -> Tensor:
    """Per-output-channel weight scale ``mean|W_j|``, shape (out,), float32."""
    return weight.detach().float().abs().mean(dim=1)


def binary_input_bits(x: np.ndarray, tau: float) -> np.ndarray:
    """``x > tau`` as bools (+1 bits), compared in float32 (``tau`` is rounded to float32)."""
    return x > np.float32(tau)


def binary_rescale(dot: np.ndarray, x: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``y = dot * (alpha_j * beta) + b_j`` with ``beta = mean|x|`` per sample, in float32.

    The float reference's rescale; the packed kernel does the same float32 operations in the
    same order (and the same ``beta``), so both round identically.

    Args:
        dot: (B, N) integer-valued ±1 dot products (exact in any dtype below 2^24).
        x: (B, D) float32 inputs (for ``beta``).
        alpha: (N,) float32 per-channel weight scale.
        bias: (N,) float32 or None.

    Returns:
        (B, N) float32.
    """
    from qmoe.native.kernels import load

    beta = load().drivers.mean_abs_rows(np.ascontiguousarray(x, dtype=np.float32))  # (B, 1)
    y = dot.astype(np.float32)  # (B, N)
    y *= beta * alpha
    if bias is not None:
        y += bias
    return y


def _as_rows(x: Tensor, d: int) -> np.ndarray:
    return x.detach().reshape(-1, d).to(device="cpu", dtype=torch.float32).numpy()  # (B, D)


def binary_float_reference(layer_weight: Tensor, bias: Tensor | None, x: Tensor, tau: float) -> Tensor:
    """The binary layer computed from float ±1 matrices with a torch matmul.

    Args:
        layer_weight: (N, D) float weight (binarised by sign).
        bias: (N,) float bias or None.
        x: (..., D) inputs (binarised with ``x > tau``).
        tau: input threshold.

    Returns:
        (..., N) float32 outputs; the deployed layer returns exactly the same.
    """
    n, d = layer_weight.shape
    x2 = _as_rows(x, d)  # (B, D)
    x_b = torch.from_numpy(np.where(binary_input_bits(x2, tau), 1.0, -1.0))  # (B, D) float64
    w_b = sign_pm1(layer_weight.detach().cpu().double())  # (N, D)
    dot = (x_b @ w_b.T).numpy()  # (B, N), exact integers in float64
    alpha = binary_alpha(layer_weight).cpu().numpy()
    b = None if bias is None else bias.detach().cpu().float().numpy()
    y = binary_rescale(dot, x2, alpha, b)
    return torch.from_numpy(y).reshape(*x.shape[:-1], n)


class BinaryFloatLinear(nn.Module):
    """The float reference of a ``binary`` layer as a module (:func:`binary_float_reference`)."""

    form = "torch-float-binary"

    def __init__(self, weight: Tensor, bias: Tensor | None, tau: float, config: QuantConfig) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.tau = float(tau)
        self.config = config
        self.register_buffer("weight", weight.detach().clone())
        self.register_buffer("bias", None if bias is None else bias.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        return binary_float_reference(self.weight, self.bias, x, self.tau)


@dataclass(frozen=True, kw_only=True)
class BinaryConfig(QuantConfig):
    """``binary``: float training, then binarised inputs and weights with packed popcount.

    Args:
        tau: threshold on the layer *inputs* (``x_b = x > tau``); weights use their sign.

    Raises:
        ConfigError: ``tau`` is not a finite number.
    """

    tau: float = 0.05
    post_training: ClassVar[bool] = True

    def __post_init__(self) -> None:
        if isinstance(self.tau, bool) or not isinstance(self.tau, (int, float)) or not math.isfinite(self.tau):
            raise ConfigError(f"BinaryConfig: tau={self.tau!r} must be a finite number (e.g. 0.05)")

    @property
    def name(self) -> str:
        return "binary"

    @property
    def weight_bits(self) -> float:
        return 1.0

    def int_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> tuple[Tensor, dict[str, Tensor]]:
        return sign_pm1(weight).to(torch.int8), {"alpha": binary_alpha(weight)}

    def deployed_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        return sign_pm1(weight) * binary_alpha(weight)[:, None].to(weight.dtype)

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        bias = None if layer.bias is None else layer.bias.detach()
        weight = layer.weight.detach()
        return packed_linear("binary", sign_pm1(weight), bias, self, rescale=binary_alpha(weight), tau=self.tau)

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        return BinaryFloatLinear(layer.weight, layer.bias, self.tau, self)

    def n_scales(self, in_features: int, out_features: int) -> int:
        return out_features  # alpha


QUANTIZERS.add("binary", BinaryConfig())
