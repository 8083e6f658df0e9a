"""The fused deployed MLP: every layer of an expert in one native call.

:func:`fuse_mlps` replaces each ``nn.Sequential`` of deployed layers (:mod:`qmoe.quant.packed`,
with ReLU and, in eval, Dropout between them) by a :class:`PackedMLP`, a torch wrapper over one
:class:`qmoe.native.NativeMLP`: batch 1 crosses from Python into machine code once per expert.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from torch import Tensor, nn

from qmoe.quant.packed import BoundRun, PackedLinear


class PackedMLP(BoundRun, nn.Module):
    """A whole MLP of deployed layers, run in one native call.

    Equal, for every input, to running its layers one by one with the ReLUs in between
    (the same kernel code computes both). Dropout is left out: deployed models are in eval.

    Args:
        layers: deployed layers, chained (``out_features`` = next ``in_features``).
        relu: per layer, whether a ReLU follows it.
    """

    def __init__(self, layers: Sequence[PackedLinear], relu: Sequence[bool]) -> None:
        from qmoe.native import NativeMLP

        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.relu = tuple(bool(r) for r in relu)
        self.native = NativeMLP([dataclasses.replace(m.native_layer, relu=r) for m, r in zip(layers, self.relu)])
        self.form = ",".join(dict.fromkeys(m.form for m in layers))
        self.in_features, self.out_features = self.native.in_dim, self.native.out_dim

    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> PackedMLP | None:
        """The fused form of ``seq`` if it is ``Linear [ReLU] [Dropout] Linear ...`` of deployed
        layers; None otherwise (the Sequential is then left as it is)."""
        layers: list[PackedLinear] = []
        relu: list[bool] = []
        for m in seq:
            if isinstance(m, PackedLinear):
                if layers and m.in_features != layers[-1].out_features:
                    return None
                layers.append(m)
                relu.append(False)
            elif isinstance(m, nn.ReLU) and layers and not relu[-1]:
                relu[-1] = True
            elif not (isinstance(m, (nn.Dropout, nn.Identity)) and layers):
                return None
        return cls(layers, relu) if layers else None

    @property
    def nbytes_read(self) -> int:
        """Bytes of weights, scales and biases one inference reads."""
        return self.native.nbytes

    def _native(self):  # noqa: ANN202
        return self.native

    def forward(self, x: Tensor) -> Tensor:
        """float32 (..., N) outputs of inputs ``x`` (..., D) of any float dtype."""
        return self._run(x)

    __call__ = forward  # no hook dispatch, as :class:`PackedLinear`

    def extra_repr(self) -> str:
        return f"form={self.form}, relu={self.relu}, layouts={self.native.layouts}"


def fuse_mlps(module: nn.Module) -> nn.Module:
    """Replace every fusable ``nn.Sequential`` in ``module`` (or ``module`` itself) by a
    :class:`PackedMLP`; returns the module to use in place of ``module``."""
    if isinstance(module, nn.Sequential):
        fused = PackedMLP.from_sequential(module)
        if fused is not None:
            return fused
    for name, child in module.named_children():
        new = fuse_mlps(child)
        if new is not child:
            setattr(module, name, new)
    return module
