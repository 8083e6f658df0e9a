"""Exactness of the packed deployed forms, over every registered quantizer.

Three levels, each against an independent reference:

1. the activations: the kernels' 8-bit integers equal torch's ``absmax_quantize`` integers;
2. the integer dot products: bit-exact against a numpy int64 matmul of the same integer
   weights (``QuantLinear.int_weight``) and activations, for D a multiple of 64 or not, at
   batch 1 and 256;
3. the whole deployed MLP: bit-exact against a numpy pipeline (int64 matmul + the documented
   float32 rescale), and with the same predictions as the trained model's quantized forward
   pass (QAT eval forward, or the float reference of ptq8 / binary) on a realistic batch.
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


@pytest.mark.parametrize("name", ALL)
def test_predictions_equal_the_quantized_forward_pass(name: str, clusters) -> None:
    x, y = clusters
    expert = _trained_expert(name, x, y)
    test = x[1244:1500]  # a batch of 256 unseen samples
    with torch.no_grad():
        if get_quantizer(name).post_training:
            expected = deploy(expert, reference=True)(test)  # float reference of the same values
        else:
            expected = expert(test)  # the QAT eval forward
    deployed = deploy(expert)
    got = deployed(test)
    assert (got.argmax(1) == expected.argmax(1)).all()
    assert torch.allclose(got, expected, rtol=1e-3, atol=1e-3 * expected.abs().max().item())
    if name in PACKED:  # (torch's float GEMM may round differently at batch 1)
        one = torch.cat([deployed(test[i : i + 1]) for i in range(0, 256, 51)])
        assert torch.equal(one, got[::51])  # batch 1 gives the batch's values
    acc = (got.argmax(1).numpy() == y[1244:1500]).mean()
    assert acc > 0.5, acc  # the model really learned: the equality is not between noise


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
