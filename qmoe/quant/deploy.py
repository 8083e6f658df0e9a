"""Turn a trained model into the function actually deployed.

Every :class:`~qmoe.quant.layers.QuantLinear` is replaced by its config's deployed form, then
every ``nn.Sequential`` of packed layers of one kind (an expert's MLP) is fused into one
:class:`~qmoe.quant.fused.PackedMLP` (one compiled call per expert):

=================  ===========================================  ============================
config             deployed layer                               ``form``
=================  ===========================================  ============================
fp32               ``nn.Linear``                                ``torch-fp32``
q16                :class:`FakeQuantLinear` (16-bit grid as     ``torch-fakequant-q16``
                   float32, 8-bit activation fake-quant)
q4, q8, ptq8       :class:`Int8Linear` (int8 x int8 -> int32)   ``numba-int8-dot``
q1, q2, bitnet     :class:`BitSerialLinear` (weight bit-planes  ``numba-bitserial-popcount``
                   x int8 activations: table lookups with
                   AVX-512 BW, else AND + popcount)
binary             :class:`BinaryPackedLinear` (XNOR + popcount) ``numba-xnor-popcount``
=================  ===========================================  ============================

``deploy(model, reference=True)`` gives instead the float *reference* forms, which compute
the same quantized values with float torch ops (the QAT eval forward for q{k} and bitnet;
the int8-rounded weights with 8-bit activations for ptq8; float ±1 matrices for binary).
The integer forms' dot products equal the reference's integers exactly; their outputs
differ from it only by float32 rounding (the tests check both, and equal predictions).
"""

from __future__ import annotations

import copy

from torch import nn

from qmoe.quant.layers import QuantLinear
from qmoe.quant.fused import fuse_mlps

#: ``form`` of a plain float ``nn.Linear`` that no quantizer produced (e.g. a router).
PLAIN_FORM = "torch-fp32"


def deploy(model: nn.Module, *, reference: bool = False) -> nn.Module:
    """A deployed copy of ``model``: deep copy, eval mode, no gradients, every
    :class:`QuantLinear` replaced by its deployed form and MLPs of packed layers fused.
    ``model`` itself is untouched.

    Args:
        model: any module (or a single :class:`QuantLinear`).
        reference: build the float reference forms instead of the integer/packed ones.

    Returns:
        The deployed module (inference only: a Dropout inside a fused MLP is dropped).

    Raises:
        QmoeError: numba is missing (packed forms only).
    """
    deployed = copy.deepcopy(model)
    if isinstance(deployed, QuantLinear):
        deployed = _deploy_linear(deployed, reference)
    else:
        _replace_quant_linears(deployed, reference)
        if not reference:
            deployed = fuse_mlps(deployed)
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
