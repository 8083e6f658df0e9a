"""Turn a trained model into the function actually deployed.

Every :class:`~qmoe.quant.layers.QuantLinear` is replaced by its config's deployed form:

=========  ==========================================  =========================
config     deployed module                             ``form``
=========  ==========================================  =========================
fp32       ``nn.Linear``                               ``torch-fp32``
q1..q16    :class:`FakeQuantLinear` (frozen Wq + 8-bit  ``torch-fakequant-q{k}``
           activation fake-quant, as in training)
bitnet     :class:`FakeQuantLinear`                    ``torch-fakequant-bitnet``
ptq8       ``torch.ao`` dynamic int8 Linear            ``torch-dynamic-int8``
binary     :class:`BinaryPackedLinear`                 ``numpy-packed-popcount``
=========  ==========================================  =========================

The QAT forms compute exactly the eval-mode forward of the trained model.
"""

from __future__ import annotations

import copy

from torch import nn

from qmoe.quant.layers import QuantLinear

#: ``form`` of a plain float ``nn.Linear`` that no quantizer produced (e.g. a router).
PLAIN_FORM = "torch-fp32"


def deploy(model: nn.Module) -> nn.Module:
    """A deployed copy of ``model``: deep copy, eval mode, no gradients, every
    :class:`QuantLinear` replaced by its deployed form. ``model`` itself is untouched.

    Args:
        model: any module (or a single :class:`QuantLinear`).

    Returns:
        The deployed module.
    """
    deployed = copy.deepcopy(model)
    if isinstance(deployed, QuantLinear):
        deployed = deployed.config.deploy_linear(deployed)
    else:
        _replace_quant_linears(deployed)
    deployed.eval()
    deployed.requires_grad_(False)
    return deployed


def _replace_quant_linears(module: nn.Module) -> None:
    for name, child in module.named_children():
        if isinstance(child, QuantLinear):
            setattr(module, name, child.config.deploy_linear(child))
        else:
            _replace_quant_linears(child)


def deploy_form(model: nn.Module) -> str:
    """The distinct ``form`` tags of a model's layers, in order of appearance, comma-joined.

    Plain ``nn.Linear`` layers without a tag count as ``torch-fp32``; QuantLinears of a
    model not deployed yet count as ``qat-<name>`` (e.g. ``"qat-q4"``).
    """
    forms: list[str] = []
    for module in model.modules():
        if hasattr(module, "form"):
            form = str(module.form)
        elif isinstance(module, QuantLinear):
            form = f"qat-{module.config.name}"
        elif type(module) is nn.Linear:
            form = PLAIN_FORM
        else:
            continue
        if form not in forms:
            forms.append(form)
    return ",".join(forms)
