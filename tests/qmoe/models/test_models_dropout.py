"""Counter-based dropout: the mask is SplitMix64's (exact, against numpy), keeps 1 - p of the
elements, scales the kept ones, masks the gradient alike, follows torch's seed."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from qmoe.models import Expert
from qmoe.models.dropout import GAMMA, MIX1, MIX2, UNIFORM_BITS, Dropout, dropout, keep_threshold

U64 = np.uint64


def _mask(seed: int, n: int, p: float) -> np.ndarray:
    """SplitMix64 over counters 1..n in numpy's wrapping uint64 arithmetic."""
    with np.errstate(over="ignore"):
        z = U64(seed) + np.arange(1, n + 1, dtype=U64) * U64(GAMMA)
        z = (z ^ (z >> U64(30))) * U64(MIX1)
        z = (z ^ (z >> U64(27))) * U64(MIX2)
        z = z ^ (z >> U64(31))
    return (z >> U64(64 - UNIFORM_BITS)) >= U64(keep_threshold(p))


@pytest.mark.parametrize(("shape", "p"), [((257, 33), 0.1), ((64, 640), 0.2), ((5,), 0.5), ((3, 7, 11), 0.9)])
def test_mask_and_scale_exactly(shape: tuple[int, ...], p: float) -> None:
    x = torch.randn(shape, requires_grad=True)
    torch.manual_seed(7)
    y = dropout(x, p)
    torch.manual_seed(7)
    seed = int(torch.randint(0, 1 << 62, (1,), dtype=torch.int64))  # the draw the call made
    keep = torch.from_numpy(_mask(seed, x.numel(), p)).reshape(shape)
    scale = np.float32(1.0) / np.float32(1.0 - p)
    assert torch.equal(y, torch.where(keep, x.detach() * torch.tensor(scale), torch.zeros(())))
    g = torch.randn(shape)
    y.backward(g)
    assert torch.equal(x.grad, torch.where(keep, g * torch.tensor(scale), torch.zeros(())))


def test_keeps_one_minus_p_and_calls_differ() -> None:
    torch.manual_seed(0)
    x = torch.ones(400_000)
    a, b = dropout(x, 0.2) != 0, dropout(x, 0.2) != 0
    sd = (0.2 * 0.8 / x.numel()) ** 0.5
    for m in (a, b):
        assert abs(m.float().mean().item() - 0.8) < 6 * sd  # binomial, six standard deviations
    assert abs((a & b).float().mean().item() - 0.64) < 6 * (0.64 * 0.36 / x.numel()) ** 0.5  # independent


def test_identity_in_eval_and_fallbacks() -> None:
    x = torch.randn(8, 16)
    assert dropout(x, 0.3, training=False) is x and dropout(x, 0.0) is x
    assert torch.equal(dropout(x, 1.0), torch.zeros_like(x))  # torch's own: everything dropped
    strided = torch.randn(16, 8).t()  # not contiguous: torch's dropout, same keep rate and scale
    y = dropout(strided, 0.5)
    assert set(torch.unique(y / strided).tolist()) <= {0.0, 2.0}


def test_module_is_an_nn_dropout_and_follows_the_seed() -> None:
    layer = Dropout(0.25)
    assert isinstance(layer, nn.Dropout)
    x = torch.randn(32, 64)
    torch.manual_seed(3)
    first = layer(x)
    torch.manual_seed(3)
    assert torch.equal(first, layer(x))
    assert torch.equal(layer.eval()(x), x)
    assert any(isinstance(m, Dropout) for m in Expert(64, 5, (32,), "q4", 0.1).modules())
