"""QuantLinear's one-node training forward (``_StraightThroughLinear``) against the graph of its
parts it replaces (``graph_forward``: activation STE, weight STE, ``F.linear``): the same
outputs, the same gradients, and training that leaves every parameter ``torch.equal``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmoe.models.expert import Expert
from qmoe.quant import get_quantizer, list_quantizers
from qmoe.quant.layers import QuantLinear
from qmoe.quant.primitives import absmax_quantize
from qmoe.train import TrainConfig, fit

STRAIGHT = ("q1", "q2", "q4", "q8", "q16")


def _graph_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QuantLinear, "_one_node", lambda self, x: False)


def _node(out: torch.Tensor) -> str:
    return type(out.grad_fn).__name__ if out.grad_fn is not None else "none"


def test_exactly_the_q_forms_are_straight_through() -> None:
    straight = {name for name in list_quantizers() if get_quantizer(name).straight_through}
    assert straight == set(STRAIGHT)


@pytest.mark.parametrize("name", list_quantizers())
def test_one_node_only_for_straight_through_training_steps(name: str) -> None:
    torch.manual_seed(0)
    layer = QuantLinear(24, 8, name)
    x = torch.randn(5, 24)
    expected = "_StraightThroughLinearBackward" if name in STRAIGHT else None
    assert (_node(layer(x)) == "_StraightThroughLinearBackward") == (expected is not None)
    with torch.no_grad():  # evaluation: no node at all
        assert _node(layer(x)) == "none"
    assert _node(layer(x[None])) != "_StraightThroughLinearBackward"  # 3-D input: the graph
    assert _node(QuantLinear(24, 8, name, bias=False)(x)) != "_StraightThroughLinearBackward"
    layer.weight.requires_grad_(False)
    assert _node(layer(x)) != "_StraightThroughLinearBackward"


@pytest.mark.parametrize("name", STRAIGHT)
@pytest.mark.parametrize("input_grad", [False, True])
def test_outputs_and_gradients_equal_the_graphs(name: str, input_grad: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    layer = QuantLinear(96, 40, name)
    x0 = torch.randn(17, 96) * 3
    upstream = torch.randn(17, 40)

    def run() -> tuple[torch.Tensor, ...]:
        layer.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(input_grad)
        out = layer(x)
        out.backward(upstream)
        grad_x = x.grad if input_grad else torch.empty(0)
        return out.detach(), layer.weight.grad, layer.bias.grad, grad_x

    fused = run()
    _graph_only(monkeypatch)
    graph = run()
    for a, b in zip(fused, graph, strict=True):
        assert torch.equal(a, b)
    # the STEs' gradients themselves: g^T x_q for the weight, g W_q for the input
    with torch.no_grad():
        assert torch.equal(fused[1], upstream.t().mm(absmax_quantize(x0, 8)))
        if input_grad:
            assert torch.equal(fused[3], upstream.mm(layer.quantized_weight()))
        assert torch.equal(fused[2], upstream.sum(0))

@pytest.mark.parametrize("name", STRAIGHT)
def test_training_leaves_the_same_bits_as_the_graph(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(160, 64, generator=gen)
    y = np.asarray(torch.randint(0, 6, (160,), generator=gen))
    cfg = TrainConfig.single().replace(max_epochs=3, patience=5, batch_size=32)

    def train() -> tuple[torch.Tensor, float]:
        torch.manual_seed(0)
        model = Expert(64, 6, (48, 32), name, dropout=0.1)
        result = fit(model, x, y, x[:40], y[:40], cfg, n_classes=6, seed=0)
        return torch.cat([p.detach().flatten() for p in model.parameters()]), result.best_val_f1

    fused = train()
    _graph_only(monkeypatch)
    graph = train()
    assert torch.equal(fused[0], graph[0])
    assert fused[1] == graph[1]
