"""Turn a trained model into the function actually deployed.

Every :class:`~qmoe.quant.layers.QuantLinear` is replaced by its config's deployed layer (a
torch wrapper over a canonical :class:`qmoe.native.Layer`, :mod:`qmoe.quant.packed`), then every
``nn.Sequential`` of deployed layers (an expert's MLP) is fused into one
:class:`~qmoe.quant.fused.PackedMLP` (one native call per expert). A model that knows its own
deployed form (``deploy_native(seed)``: the mixture, whose router, experts and curiosity run as
one :class:`qmoe.native.NativeMixture`) provides it itself.

``deploy(model, reference=True)`` gives instead the float *reference* forms, which compute
the same quantized values with float torch ops (the QAT eval forward for q{k} and bitnet;
the int8-rounded weights with 8-bit activations for ptq8; float ±1 matrices for binary).
The integer forms' dot products equal the reference's integers exactly; their outputs differ
from it only by float32 rounding (the tests check both, and equal predictions).
"""

from __future__ import annotations

import copy

from torch import nn

from qmoe.quant.fused import fuse_mlps
from qmoe.quant.layers import QuantLinear

#: ``form`` of a plain float ``nn.Linear`` that no quantizer produced.
PLAIN_FORM = "torch-fp32"


def deploy(model: nn.Module, *, reference: bool = False, seed: int = 0) -> nn.Module:
    """A deployed copy of ``model``: eval mode, no gradients, every :class:`QuantLinear`
    replaced by its deployed form and MLPs fused. ``model`` itself is untouched.

    Args:
        model: any module (or a single :class:`QuantLinear`).
        reference: build the float reference forms instead of the native ones.
        seed: the deployment's own randomness (the mixture's frozen Monte-Carlo dropout
            masks, :func:`qmoe.native.frozen_masks`); a trial passes its seed.

    Returns:
        The deployed module (inference only: a Dropout inside a fused MLP is dropped).

    Raises:
        QmoeError: numba is missing (native forms only).
    """
    native = getattr(model, "deploy_native", None)
    if native is not None and not reference:
        return native(seed=seed)
    deployed = copy.deepcopy(model)
    if isinstance(deployed, QuantLinear):
        deployed = _deploy_linear(deployed, reference)
    else:
        _replace_quant_linears(deployed, reference)
        if not reference:
            deployed = fuse_mlps(deployed)
            # a model class may name its deployed form (an expert: called without hook dispatch)
            deployed_class = type(deployed).__dict__.get("deployed_class")
            if deployed_class is not None:
                deployed.__class__ = deployed_class
    deployed.eval()
    deployed.requires_grad_(False)
    return deployed


def _deploy_linear(layer: QuantLinear, reference: bool) -> nn.Module:
    if reference:
        return layer.config.reference_linear(layer)
    return layer.config.deploy_linear(layer)


def _replace_quant_linears(module: nn.Module, reference: bool) -> None:
    for name, child in module.named_children():
        if isinstance(child, QuantLinear):
            setattr(module, name, _deploy_linear(child, reference))
        else:
            _replace_quant_linears(child, reference)


def deploy_form(model: nn.Module) -> str:
    """The distinct ``form`` tags of a model's layers, in order of appearance, comma-joined.

    Plain ``nn.Linear`` layers without a tag count as ``torch-fp32``; QuantLinears of a
    model not deployed yet count as ``qat-<name>`` (e.g. ``"qat-q4"``).
    """
    forms: list[str] = []
    for module in model.modules():
        if hasattr(module, "form"):
            tags = str(module.form).split(",")
        elif isinstance(module, QuantLinear):
            tags = [f"qat-{module.config.name}"]
        elif type(module) is nn.Linear:
            tags = [PLAIN_FORM]
        else:
            continue
        forms += [t for t in tags if t not in forms]
    return ",".join(forms)
