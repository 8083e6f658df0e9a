"""Contract tests run on every registered quantizer (new ones are covered automatically)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from qmoe.quant import (
    FakeQuantLinear,
    QuantLinear,
    deploy,
    get_quantizer,
    list_quantizers,
)
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import PackedLinear
from qmoe.quant.primitives import absmax_quantize
from tests.qmoe.quant.quant_cases import quant_mlp

ALL = list_quantizers()
QAT = [n for n in ALL if not get_quantizer(n).post_training]
ACT_QUANT = [n for n in ALL if get_quantizer(n).activation_bits is not None]


def _layer(name: str, n_in: int = 70, n_out: int = 24, seed: int = 0) -> QuantLinear:
    torch.manual_seed(seed)
    return QuantLinear(n_in, n_out, name)


def _effective_weight(module: nn.Module) -> torch.Tensor:
    """The float weight a deployed layer actually multiplies by, read back from the module."""
    if isinstance(module, PackedLinear):
        return module.dequantized_weight()  # unpacked from the stored bits / int8
    assert isinstance(module, nn.Linear)
    return module.weight.detach()


@pytest.mark.parametrize("name", ALL)
def test_deployed_weight_levels(name: str) -> None:
    cfg = get_quantizer(name)
    layer = _layer(name)
    deployed = deploy(layer)
    w = _effective_weight(deployed)
    assert torch.equal(w, layer.deployed_weight())
    if name == "fp32":
        assert torch.equal(w, layer.weight.detach())
        assert layer.int_weight() is None
        return
    limit = {"bitnet": 3, "binary": 2}.get(name, 2 ** int(cfg.weight_bits))
    per_row = name in ("bitnet", "binary")  # per-channel scales; integers per layer below
    rows = w if per_row else w.reshape(1, -1)
    assert max(len(torch.unique(r)) for r in rows) <= limit
    q, scales = layer.int_weight()
    assert not q.dtype.is_floating_point
    assert len(torch.unique(q)) <= limit
    assert all(torch.is_tensor(s) for s in scales.values())


@pytest.mark.parametrize("name", ["q1", "binary"])
def test_one_bit_has_exactly_two_levels(name: str) -> None:
    layer = _layer(name)
    q, _ = layer.int_weight()
    assert sorted(torch.unique(q).tolist()) == [-1, 1]


@pytest.mark.parametrize("name", ALL)
def test_gradients_flow_through_the_quantizer(name: str) -> None:
    layer = _layer(name)
    x = torch.randn(8, 70)
    layer(x).pow(2).sum().backward()
    for pname, p in layer.named_parameters():
        assert p.grad is not None, pname
        assert torch.isfinite(p.grad).all(), pname
        assert p.grad.abs().sum() > 0, pname


@pytest.mark.parametrize("name", QAT)
def test_qat_weight_is_quantized_in_forward(name: str) -> None:
    layer = _layer(name)
    wq = layer.quantized_weight()
    if name == "fp32":
        assert torch.equal(wq, layer.weight)
    else:
        assert not torch.equal(wq, layer.weight)
        assert torch.equal(wq.detach(), layer.deployed_weight())


def test_q16_is_a_true_16_bit_integer_grid() -> None:
    layer = _layer("q16", 300, 200)
    wq = layer.quantized_weight().detach()
    q, scales = layer.int_weight()
    assert q.dtype == torch.int16
    assert torch.equal(q.float() * scales["scale"], wq)
    ratio = wq / scales["scale"]
    assert (ratio - ratio.round()).abs().max() < 1e-2
    assert ratio.abs().max() <= 2**15
    assert len(torch.unique(q)) > 256  # far finer than 8 bits...
    centred = layer.weight.detach() - scales["mu"]
    assert not torch.equal(wq, centred)  # ...but not a float32 passthrough
    assert (wq - centred).abs().max() <= scales["scale"] / 2 * 1.01


def test_bitlinear_formula() -> None:
    layer = _layer("q4")
    w = layer.weight.detach()
    mu = w.mean()
    s = (w - mu).abs().max() / 7
    expected = torch.clamp(torch.round((w - mu) / s), -8, 7) * s
    assert torch.allclose(layer.quantized_weight(), expected, atol=1e-7)
    q1 = _layer("q1")
    c = q1.weight.detach() - q1.weight.detach().mean()
    assert torch.allclose(q1.quantized_weight(), torch.where(c >= 0, 1.0, -1.0) * c.abs().mean())


@pytest.mark.parametrize("name", ACT_QUANT)
def test_activations_are_8_bit_per_sample(name: str) -> None:
    layer = _layer(name)
    x = torch.randn(6, 70) * torch.logspace(-2, 2, 6)[:, None]
    xq = absmax_quantize(x, get_quantizer(name).activation_bits)
    assert all(len(torch.unique(row)) <= 256 for row in xq)
    expected = nn.functional.linear(xq, layer.quantized_weight(), layer.bias)
    assert torch.equal(layer(x), expected)


@pytest.mark.parametrize("name", QAT)
def test_reference_form_equals_qat_eval_forward(name: str) -> None:
    model = quant_mlp(name).eval()
    x = torch.randn(16, 70)
    expected = model(x)
    reference = deploy(model, reference=True)
    assert all(isinstance(m, (FakeQuantLinear, nn.Linear)) for m in reference if not isinstance(m, (nn.ReLU, nn.Dropout)))
    assert torch.equal(reference(x), expected)
    assert torch.equal(reference(x[:1]), model(x[:1]))  # batch 1 too


@pytest.mark.parametrize("name", ALL)
def test_packed_int_weight_is_the_configs_integer_grid(name: str) -> None:
    layer = _layer(name)
    deployed = deploy(layer)
    assert isinstance(deployed, PackedLinear)
    if name == "fp32":  # float weights, stored as they are
        assert np.array_equal(deployed.int_weight(), layer.weight.detach().numpy())
        return
    q, _ = layer.int_weight()
    assert np.array_equal(deployed.int_weight(), q.numpy().astype(np.int64))


@pytest.mark.parametrize("name", ALL)
def test_deploy_freezes_a_copy(name: str) -> None:
    model = quant_mlp(name).train()
    deployed = deploy(model)
    assert not deployed.training
    assert not any(p.requires_grad for p in deployed.parameters())
    assert isinstance(model[0], QuantLinear) and model.training  # original untouched
    assert not any(isinstance(m, QuantLinear) for m in deployed.modules())
    layers = deployed.layers if isinstance(deployed, PackedMLP) else deployed
    assert all(hasattr(m, "form") for m in layers if not isinstance(m, (nn.ReLU, nn.Dropout)))
    out = deployed(torch.randn(3, 70))
    assert out.shape == (3, 5) and torch.isfinite(out).all()


@pytest.mark.parametrize("name", ALL)
def test_weight_bits_bound_the_integer_grid(name: str) -> None:
    cfg = get_quantizer(name)
    result = _layer(name).int_weight()
    if result is None:
        return
    q, _ = result
    assert len(torch.unique(q)) <= 2 ** math.ceil(cfg.weight_bits)
