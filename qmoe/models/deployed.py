"""The deployed mixture: a torch wrapper over one :class:`qmoe.native.NativeMixture`.

Its experts are deployed as single models are (:func:`qmoe.quant.deploy`), its router's float
layers become fp32 native layers, and the router's Monte-Carlo dropout is frozen: the M masks
are drawn once from the deploy seed (:func:`qmoe.native.frozen_masks`) and used for every
sample, so the deployed mixture is deterministic and a torch-free runtime reproduces it from
the stored masks. Everything -- experts, router passes, curiosity and the top-k combination --
runs in one compiled call per batch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from qmoe.models.moe import MoEOutput
from qmoe.quant import deploy, get_quantizer
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import PackedLinear, packed_linear

if TYPE_CHECKING:
    from qmoe.models.moe import MixtureOfExperts


class DeployedMixture(nn.Module):
    """The deployed form of a :class:`~qmoe.models.MixtureOfExperts`; returns :class:`MoEOutput`.

    Attributes:
        native: the :class:`qmoe.native.NativeMixture` it runs (its canonical ``experts`` and
            ``router`` are what an export stores).
        experts: the deployed experts (for :mod:`~qmoe.quant.size` and ``deploy_form``).
        router: the router's deployed fp32 layers.
    """

    def __init__(self, moe: MixtureOfExperts, seed: int) -> None:
        from qmoe.native import NativeMixture, Router, frozen_masks

        super().__init__()
        self.names = list(moe.names)
        self.experts = nn.ModuleList(deploy(e) for e in moe.experts)
        fp32 = get_quantizer("fp32")
        fcs = (moe.router.fc1, moe.router.fc2, moe.router.fc3)
        self.router = nn.ModuleList(packed_linear("fp32", fc.weight, fc.bias, fp32) for fc in fcs)
        chains = []
        for e in self.experts:
            net = e._modules["net"]
            if not isinstance(net, PackedMLP):
                raise TypeError(f"expert {e.quantizer}: its MLP did not deploy to one native call")
            chains.append(net.native.layers)
        width = moe.router.fc1.out_features
        router = Router(layers=[_with_relu(m, r) for m, r in zip(self.router, (True, True, False))],
                        masks=frozen_masks(seed, moe.mc_samples, width, moe.router.dropout),
                        temperature=moe.temperature)
        self.native = NativeMixture(chains, router, alpha=moe.alpha, top_k=moe.top_k,
                                    curiosity=moe.curiosity)
        self.form = ",".join(dict.fromkeys(e._modules["net"].form for e in self.experts)) + ",numba-fp32"

    @property
    def nbytes_read(self) -> int:
        """Bytes of weights, scales, biases and masks one inference reads."""
        return self.native.nbytes

    def forward(self, z: Tensor) -> MoEOutput:
        """The mixture on ``z`` (B, D), in one native call; tensors batch first."""
        native = self.native
        rows = z.shape[0]
        out = np.empty((rows + 1, native.width), np.float32)
        if z.dim() == 2 and z.dtype is torch.float32 and z.is_cpu and z.is_contiguous() and z.shape[1] == native.in_dim:
            native.run_at(z.data_ptr(), rows, out)  # read in place
        else:
            if z.dim() != 2 or z.shape[1] != native.in_dim:
                raise ValueError(f"input has shape {tuple(z.shape)}; the mixture takes (batch, {native.in_dim})")
            x = np.ascontiguousarray(z.detach().to("cpu", torch.float32).numpy())  # alive for the call
            native.run_at(x.ctypes.data, rows, out)
        t = torch.from_numpy(out)
        c, n = native.n_classes, native.n_experts
        return MoEOutput(logits=t[:rows, :c], p=t[:rows, c: c + n], p_cur=t[:rows, c + n: c + 2 * n],
                         uncertainty=t[:rows, c + 2 * n: c + 3 * n], kl=t[:rows, c + 3 * n: c + 4 * n],
                         selected=t[:rows, c + 4 * n:].to(torch.int64), lb_loss=t[rows, 0])

    __call__ = forward  # no hook dispatch, as the deployed layers


def _with_relu(layer: PackedLinear, relu: bool):  # noqa: ANN202
    import dataclasses

    return dataclasses.replace(layer.native_layer, relu=relu)
