"""Pure tensor math: STEs, activation fake-quant, bit packing, popcount dot."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmoe.quant import primitives as P


def test_ste_value_is_exactly_q_and_gradient_is_identity() -> None:
    x = torch.randn(50, requires_grad=True)
    q = torch.round(x.detach() * 7.3) / 7.3
    y = P.ste(x, q)
    assert torch.equal(y, q)  # no ulp drift, unlike x + (q - x).detach()
    y.backward(torch.arange(50.0))
    assert torch.equal(x.grad, torch.arange(50.0))


def test_round_ste_rounds_forward_and_passes_gradient() -> None:
    x = torch.tensor([-1.6, -0.4, 0.5, 1.5, 2.2], requires_grad=True)
    y = P.round_ste(x)
    assert torch.equal(y, torch.round(x.detach()))
    y.sum().backward()
    assert torch.equal(x.grad, torch.ones(5))


def test_sign_pm1_maps_zero_to_plus_one() -> None:
    s = P.sign_pm1(torch.tensor([-2.0, -0.0, 0.0, 3.0]))
    assert s.tolist() == [-1.0, 1.0, 1.0, 1.0]
    x = torch.tensor([0.0, -1.0], requires_grad=True)
    P.sign_ste(x).sum().backward()
    assert x.grad.tolist() == [1.0, 1.0]


def test_clip_round_ste_zeroes_gradient_where_clipped() -> None:
    x = torch.tensor([-3.0, -1.4, -1.6, 0.2, 1.49, 1.51, 4.0], requires_grad=True)
    y = P.clip_round_ste(x, -1, 1)
    assert y.tolist() == [-1.0, -1.0, -1.0, 0.0, 1.0, 1.0, 1.0]
    y.sum().backward()
    # clipped where round(x) fell outside [-1, 1]
    assert x.grad.tolist() == [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0]


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


@pytest.mark.parametrize("d", [1, 7, 63, 64, 65, 128, 200])
def test_pack_bits_layout_and_padding(d: int) -> None:
    rng = np.random.default_rng(d)
    bits = rng.random((3, d)) > 0.5
    packed = P.pack_bits(bits)
    assert packed.dtype == np.uint64 and packed.shape == (3, -(-d // 64))
    unpacked = np.unpackbits(packed.view(np.uint8), axis=-1, bitorder="little")
    assert np.array_equal(unpacked[:, :d].astype(bool), bits)
    assert not unpacked[:, d:].any()  # zero padding


@pytest.mark.parametrize("d", [1, 63, 64, 65, 130, 1536])
def test_popcount_dot_equals_pm1_dot(d: int) -> None:
    rng = np.random.default_rng(d)
    xb, wb = rng.random((5, d)) > 0.5, rng.random((9, d)) > 0.5
    expected = np.where(xb, 1, -1) @ np.where(wb, 1, -1).T
    got = P.popcount_dot(P.pack_bits(xb), np.ascontiguousarray(P.pack_bits(wb).T), d)
    assert got.dtype == np.int32
    assert np.array_equal(got, expected)


def test_popcount_dot_chunks_large_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(P, "_POPCOUNT_CHUNK", 10)
    rng = np.random.default_rng(1)
    xb, wb = rng.random((37, 100)) > 0.5, rng.random((4, 100)) > 0.5
    expected = np.where(xb, 1, -1) @ np.where(wb, 1, -1).T
    assert np.array_equal(P.popcount_dot(P.pack_bits(xb), P.pack_bits(wb).T, 100), expected)
