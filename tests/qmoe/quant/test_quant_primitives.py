"""Pure tensor math: sign_pm1 and the activation fake-quant (the STE: test_quant_ste.py)."""

from __future__ import annotations

import pytest
import torch

from qmoe.quant import primitives as P


def test_sign_pm1_maps_zero_to_plus_one() -> None:
    s = P.sign_pm1(torch.tensor([-2.0, -0.0, 0.0, 3.0, float("nan")]))
    assert s.tolist() == [-1.0, 1.0, 1.0, 1.0, -1.0]


def test_absmax_quantize_has_at_most_256_levels_per_sample() -> None:
    torch.manual_seed(0)
    x = torch.randn(4, 3000) * torch.tensor([[1.0], [10.0], [0.01], [100.0]])
    xq = P.absmax_quantize(x, 8)
    for row, row_q in zip(x, xq):
        assert len(torch.unique(row_q)) <= 256
        assert (row - row_q).abs().max() <= row.abs().max() / 127 / 2 * 1.0001
        assert row_q.abs().max() == pytest.approx(row.abs().max().item(), rel=1e-6)


def test_absmax_quantize_is_per_sample_and_safe_on_zeros() -> None:
    x = torch.stack([torch.zeros(10), torch.linspace(-1, 1, 10)])
    xq = P.absmax_quantize(x, 8)
    assert torch.equal(xq[0], torch.zeros(10))
    assert torch.isfinite(xq).all()
    big = P.absmax_quantize(torch.stack([torch.linspace(-1, 1, 10), 1000 * torch.linspace(-1, 1, 10)]), 8)
    assert torch.allclose(big[1] / 1000, big[0])  # each row got its own scale


def test_absmax_quantize_gradient_is_identity() -> None:
    x = torch.randn(3, 20, requires_grad=True)
    P.absmax_quantize(x, 8).sum().backward()
    assert torch.equal(x.grad, torch.ones(3, 20))


def test_absmax_quantize_of_a_diverged_row_is_nan_not_an_exception() -> None:
    """A diverging run's inf activations give nan (as torch's own arithmetic does), which the
    trainer reports as divergence; the fused kernel must not raise ZeroDivisionError."""
    x = torch.tensor([[float("inf"), 1.0, -2.0], [0.5, 1.0, -2.0]])
    out = P.absmax_quantize(x, 8)
    assert torch.isnan(out[0]).all()
    torch.testing.assert_close(out[1], torch.round(x[1] * (127 / 2.0)) / (127 / 2.0))
