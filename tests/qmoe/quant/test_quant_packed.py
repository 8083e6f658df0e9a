"""Exactness of the packed deployed forms, over every registered quantizer.

Three levels, each against an independent reference:

1. the activations: the kernels' 8-bit integers equal torch's ``absmax_quantize`` integers;
2. the integer dot products: bit-exact against a numpy int64 matmul of the same integer
   weights (``QuantLinear.int_weight``) and activations, for D a multiple of 64 or not, at
   batch 1 and 256;
3. the whole deployed MLP: bit-exact against a numpy pipeline (int64 matmul + the documented
   float32 rescale); and, on a trained model, layer by layer the exact arithmetic of the same
   integers as the quantized forward pass (QAT eval forward, or the float reference of ptq8 /
   binary), which it predicts like. Float comparisons carry a bound that holds on any machine.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qmoe.errors import QmoeError
from qmoe.models import Expert, MixtureOfExperts
from qmoe.quant import QuantLinear, deploy, get_quantizer, list_quantizers
from qmoe.quant import kernels
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import BinaryPackedLinear, PackedLinear, quantize_activations

ALL = list_quantizers()
PACKED = [n for n in ALL if isinstance(deploy(QuantLinear(8, 2, n)), PackedLinear)]
ODD_DIMS = (200, 96, 48, 10)  # 200 = 3 words + 8 bits: every layer width off the 64 grid
PAPER_DIMS = (1536, 640, 320, 50)


def test_every_integer_quantizer_has_a_packed_form() -> None:
    assert set(ALL) - set(PACKED) == {"fp32", "q16"}  # the two float deployments (DESIGN §3)


def _mlp(name: str, dims: tuple[int, ...], seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(dims[:-1], dims[1:])):
        if i:
            layers += [nn.ReLU(), nn.Dropout(0.2)]
        layers.append(QuantLinear(a, b, name))
    return nn.Sequential(*layers).eval()


def _torch_int8(x: torch.Tensor) -> np.ndarray:
    """The integers of ``absmax_quantize(x, 8)``, as torch computes them (the spec)."""
    s = 127 / x.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)
    return torch.round(x * s).clamp(-128, 127).to(torch.int8).numpy()


@pytest.mark.parametrize("d", [1, 7, 64, 200, 1536])
def test_activation_integers_equal_torch(d: int) -> None:
    torch.manual_seed(d)
    x = torch.randn(64, d) * torch.logspace(-3, 3, 64)[:, None]
    x[0] = 0.0  # all-zero row: the EPS clamp
    x[1, 0] = 1e-30
    x_int, s = quantize_activations(x)
    assert np.array_equal(x_int, _torch_int8(x))
    s_torch = (127 / x.abs().amax(dim=-1).clamp_min(1e-8)).numpy()
    assert np.array_equal(s, s_torch)


def _int_inputs(name: str, b: int, d: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    if name == "binary":
        return rng.choice(np.array([-1, 1], np.int8), size=(b, d))
    x = rng.integers(-128, 128, size=(b, d), dtype=np.int8)
    x[0, : min(d, 3)] = [-128, 127, 0][: min(d, 3)]  # the extremes of the grid
    return x


@pytest.mark.parametrize("name", PACKED)
@pytest.mark.parametrize("d, n, b", [(1, 5, 256), (63, 17, 256), (64, 64, 1), (200, 33, 256),
                                     (1536, 640, 1), (1536, 64, 256)])
def test_integer_dots_are_bit_exact(name: str, d: int, n: int, b: int) -> None:
    torch.manual_seed(d + n)
    layer = QuantLinear(d, n, name)
    deployed = deploy(layer)
    q, _ = layer.int_weight()
    x_int = _int_inputs(name, b, d, seed=d * n)
    expected = x_int.astype(np.int64) @ q.numpy().astype(np.int64).T  # (B, N) int64
    got = deployed.int_dots(x_int)
    assert got.dtype == np.int64 and got.shape == (b, n)
    assert np.array_equal(got, expected)


def _numpy_pipeline(layers: list[PackedLinear], relu: tuple[bool, ...], x: torch.Tensor) -> np.ndarray:
    """The documented arithmetic of the packed forms, in numpy int64 and float32."""
    h = x.numpy().astype(np.float32)
    for layer, r in zip(layers, relu):
        rscale, bias = layer.rscale, layer.fp[layer.out_features: 2 * layer.out_features]
        if isinstance(layer, BinaryPackedLinear):
            x_pm1 = np.where(h > np.float32(layer.tau), 1, -1).astype(np.int64)
            acc = x_pm1 @ layer.int_weight().T
            beta = kernels.mean_abs_rows(np.ascontiguousarray(h))  # (B, 1)
            y = acc.astype(np.float32) * (beta * rscale) + bias
        else:
            ht = torch.from_numpy(h)
            x_int = _torch_int8(ht).astype(np.int64)
            s = (127 / ht.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)).numpy()  # (B, 1)
            acc = x_int @ layer.int_weight().T  # (B, N) int64
            y = acc.astype(np.float32) * (rscale / s) + bias
        h = np.maximum(y, np.float32(0.0)) if r else y
    return h


@pytest.mark.parametrize("name", PACKED)
@pytest.mark.parametrize("dims, batch", [(ODD_DIMS, 1), (ODD_DIMS, 256), (PAPER_DIMS, 1), (PAPER_DIMS, 32)])
def test_deployed_mlp_is_bit_exact_against_numpy(name: str, dims: tuple[int, ...], batch: int) -> None:
    model = _mlp(name, dims)
    deployed = deploy(model)
    assert isinstance(deployed, PackedMLP) and len(deployed.layers) == len(dims) - 1
    torch.manual_seed(batch)
    x = torch.randn(batch, dims[0])
    expected = _numpy_pipeline(list(deployed.layers), deployed.relu, x)
    assert np.array_equal(deployed(x).numpy(), expected)


@pytest.mark.parametrize("name", PACKED)
def test_fused_equals_layer_by_layer_and_batch_independent(name: str) -> None:
    model = _mlp(name, ODD_DIMS)
    fused = deploy(model)
    layers = [deploy(m) for m in model if isinstance(m, QuantLinear)]
    x = torch.randn(40, ODD_DIMS[0])
    h = x
    for i, layer in enumerate(layers):
        h = layer(h)
        if i < len(layers) - 1:
            h = torch.relu(h)
    out = fused(x)
    assert torch.equal(out, h)
    for i in (0, 17, 39):  # activations are quantized per sample: batch mates do not matter
        assert torch.equal(fused(x[i : i + 1]), out[i : i + 1])
    assert torch.equal(fused(x.reshape(4, 10, -1)), out.reshape(4, 10, -1))  # any leading dims
    assert torch.equal(fused(x.double()), out)  # other dtypes are converted


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
    """What one integer layer computes from float inputs ``h`` (B, D), decided exactly.

    Returns ``(x_int, exact, bound)``: the 8-bit activations (torch's own rounding), the
    outputs of those integers in exact arithmetic (int64 dots, then float64 for the documented
    ``acc * rscale / s + bias``) and, per output, how far float32 may round away from them.

    The bound holds for any float32 evaluation order, with or without FMA, so on any machine
    and BLAS: a sum of D products rounds by at most ``(D - 1) u`` of the sum of their
    magnitudes (u = 2^-24), and the dequantized factors (``x_int / s``, ``q * scale``), each
    product and the bias add round once more each: ``(D + 5) u (T + |bias|)`` with
    ``T = sum_i |x_int_i q_ji| rscale_j / s``. The kernel's own rounding (4 operations) is
    inside it too.
    """
    x_int = _torch_int8(h).astype(np.int64)  # (B, D)
    s = (127 / h.abs().amax(dim=-1, keepdim=True).clamp_min(1e-8)).double().numpy()  # (B, 1)
    q = layer.int_weight()  # (N, D) int64
    rscale = layer.rscale.astype(np.float64)
    bias = layer.fp[layer.out_features: 2 * layer.out_features].astype(np.float64)
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
    The integer forms are decided on integers: layer by layer, both the float forward pass
    (torch's float32 GEMM) and the kernel equal the exact arithmetic of *their own* integer
    activations within the float32 bound of :func:`_layer_math`, on any machine. Their
    first-layer integers are the same; a hidden layer's may differ by one where the value
    being rounded sits within that bound of a .5 tie (the two paths round the float sums
    differently, depending on the machine's GEMM): at most a few rows, and every row without
    such a tie predicts the same class.
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
    if name not in PACKED or name == "binary":  # the same float operations in both
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


def test_mixture_deploys_every_expert_fused() -> None:
    torch.manual_seed(0)
    moe = MixtureOfExperts(70, 5, ["bitnet", "q4", "binary", "q16"], hidden=(32, 16), dropout=0.1).eval()
    deployed = deploy(moe)
    kinds = [type(e.net).__name__ for e in deployed.experts]
    assert kinds == ["PackedMLP", "PackedMLP", "PackedMLP", "Sequential"]
    out = deployed(torch.randn(9, 70))
    assert out.logits.shape == (9, 5) and torch.isfinite(out.logits).all()


def test_missing_numba_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.setattr(kernels, "numba", None)
    with pytest.raises(QmoeError, match="pip install numba"):
        deploy(QuantLinear(8, 2, "q4"))
    assert isinstance(deploy(QuantLinear(8, 2, "q16")), nn.Module)  # float forms need no numba


def test_wrong_width_is_refused() -> None:
    deployed = deploy(_mlp("q8", ODD_DIMS))
    with pytest.raises(ValueError, match="expects 200"):
        deployed(torch.randn(2, 199))
