"""Trained models: the deployed form computes what the quantized forward pass computes.

Float comparisons carry bounds that hold on any machine (any float GEMM order, with or
without FMA): each path is checked against the exact arithmetic of its own integers, and the
two paths' integers are compared exactly.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qmoe.models import Expert, MixtureOfExperts
from qmoe.quant import deploy, get_quantizer, list_quantizers
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import PackedLinear
from tests.qmoe.quant.test_quant_packed import torch_int8

ALL = list_quantizers()


@pytest.fixture(scope="module")
def clusters() -> tuple[torch.Tensor, np.ndarray]:
    """A realistic task: 10 Gaussian classes in 200 standardised dims, 1,500 samples."""
    gen = torch.Generator().manual_seed(0)
    centres = torch.randn(10, 200, generator=gen) * 0.35
    y = torch.randint(0, 10, (1500,), generator=gen)
    x = centres[y] + torch.randn(1500, 200, generator=gen)
    return (x - x.mean(0)) / x.std(0), y.numpy()


def _trained_expert(name: str, x: torch.Tensor, y: np.ndarray) -> Expert:
    from qmoe.measure import torch_threads
    from qmoe.spec import TrainConfig
    from qmoe.train import fit

    torch.manual_seed(0)
    expert = Expert(x.shape[1], 10, (96, 48), name, dropout=0.1)
    cfg = TrainConfig.single().replace(max_epochs=6, patience=6, hidden=(96, 48))
    with torch_threads(1):  # small model: threads only add contention
        fit(expert, x[:1200], y[:1200], x[1200:1300], y[1200:1300], cfg, n_classes=10, seed=0)
    return expert.eval()


#: Unit roundoff of float32.
U32 = 2.0**-24


def _layer_math(h: torch.Tensor, layer: PackedLinear) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """What one layer computes from float inputs ``h`` (B, D), decided exactly.

    Returns ``(x_int, exact, bound)``: the 8-bit activations (torch's own rounding; fp32: the
    inputs themselves), the outputs of those in exact arithmetic (int64 dots, then float64 for
    the documented ``acc * rscale / s + bias``; fp32: float64 dots) and, per output, how far
    float32 may round away from them.

    The bound holds for any float32 evaluation order, with or without FMA, so on any machine
    and BLAS: a sum of D products rounds by at most ``(D - 1) u`` of the sum of their
    magnitudes (u = 2^-24), and the dequantized factors (``x_int / s``, ``q * scale``), each
    product and the bias add round once more each: ``(D + 5) u (T + |bias|)`` with
    ``T = sum_i |x_int_i q_ji| rscale_j / s``. The kernel's own rounding (4 operations) is
    inside it too.
    """
    q = layer.int_weight()  # (N, D): int64, or float32 for fp32
    rscale = layer.rescale.astype(np.float64)
    bias = np.asarray(layer.native_layer.bias, np.float64)
    if layer.kind == "fp32":  # float inputs: "integers" and a scale of one
        x_int, s, q = h.double().numpy(), np.ones((h.shape[0], 1)), q.astype(np.float64)
    else:
        x_int = torch_int8(h).astype(np.int64)  # (B, D)
        s = (127 / h.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)).double().numpy()  # (B, 1)
    exact = (x_int @ q.T) * (rscale / s) + bias  # (B, N)
    magnitude = (np.abs(x_int) @ np.abs(q).T) * (np.abs(rscale) / s) + np.abs(bias)
    return x_int, exact, (layer.in_features + 5) * U32 * magnitude


def _inputs_outputs(model: nn.Module, kind: type, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(input, output) of every ``kind`` layer of ``model`` on ``x``, in order."""
    seen: list[tuple[torch.Tensor, torch.Tensor]] = []
    handles = [m.register_forward_hook(lambda _m, args, out: seen.append((args[0], out)))
               for m in model.modules() if isinstance(m, kind)]
    with torch.no_grad():
        model(x)
    for h in handles:
        h.remove()
    return seen


@pytest.mark.parametrize("name", ALL)
def test_predictions_equal_the_quantized_forward_pass(name: str, clusters) -> None:
    """The deployed model computes what the trained model's quantized forward pass computes.

    Float deployments (fp32, q16) and binary (exact by construction) give the same floats.
    The native forms are decided on integers: layer by layer, both the float forward pass
    (torch's float32 GEMM) and the kernel equal the exact arithmetic of *their own* integer
    activations within the float32 bound of :func:`_layer_math`, on any machine. Their
    first-layer integers are the same; a hidden layer's may differ by one where the value
    being rounded sits within that bound of a .5 tie (the two paths round the float sums
    differently, depending on the machine's GEMM): at most a few rows, and every row without
    such a tie predicts the same class. fp32 has no integers: its floats are checked alike.
    binary is exact by construction (its reference uses the same float steps).
    """
    x, y = clusters
    expert = _trained_expert(name, x, y)
    test = x[1244:1500]  # a batch of 256 unseen samples
    config = get_quantizer(name)
    reference = deploy(expert, reference=True) if config.post_training else expert
    with torch.no_grad():
        expected = reference(test)
    deployed = deploy(expert)
    got = deployed(test)
    acc = (got.argmax(1).numpy() == y[1244:1500]).mean()
    assert acc > 0.5, acc  # the model really learned: the comparison is not between noise
    if name == "binary":  # the same float operations in both
        assert torch.equal(got, expected)
        return
    fused = deployed.net
    assert isinstance(fused, PackedMLP)
    layers = list(fused.layers)
    ref_io = _inputs_outputs(reference, nn.Linear, test)  # QuantLinear / FakeQuantLinear
    assert len(ref_io) == len(layers)
    h, dep_io = test, []
    for layer, relu in zip(layers, fused.relu):  # the fused call equals layer by layer
        out = layer(h)
        dep_io.append((h, out))
        h = torch.relu(out) if relu else out
    assert torch.equal(h, got)
    tie_rows = np.zeros(len(test), bool)
    for i, layer in enumerate(layers):
        (h_ref, y_ref), (h_dep, y_dep) = ref_io[i], dep_io[i]
        x_ref, exact_ref, bound_ref = _layer_math(h_ref, layer)
        x_dep, exact_dep, bound_dep = _layer_math(h_dep, layer)
        assert (np.abs(y_ref.double().numpy() - exact_ref) <= bound_ref).all(), f"layer {i}: torch"
        assert (np.abs(y_dep.double().numpy() - exact_dep) <= bound_dep).all(), f"layer {i}: kernel"
        if layer.kind == "fp32":
            continue
        if i == 0:
            assert np.array_equal(x_ref, x_dep)  # the same inputs, the same rounding
        else:
            assert np.abs(x_ref - x_dep).max() <= 1  # one LSB at a tie, never more
            tie_rows |= (x_ref != x_dep).any(axis=1)
    # A tie needs a value within ~1e-4 (the bound times s) of a half-integer: each of the
    # ~150 hidden activations of a row hits one with a probability of ~1e-4.
    assert tie_rows.mean() <= 0.05, tie_rows.sum()
    slack = bound_ref + bound_dep + np.abs(exact_ref - exact_dep)  # (B, C), last layer
    top2 = torch.topk(expected, 2, dim=1).values
    margin = (top2[:, 0] - top2[:, 1]).numpy()
    same = (got.argmax(1) == expected.argmax(1)).numpy()
    assert (same | tie_rows | (margin <= 2 * slack.max(axis=1))).all()
    one = torch.cat([deployed(test[i : i + 1]) for i in range(0, 256, 51)])
    assert torch.equal(one, got[::51])  # batch 1 gives the batch's values


def test_binary_matches_its_float_reference_exactly(clusters) -> None:
    x, y = clusters
    expert = _trained_expert("binary", x, y)
    test = x[1244:1500]
    assert torch.equal(deploy(expert)(test), deploy(expert, reference=True)(test))


def test_mixture_deploys_to_one_native_call() -> None:
    from qmoe.models.deployed import DeployedMixture

    torch.manual_seed(0)
    moe = MixtureOfExperts(70, 5, ["bitnet", "q4", "binary", "q16"], hidden=(32, 16), dropout=0.1).eval()
    deployed = deploy(moe, seed=4)
    assert isinstance(deployed, DeployedMixture)
    assert all(isinstance(e.net, PackedMLP) for e in deployed.experts)
    out = deployed(torch.randn(9, 70))
    assert out.logits.shape == (9, 5) and torch.isfinite(out.logits).all()


