"""Models the quantizer tests share."""

from __future__ import annotations

import torch
from torch import nn

from qmoe.quant import QuantLinear


def quant_mlp(name: str, dims: tuple[int, ...] = (70, 40, 30, 5), seed: int = 0,
              dropout: float = 0.2) -> nn.Sequential:
    """QuantLinear layers of quantizer ``name`` between ``dims``, ReLU and ``dropout`` between
    them, seeded weights (train mode: call ``.eval()`` for inference)."""
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers += [nn.ReLU(), nn.Dropout(dropout)]
        layers.append(QuantLinear(a, b, name))
    return nn.Sequential(*layers)
