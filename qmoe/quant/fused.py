"""The fused deployed MLP: every layer of an expert in one compiled call.

:func:`fuse_mlps` replaces each ``nn.Sequential`` of packed layers of one family
(:mod:`qmoe.quant.packed`, with ReLU and, in eval, Dropout between them) by a
:class:`PackedMLP`, so batch 1 crosses from Python into machine code once per expert, not once
per layer.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import Tensor, nn

from qmoe.errors import QmoeError
from qmoe.quant.packed import PackedLinear, aligned, run_driver


class PackedMLP(nn.Module):
    """A whole MLP of packed layers of one family, run in one compiled call.

    Equal, for every input, to running its layers one by one with the ReLUs in between
    (the same kernel code computes both). Dropout is left out: deployed models are in eval.

    Args:
        layers: packed layers of one class, chained (``out_features`` = next ``in_features``).
        relu: per layer, whether a ReLU follows it.
    """

    def __init__(self, layers: Sequence[PackedLinear], relu: Sequence[bool]) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)
        self.relu = tuple(bool(r) for r in relu)
        first = layers[0]
        if any(type(m) is not type(first) or m.params[4] != first.params[4] for m in layers):
            raise QmoeError("a PackedMLP takes layers of one class and one weight layout")
        self.form = first.form
        self.in_features, self.out_features = first.in_features, layers[-1].out_features
        meta, fps, ws = [], [], []
        w_off = f_off = 0
        for layer, r in zip(layers, self.relu):
            meta += [layer.in_features, layer.out_features, w_off, f_off, int(r), *layer.params]
            ws.append(layer.w)
            fps.append(layer.fp)
            w_off += layer.w.size
            f_off += layer.fp.size
        self.meta = np.array(meta, np.int64)
        self.fp = np.concatenate(fps)
        self.w = aligned(np.concatenate(ws))
        self._driver, self._driver_at = first._driver, first._driver_at

    @classmethod
    def from_sequential(cls, seq: nn.Sequential) -> PackedMLP | None:
        """The fused form of ``seq`` if it is ``Linear [ReLU] [Dropout] Linear ...`` with packed
        layers of one class; None otherwise (the Sequential is then left as it is)."""
        layers: list[PackedLinear] = []
        relu: list[bool] = []
        for m in seq:
            if isinstance(m, PackedLinear):
                if layers and (type(m) is not type(layers[0]) or m.in_features != layers[-1].out_features
                               or m.params[4] != layers[0].params[4]):  # one weight layout
                    return None
                layers.append(m)
                relu.append(False)
            elif isinstance(m, nn.ReLU) and layers and not relu[-1]:
                relu[-1] = True
            elif not (isinstance(m, (nn.Dropout, nn.Identity)) and layers):
                return None
        return cls(layers, relu) if layers else None

    def forward(self, x: Tensor) -> Tensor:
        """float32 (..., N) outputs of inputs ``x`` (..., D) of any float dtype."""
        return run_driver(self, x)

    __call__ = forward  # no hook dispatch, as :class:`PackedLinear`

    def extra_repr(self) -> str:
        return f"form={self.form}, relu={self.relu}"


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
