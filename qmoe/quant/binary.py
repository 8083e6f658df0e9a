"""``binary``: post-training binarisation evaluated with packed bits and popcount.

The layer trains in float. At deployment (DESIGN §3, popcount):

- inputs:  ``x_b = +1 where x > tau else -1`` — ``tau`` (default 0.05) thresholds the
  *inputs*, which are standardised features (first layer) or ReLU outputs (later layers);
- weights: ``w_b = +1 where W >= 0 else -1`` — binarised by *sign*, not by ``tau``: trained
  weights have magnitude ~0.02, so an absolute 0.05 threshold would make nearly all of them -1;
- ``dot = d - 2 * popcount(x_b XOR w_b)`` on uint64 words (``np.bitwise_count``);
- ``y = dot * (alpha_j * beta) + b_j`` with ``alpha_j = mean|W_j|`` per output channel and
  ``beta = mean|x|`` per sample (float32).

:func:`binary_float_reference` computes the same from float ±1 matrices with a torch matmul;
:class:`BinaryPackedLinear` equals it exactly: the integer dot is exact in both, and the
input thresholding and the float32 rescaling are shared functions.
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
from qmoe.quant.primitives import pack_bits, popcount_dot, sign_pm1

FORM = "numpy-packed-popcount"


def binary_alpha(weight: Tensor) -> Tensor:
    """Per-output-channel weight scale ``mean|W_j|``, shape (out,), float32."""
    return weight.detach().float().abs().mean(dim=1)


def binary_input_bits(x: np.ndarray, tau: float) -> np.ndarray:
    """``x > tau`` as bools (+1 bits), compared in float32 (``tau`` is rounded to float32)."""
    return x > np.float32(tau)


def binary_rescale(dot: np.ndarray, x: np.ndarray, alpha: np.ndarray, bias: np.ndarray | None) -> np.ndarray:
    """``y = dot * (alpha_j * beta) + b_j`` with ``beta = mean|x|`` per sample, in float32.

    Shared by the packed layer and the float reference so both round identically.

    Args:
        dot: (B, N) integer-valued ±1 dot products (exact in any dtype below 2^24).
        x: (B, D) float32 inputs (for ``beta``).
        alpha: (N,) float32 per-channel weight scale.
        bias: (N,) float32 or None.

    Returns:
        (B, N) float32.
    """
    beta = np.add.reduce(np.abs(x), axis=-1, keepdims=True) / np.float32(x.shape[-1])  # (B, 1)
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
        (..., N) float32 outputs; :class:`BinaryPackedLinear` returns exactly the same.
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


class BinaryPackedLinear(nn.Module):
    """Deployed ``binary`` layer: packed uint64 weight bits, XOR + popcount in numpy (CPU).

    ``tau`` thresholds the inputs (``x > tau``, standardised features or ReLU outputs); the
    weights are binarised by sign, ``W >= 0`` (see the module doc for why).

    Buffers:
        w_packed_t: (ceil(D/64), N) int64: the uint64 words of the weight rows, word-major.
        alpha: (N,) float32 per-channel scale.
        bias: (N,) float32, or None.
    """

    form = FORM

    def __init__(self, weight: Tensor, bias: Tensor | None, tau: float, config: QuantConfig | None = None) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.tau = float(tau)
        self.config = config if config is not None else BinaryConfig(tau=tau)
        w_words = pack_bits((weight.detach() >= 0).cpu().numpy())  # (N, W) uint64
        w_words_t = np.ascontiguousarray(w_words.T).view(np.int64)  # (W, N), int64 for torch
        self.register_buffer("w_packed_t", torch.from_numpy(w_words_t))
        self.register_buffer("alpha", binary_alpha(weight).cpu())
        self.register_buffer("bias", None if bias is None else bias.detach().float().cpu())

    def forward(self, x: Tensor) -> Tensor:
        d = self.in_features
        x2 = _as_rows(x, d)  # (B, D) float32
        x_words = pack_bits(binary_input_bits(x2, self.tau))  # (B, W) uint64
        w_words_t = self.w_packed_t.numpy().view(np.uint64)  # (W, N)
        dot = popcount_dot(x_words, w_words_t, d)  # (B, N) int32, exact
        bias = None if self.bias is None else self.bias.numpy()
        y = binary_rescale(dot, x2, self.alpha.numpy(), bias)
        return torch.from_numpy(y).reshape(*x.shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, tau={self.tau}, form={self.form}"


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
        return BinaryPackedLinear(layer.weight, layer.bias, self.tau, config=self)

    def n_scales(self, in_features: int, out_features: int) -> int:
        return out_features  # alpha


QUANTIZERS.add("binary", BinaryConfig())
