"""Deployed forms: ptq8 int8, binary XNOR-popcount, bitnet alpha, deploy_form, fusion."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from torch import nn

from qmoe.quant import BinaryConfig, QuantLinear, binary_float_reference, deploy, deploy_form, get_quantizer
from qmoe.quant.binary import binary_alpha
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import PackedLinear, packed_linear
from qmoe.quant.primitives import sign_pm1
from qmoe.quant.ternary import ternary_gamma


def _mlp(name: str, dims: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers.append(nn.ReLU())
        layers.append(QuantLinear(a, b, name))
    return nn.Sequential(*layers).eval()


def _binary(weight: torch.Tensor, bias: torch.Tensor | None, tau: float) -> PackedLinear:
    """The deployed binary layer of float weights: sign bits, alpha = mean|W| per row."""
    return packed_linear("binary", sign_pm1(weight), bias, BinaryConfig(tau=tau), rescale=binary_alpha(weight),
                         tau=tau)


def test_ptq8_uses_int8_kernels_and_stays_close_to_float() -> None:
    model = _mlp("ptq8", (200, 100, 10))
    x = torch.randn(64, 200)
    with torch.no_grad():
        expected = model(x)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the conversion's own warnings are silenced locally
        deployed = deploy(model)
    assert isinstance(deployed, PackedMLP)
    assert all(m.kind == "int8" for m in deployed.layers)
    assert deploy_form(deployed) == "numba-int8-dot"
    got = deployed(x)
    rel = (got - expected).norm() / expected.norm()
    assert rel < 0.05
    assert not torch.equal(got, expected)  # really int8, not a float passthrough


def test_ptq8_keeps_torch_dynamic_int8_for_comparison() -> None:
    from torch.ao.nn.quantized.dynamic import Linear as DynamicQuantizedLinear

    layer = QuantLinear(200, 10, "ptq8")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        torch_form = layer.config.torch_dynamic_linear(layer)
    assert isinstance(torch_form, DynamicQuantizedLinear)
    assert torch_form.form == "torch-dynamic-int8"
    assert torch.equal(torch_form.weight().int_repr(), layer.int_weight()[0])  # the same int8 weights


@pytest.mark.parametrize("d", [1, 63, 64, 65, 70, 200, 1536])
@pytest.mark.parametrize("with_bias", [True, False])
def test_binary_packed_equals_float_reference_exactly(d: int, with_bias: bool) -> None:
    torch.manual_seed(d)
    weight = torch.randn(33, d) * 0.02
    bias = torch.randn(33) * 0.1 if with_bias else None
    layer = _binary(weight, bias, tau=0.05)
    for x in (torch.randn(17, d), torch.relu(torch.randn(5, d)), torch.randn(1, d), torch.randn(d)):
        got = layer(x)
        assert got.shape == (*x.shape[:-1], 33)
        assert torch.equal(got, binary_float_reference(weight, bias, x, 0.05))


def test_binary_follows_the_documented_formula() -> None:
    torch.manual_seed(1)
    weight = torch.rand(4, 10) * 0.03  # all positive, all below tau
    x = torch.randn(3, 10)
    y = _binary(weight, None, tau=0.05)(x)
    x_b = torch.where(x > 0.05, 1.0, -1.0)
    dot = x_b.sum(dim=1, keepdim=True)  # every weight binarises to +1 (by sign, not by tau)
    expected = dot * weight.abs().mean(dim=1)[None, :] * x.abs().mean(dim=1, keepdim=True)
    # beta = mean|x| is summed in another order than torch's (each within (d - 1) u of the
    # true sum, u = 2^-24), and the three factors are multiplied in another order: any
    # machine stays within (2 d + 4) u of the other
    assert torch.allclose(y, expected, rtol=(2 * 10 + 4) * 2.0**-24, atol=0.0)


def test_binary_deploy_of_a_trained_layer() -> None:
    model = _mlp("binary", (100, 64, 7))
    x = torch.randn(9, 100)
    deployed = deploy(model)
    assert isinstance(deployed, PackedMLP)
    assert all(m.kind == "binary" for m in deployed.layers)
    assert deploy_form(deployed) == "numba-xnor-popcount"
    h = binary_float_reference(model[0].weight, model[0].bias, x, 0.05)
    expected = binary_float_reference(model[2].weight, model[2].bias, torch.relu(h), 0.05)
    assert torch.equal(deployed(x), expected)
    custom = deploy(QuantLinear(100, 8, BinaryConfig(tau=0.3)))
    assert custom.config.tau == 0.3 and custom.tau == float(np.float32(0.3))  # compared in float32


def test_bitnet_alpha_is_gamma_and_learned() -> None:
    torch.manual_seed(0)
    layer = QuantLinear(50, 20, "bitnet")
    assert torch.equal(layer.alpha.detach(), ternary_gamma(layer.weight))
    assert "alpha" in dict(layer.named_parameters())
    assert "alpha" in layer.state_dict()
    with torch.no_grad():
        layer.weight.mul_(3.0)
    layer.reset_quant_params()
    assert torch.allclose(layer.alpha.detach(), ternary_gamma(layer.weight))
    layer.reset_parameters()
    assert torch.equal(layer.alpha.detach(), ternary_gamma(layer.weight))
    with torch.no_grad():
        layer.alpha.fill_(2.0)
    q, scales = layer.int_weight()
    assert torch.equal(layer.quantized_weight().detach(), q.float() * 2.0)
    assert torch.equal(scales["alpha"], torch.full((20,), 2.0))


def test_bitnet_formula() -> None:
    torch.manual_seed(0)
    layer = QuantLinear(40, 6, "bitnet")
    w = layer.weight.detach()
    gamma = w.abs().mean(dim=1, keepdim=True)
    expected = torch.clamp(torch.round(w / gamma), -1, 1) * layer.alpha.detach()[:, None]
    assert torch.allclose(layer.quantized_weight().detach(), expected)


def test_quant_linear_accepts_names_and_configs() -> None:
    a = QuantLinear(4, 3, "q4")
    b = QuantLinear(4, 3, get_quantizer("q4"), bias=False)
    assert a.config == b.config and b.bias is None
    assert "config=q4" in repr(a)
    assert deploy(b).bias is None


def test_deploy_form_summarises_mixed_models() -> None:
    model = nn.ModuleDict({
        "router": nn.Linear(8, 2),
        "experts": nn.ModuleList([QuantLinear(8, 3, "bitnet"), QuantLinear(8, 3, "q4"),
                                  QuantLinear(8, 3, "bitnet")]),
    })
    assert deploy_form(model) == "torch-fp32,qat-bitnet,qat-q4"
    deployed = deploy(model)
    assert deploy_form(deployed) == "torch-fp32,numba-bitplane,numba-int8-dot"
    assert deploy_form(deploy(model, reference=True)) == "torch-fp32,torch-fakequant-bitnet,torch-fakequant-q4"
    assert deploy_form(deploy(QuantLinear(8, 3, "fp32"))) == "numba-fp32"
    assert deploy_form(deploy(QuantLinear(8, 3, "fp32"), reference=True)) == "torch-fp32"
    assert deploy_form(deploy(QuantLinear(8, 3, "q16"))) == "numba-int16-dot"


def test_fusion_takes_whole_mlps_of_deployed_layers() -> None:
    torch.manual_seed(0)
    mlp = nn.Sequential(QuantLinear(70, 40, "q1"), nn.ReLU(), nn.Dropout(0.3), QuantLinear(40, 5, "q1"))
    fused = deploy(mlp)
    assert isinstance(fused, PackedMLP) and fused.relu == (True, False)
    assert all(m.kind == "pm1" for m in fused.layers)
    mixed = nn.Sequential(QuantLinear(70, 40, "q1"), nn.ReLU(), QuantLinear(40, 5, "q8"))
    fused_mixed = deploy(mixed)  # kinds may differ: one native call runs every layout
    assert isinstance(fused_mixed, PackedMLP) and fused_mixed.form == "numba-bitplane,numba-int8-dot"
    x = torch.randn(6, 70)
    assert torch.equal(fused_mixed(x), deploy(mixed[2])(torch.relu(deploy(mixed[0])(x))))
    other = nn.Sequential(QuantLinear(70, 40, "q8"), nn.Tanh(), QuantLinear(40, 5, "q8"))
    assert isinstance(deploy(other), nn.Sequential)  # a non-ReLU activation is not fused


def test_a_deployed_expert_is_called_without_hook_dispatch() -> None:
    from qmoe.models import Expert
    from qmoe.models.expert import DeployedExpert

    torch.manual_seed(0)
    expert = Expert(70, 5, (40,), "q1", 0.1)
    deployed = deploy(expert)
    assert type(deployed) is DeployedExpert and isinstance(deployed, Expert)
    assert type(expert) is Expert  # the trained model is untouched
    x = torch.randn(6, 70)
    calls: list[int] = []
    deployed.register_forward_hook(lambda *_: calls.append(1))
    assert torch.equal(deployed(x), deployed.forward(x)) and not calls  # no nn.Module.__call__
    assert type(deploy(expert, reference=True)) is Expert  # the float reference keeps torch's call


def test_a_deployed_expert_binds_its_fused_mlp_once() -> None:
    from qmoe.models import Expert

    torch.manual_seed(0)
    expert = deploy(Expert(70, 5, (40,), "q1", 0.1))
    x = torch.randn(3, 70)
    y = expert(x)  # the first call binds the fused MLP's function in the expert
    net = expert._modules["net"]
    assert expert.__dict__["_run"] is net.bound() is net.__dict__["_run"]
    assert torch.equal(expert(x), y) and torch.equal(expert(x[1:2]), y[1:2])
    assert torch.equal(net(x), y) and torch.equal(net.forward(x.double()), y)
    for module in (expert, net):  # a copy or pickle binds its own
        assert "_run" not in module.__getstate__() and "_run" in module.__dict__
