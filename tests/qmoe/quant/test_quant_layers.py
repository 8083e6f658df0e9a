"""QuantLinear's one-node training forwards (``_StraightThroughLinear`` for the q forms, bitnet's
``_TernaryLinear``) against the graph of its parts they replace (``graph_forward``: activation
STE, weight STE, ``F.linear``): the same outputs, the same gradients, and training that leaves
every parameter ``torch.equal``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from qmoe.models.expert import Expert
from qmoe.quant import get_quantizer, list_quantizers
from qmoe.quant.layers import QuantLinear
from qmoe.quant.primitives import absmax_quantize
from qmoe.train import TrainConfig, fit

STRAIGHT = ("q1", "q2", "q4", "q8", "q16")
ONE_NODE = {**{name: "_StraightThroughLinearBackward" for name in STRAIGHT}, "bitnet": "_TernaryLinearBackward"}


def _graph_only(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(QuantLinear, "_one_node", lambda self, x: False)


def _node(out: torch.Tensor) -> str:
    return type(out.grad_fn).__name__ if out.grad_fn is not None else "none"


def test_exactly_the_q_forms_are_straight_through() -> None:
    straight = {name for name in list_quantizers() if get_quantizer(name).straight_through}
    assert straight == set(STRAIGHT)


@pytest.mark.parametrize("name", list_quantizers())
def test_one_node_only_for_training_steps_of_the_q_forms_and_bitnet(name: str) -> None:
    torch.manual_seed(0)
    layer = QuantLinear(24, 8, name)
    x = torch.randn(5, 24)
    expected = ONE_NODE.get(name, "the graph's")
    assert _node(layer(x)) == expected or (expected == "the graph's" and _node(layer(x)) not in ONE_NODE.values())
    with torch.no_grad():  # evaluation: no node at all
        assert _node(layer(x)) == "none"
    assert _node(layer(x[None])) not in ONE_NODE.values()  # 3-D input: the graph
    assert _node(QuantLinear(24, 8, name, bias=False)(x)) not in ONE_NODE.values()
    if name == "bitnet":  # a tensor the kernels do not take (not contiguous): the graph
        assert _node(layer(x.t().contiguous().t())) not in ONE_NODE.values()
    layer.weight.requires_grad_(False)
    assert _node(layer(x)) not in ONE_NODE.values()


@pytest.mark.parametrize("name", ONE_NODE)
@pytest.mark.parametrize("input_grad", [False, True])
def test_outputs_and_gradients_equal_the_graphs(name: str, input_grad: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    torch.manual_seed(1)
    layer = QuantLinear(96, 40, name)
    x0 = torch.randn(17, 96) * 3
    upstream = torch.randn(17, 40)
    if name == "bitnet":  # some weights clip (|round(W / gamma)| >= 2): their gradient is 0
        with torch.no_grad():
            layer.weight[:, :5] *= 6

    def run() -> tuple[torch.Tensor, ...]:
        layer.zero_grad(set_to_none=True)
        x = x0.clone().requires_grad_(input_grad)
        out = layer(x)
        out.backward(upstream)
        grad_x = x.grad if input_grad else torch.empty(0)
        return (out.detach(), layer.weight.grad, layer.bias.grad, grad_x,
                *(p.grad for p in layer.quant_params().values()))

    fused = run()
    assert _node(layer(x0)) == ONE_NODE[name]
    _graph_only(monkeypatch)
    graph = run()
    assert _node(layer(x0)) != ONE_NODE[name]
    for a, b in zip(fused, graph, strict=True):
        assert torch.equal(a, b)
    if name == "bitnet":
        assert (fused[1] == 0).sum() > 0 and (fused[1] != 0).sum() > 0
        return
    # the STEs' gradients themselves: g^T x_q for the weight, g W_q for the input
    with torch.no_grad():
        assert torch.equal(fused[1], upstream.t().mm(absmax_quantize(x0, 8)))
        if input_grad:
            assert torch.equal(fused[3], upstream.mm(layer.quantized_weight()))
        assert torch.equal(fused[2], upstream.sum(0))

@pytest.mark.parametrize("name", ONE_NODE)
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


def test_bitnet_takes_its_weight_from_the_step_only_while_weight_and_alpha_are_unchanged(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The optimizer computes the next forward's ternary weight (with alpha as updated in the same
    step: the step updates alpha first); a change to the weight or to alpha after the step makes
    the forward compute it anew."""
    from qmoe.optim import AdamW
    from qmoe.quant import qat_kernels
    from qmoe.quant.ternary import ternary_weight

    computed, gammas = [], []  # the forward's own ternary and row-mean passes
    kernel, row_gamma = qat_kernels.ternary, qat_kernels.row_gamma
    monkeypatch.setattr(qat_kernels, "ternary", lambda *args: computed.append(1) or kernel(*args))
    monkeypatch.setattr(qat_kernels, "row_gamma", lambda *args: gammas.append(1) or row_gamma(*args))
    torch.manual_seed(3)
    layer = QuantLinear(40, 12, "bitnet")
    opt = AdamW(layer.parameters(), lr=1e-2)
    x = torch.randn(9, 40)

    def expected() -> torch.Tensor:
        with torch.no_grad():
            return F.linear(absmax_quantize(x, 8), ternary_weight(layer.weight, layer.alpha), layer.bias)

    for change in ("none", "alpha", "weight", "none"):
        opt.zero_grad()
        layer(x).sum().backward()
        opt.clip_and_step(1.0)
        assert qat_kernels.cached_stats(layer.weight, "ternary") is not None
        with torch.no_grad():
            if change == "alpha":
                layer.alpha.mul_(-2.0)
            elif change == "weight":
                layer.weight[0].mul_(3.0)
        gammas.clear()
        want = expected()  # evaluation: the step's gamma, unless stale
        assert len(gammas) == (change == "weight")
        computed.clear()
        assert torch.equal(layer(x), want)
        assert len(computed) == (change != "none")
        assert qat_kernels.cached_stats(layer.weight, "ternary") is None  # taken, or stale
