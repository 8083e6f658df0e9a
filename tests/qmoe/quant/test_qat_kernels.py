"""The fused QAT passes (:mod:`qmoe.quant.qat_kernels`) against the torch formulas they replace,
bit for bit, on shapes that exercise the vector lanes and their tails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmoe.quant import bitlinear, qat_kernels
from qmoe.quant import primitives as P

pytestmark = pytest.mark.skipif(qat_kernels.njit is None, reason="numba is not installed")


def torch_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every caller take the torch formula instead of the kernels."""
    monkeypatch.setattr(qat_kernels, "fusable", lambda *tensors: False)


def serial_absmax(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The kernel's former serial loop in numpy float32: ``m = max|x|`` from 0 by ``a > m``
    (NaN skipped), ``s = (1 / max(m, eps)) * qmax``, ``clip(rint(x s)) / s``."""
    qmax, one = np.float32(2 ** (bits - 1) - 1), np.float32(1.0)
    rows = []
    with np.errstate(all="ignore"):
        for row in x.numpy():
            m = np.float32(0.0)
            for a in np.abs(row):
                m = a if a > m else m
            s = (one / max(m, np.float32(P.EPS))) * qmax
            rows.append(np.minimum(np.maximum(np.rint(row * s), -qmax - one), qmax) / s)
    return torch.from_numpy(np.stack(rows).astype(np.float32))


@pytest.mark.parametrize("width", [1, 15, 16, 17, 33, 320, 1536])
@pytest.mark.parametrize("seed", range(3))
def test_absmax_rows_equals_the_formula_at_every_lane_and_tail(width: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(24, width, generator=gen) * torch.logspace(-6, 6, 24)[:, None]
    x[0] = 0.0
    x[1, width // 2] = 40.0  # the max in some lane or in the tail, by width
    x[2, -1] = -50.0  # the max last (tail when width % 16 != 0)
    x[3, 0] = -60.0  # the max first
    x[4, width - 1] = float("nan")  # NaN skipped by the max, NaN in its place
    x[5, 0] = float("-inf")  # a diverged row: NaN throughout
    for bits in (2, 8):
        out = torch.empty_like(x)
        qmax = 2 ** (bits - 1) - 1
        qat_kernels.absmax_rows(x.numpy(), np.float32(qmax), np.float32(P.EPS), out.numpy())
        assert torch.equal(out.nan_to_num(nan=7.0), serial_absmax(x, bits).nan_to_num(nan=7.0))


@pytest.mark.parametrize("bits", [2, 8])
def test_absmax_quantize_equals_its_torch_path(bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1536, generator=gen) * 3
    fused = P.absmax_quantize(x, bits)
    torch_paths(monkeypatch)
    assert torch.equal(fused, P.absmax_quantize(x, bits))


@pytest.mark.parametrize("bits", bitlinear.BITLINEAR_BITS)
@pytest.mark.parametrize("shape", [(640, 1536), (50, 320), (3, 7)])
def test_bitlinear_fused_equals_its_torch_path(bits: int, shape: tuple[int, int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused forward (q1: |W - mu| written into the output, torch's mean of it, then the
    signs over it) gives the torch formula's values and gradient, bit for bit."""
    gen = torch.Generator().manual_seed(bits)
    w0 = torch.randn(shape, generator=gen) * 0.02 + 0.003
    grad = torch.randn(shape, generator=gen)
    w = w0.clone().requires_grad_()
    fused = bitlinear.bitlinear_weight(w, bits)
    fused.backward(grad)
    torch_paths(monkeypatch)
    w_ref = w0.clone().requires_grad_()
    ref = bitlinear.bitlinear_weight(w_ref, bits)
    ref.backward(grad)
    assert torch.equal(fused, ref)
    assert torch.equal(w.grad, w_ref.grad)
    assert torch.equal(fused, bitlinear.bitlinear_weight(w0, bits))  # no-grad path alike


def test_abs_centred_is_torchs_sub_abs() -> None:
    gen = torch.Generator().manual_seed(0)
    w = torch.randn(1000, generator=gen)
    w[:3] = torch.tensor([0.25, -0.0, float("inf")])
    mu = torch.tensor(0.25)
    out = torch.empty_like(w)
    qat_kernels.abs_centred(w.numpy(), np.float32(mu), out.numpy())
    assert torch.equal(out, (w - mu).abs_())
