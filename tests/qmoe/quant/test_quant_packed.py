"""The deployed layers of every quantizer: what they store and what they compute, exactly.

1. the activations: the kernels' 8-bit integers equal torch's ``absmax_quantize`` integers;
2. the stored weights: each quantizer's integer grid (``QuantLinear.int_weight``) as the
   canonical layer of its kind, and the rescale that goes with it;
3. the whole deployed MLP: bit-exact against the documented arithmetic in numpy
   (``tests/qmoe/native``), fused or layer by layer, any batch, through the short call path
   (a float32 tensor read in place) or the general one.

The trained models' predictions are in ``test_quant_predictions.py``; every kernel layout
against numpy in ``tests/qmoe/native``.
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch
from torch import nn

from qmoe.errors import QmoeError
from qmoe.models import Expert
from qmoe.quant import QuantLinear, deploy, get_quantizer, list_quantizers
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import FORMS, PackedLinear, quantize_activations
from tests.qmoe.native.native_cases import reference
from tests.qmoe.quant.quant_cases import quant_mlp

ALL = list_quantizers()
ODD_DIMS = (200, 96, 48, 10)  # 200 = 3 words + 8 bits: every layer width off the 64 grid
PAPER_DIMS = (1536, 640, 320, 50)
KIND = {"fp32": "fp32", "q1": "pm1", "q2": "int2", "q4": "int8", "q8": "int8", "q16": "q16",
        "bitnet": "ternary", "ptq8": "int8", "binary": "binary"}


def torch_int8(x: torch.Tensor) -> np.ndarray:
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
    assert np.array_equal(x_int, torch_int8(x))
    assert x_int.min() >= -127  # never -128: the int8 kernels rely on it
    s_torch = (127 / x.abs().amax(dim=-1).clamp_min(1e-8)).numpy()
    assert np.array_equal(s, s_torch)


@pytest.mark.parametrize("name", ALL)
def test_each_quantizer_stores_its_integer_grid_as_its_kind(name: str) -> None:
    torch.manual_seed(0)
    layer = QuantLinear(70, 9, name)
    deployed = deploy(layer)
    assert isinstance(deployed, PackedLinear) and deployed.kind == KIND[name]
    assert deployed.form == FORMS[KIND[name]]
    stored = np.asarray(deployed.native_layer.weight)
    if name == "fp32":
        assert np.array_equal(stored, layer.weight.detach().numpy()) and deployed.native_layer.rescale is None
        return
    q, scales = layer.int_weight()
    assert np.array_equal(stored.astype(np.int64), q.numpy().astype(np.int64))
    scale = {"bitnet": "alpha", "binary": "alpha"}.get(name, "scale")
    assert np.array_equal(deployed.rescale, np.broadcast_to(scales[scale].float().numpy(), (9,)))
    assert torch.equal(deployed.dequantized_weight(), layer.deployed_weight())


@pytest.mark.parametrize("name", ALL)
@pytest.mark.parametrize("dims, batch", [(ODD_DIMS, 1), (ODD_DIMS, 256), (PAPER_DIMS, 1), (PAPER_DIMS, 32)])
def test_deployed_mlp_is_bit_exact_against_numpy(name: str, dims: tuple[int, ...], batch: int) -> None:
    deployed = deploy(quant_mlp(name, dims).eval())
    assert isinstance(deployed, PackedMLP) and len(deployed.layers) == len(dims) - 1
    torch.manual_seed(batch)
    x = torch.randn(batch, dims[0])
    assert np.array_equal(deployed(x).numpy(), reference(list(deployed.native.layers), x.numpy()))


@pytest.mark.parametrize("name", ALL)
def test_fused_equals_layer_by_layer_and_batch_independent(name: str) -> None:
    model = quant_mlp(name, ODD_DIMS).eval()
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


@pytest.mark.parametrize("name", ["binary", "q1", "q2", "bitnet", "q8", "fp32"])
def test_short_call_path_equals_the_general_path(name: str) -> None:
    torch.manual_seed(0)
    expert = deploy(Expert(200, 10, (96, 48), name, dropout=0.1).eval())
    x = torch.randn(12, 200)
    fast = expert(x)  # contiguous float32 (B, D): read in place by address
    general = expert(x.double())  # any other input: copied through numpy
    assert torch.equal(fast, general)
    strided = torch.randn(200, 12).T  # (12, 200), not contiguous: the general path
    assert torch.equal(expert(strided), expert(strided.contiguous()))
    rows = torch.cat([expert(x[i : i + 1]) for i in range(12)])  # views with a storage offset
    assert torch.equal(rows, fast)
    y1 = expert(x[:1])
    y1_copy = y1.clone()
    y2 = expert(x[1:2])
    assert y1.data_ptr() != y2.data_ptr() and torch.equal(y1, y1_copy)  # outputs never shared
    assert torch.equal(expert(x.requires_grad_()), fast)
    assert expert(torch.empty(0, 200)).shape == (0, 10)


def test_missing_numba_is_a_clear_error(monkeypatch) -> None:
    import qmoe.native.kernels as kernels

    for name in [m for m in sys.modules if m.startswith("qmoe.native.kernels.")]:
        monkeypatch.delitem(sys.modules, name)  # forget the loaded kernels ...
        monkeypatch.delattr(kernels, name.rsplit(".", 1)[1], raising=False)
    monkeypatch.setitem(sys.modules, "numba", None)  # `import numba` now fails
    with pytest.raises(QmoeError, match="pip install numba"):
        deploy(QuantLinear(8, 2, "q4"))
    assert isinstance(deploy(QuantLinear(8, 2, "q16"), reference=True), nn.Module)  # references: torch only


def test_wrong_width_is_refused() -> None:
    deployed = deploy(quant_mlp("q8", ODD_DIMS).eval())
    with pytest.raises(ValueError, match="expects 200"):
        deployed(torch.randn(2, 199))


def test_every_quantizer_is_registered_here() -> None:
    assert set(KIND) == set(ALL) and all(get_quantizer(n).name == n for n in ALL)
