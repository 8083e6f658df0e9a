"""The expert: an MLP ``D -> hidden... -> C`` whose Linear layers use one quantizer."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from qmoe.models.dropout import Dropout
from qmoe.quant import QuantLinear, get_quantizer


class Expert(nn.Module):
    """MLP with ReLU and dropout; the quantizer is a parameter, not a different class.

    Args:
        in_dim: embedding dimension D.
        n_classes: number of classes C.
        hidden: hidden widths, e.g. ``(640, 320)``.
        quantizer: a registered quantizer name (``q4``) or config; applies to every Linear.
        dropout: dropout probability after each hidden ReLU.
    """

    def __init__(self, in_dim: int, n_classes: int, hidden: Sequence[int], quantizer: str,
                 dropout: float) -> None:
        super().__init__()
        self.config = get_quantizer(quantizer)
        self.quantizer = self.config.name
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers += [QuantLinear(width, h, self.config), nn.ReLU(), Dropout(dropout)]
            width = h
        layers.append(QuantLinear(width, n_classes, self.config))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # ``self._modules`` rather than ``self.net``: a submodule attribute goes through
        # nn.Module.__getattr__ (~0.8 µs), a tenth of a deployed 1-bit expert's batch-1 call
        return self._modules["net"](x)  # (B, C) logits


class DeployedExpert(Expert):
    """An expert after :func:`qmoe.quant.deploy` (its MLP one native call): called without
    ``nn.Module``'s hook dispatch, ~2 µs of a 1-bit expert's ~18 µs batch-1 call, and straight
    into its MLP's bound function (deployed modules are inference functions; hooks on them are
    not supported)."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._run(x)

    def _run(self, x: torch.Tensor) -> torch.Tensor:
        """The first call: binds the MLP's own function (a fused MLP's ``bound()``, ~0.3 µs
        less than calling the module) in the instance, where it shadows this method; the MLP
        is not looked up again (replacing ``net`` after the first call is not supported)."""
        net = self._modules["net"]
        bound = getattr(net, "bound", None)
        run = self.__dict__["_run"] = bound() if bound is not None else net
        return run(x)

    def __getstate__(self) -> dict:
        state = super().__getstate__()
        state.pop("_run", None)  # a copy binds its own MLP
        return state


Expert.deployed_class = DeployedExpert  # what qmoe.quant.deploy turns a fused expert into
