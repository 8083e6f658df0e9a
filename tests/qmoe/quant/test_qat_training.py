"""Training with the QAT kernels gives the same bits as main's kernels did (0d22b6c): the
former ``ternary_grads`` and ``absmax_rows`` are kept here verbatim and patched in, and a few
steps of each quantizer's training must leave every parameter ``torch.equal``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmoe.optim import AdamW
from qmoe.quant import qat_kernels, ternary
from qmoe.quant.layers import QuantLinear

pytestmark = pytest.mark.skipif(qat_kernels.njit is None, reason="numba is not installed")

if qat_kernels.njit is not None:
    from numba import njit

    @njit(error_model="numpy")
    def main_ternary_grads(rounded, ratio, grad, grad_w, grad_alpha):  # noqa: ANN001, ANN201
        one, two, zero = np.float32(1.0), np.float32(2.0), np.float32(0.0)
        n = grad.shape[1]
        prod = np.empty(n, np.float32)
        for j in range(grad.shape[0]):
            rt = ratio[j]
            for i in range(n):
                r, g = np.float32(rounded[j, i]), grad[j, i]
                prod[i] = min(max(r, -one), one) * g
                grad_w[j, i] = (min(max(abs(r) - two, -one), zero) * rt) * g
            grad_alpha[j] = np.float32(qat_kernels.block_sum(prod, 0, n))

    @njit(error_model="numpy")
    def main_absmax_rows(x, qmax, eps, out):  # noqa: ANN001, ANN201
        lo = -qmax - np.float32(1.0)
        n = x.shape[1]
        top = n - n % 16
        lanes = np.empty(16, np.float32)
        for r in range(x.shape[0]):
            lanes[:] = np.float32(0.0)
            for i in range(0, top, 16):
                for k in range(16):
                    a = abs(x[r, i + k])
                    lanes[k] = a if a > lanes[k] else lanes[k]
            m = np.float32(0.0)
            for k in range(16):
                m = lanes[k] if lanes[k] > m else m
            for i in range(top, n):
                a = abs(x[r, i])
                m = a if a > m else m
            m = m if m > eps else eps
            s = (np.float32(1.0) / m) * qmax
            for i in range(n):
                out[r, i] = min(max(np.rint(x[r, i] * s), lo), qmax) / s


class _MainTernarySTE(ternary._TernarySTE):
    """main's backward: the ratio by torch, then the former kernel."""

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        weight, alpha, gamma, rounded = ctx.saved_tensors
        assert rounded is not None and qat_kernels.fusable(grad)  # the kernel path is what is compared
        ratio = (alpha.detach() / gamma).neg_()
        grad_w, grad_alpha = torch.empty_like(weight), torch.empty_like(gamma)
        main_ternary_grads(rounded.numpy(), ratio.numpy(), qat_kernels.as_np(grad), grad_w.numpy(), grad_alpha.numpy())
        return grad_w, grad_alpha


def _train(name: str, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(QuantLinear(70, 48, name), torch.nn.ReLU(), QuantLinear(48, 33, name),
                                torch.nn.ReLU(), QuantLinear(33, 5, name))
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 70, generator=gen) * 3, torch.randint(0, 5, (16,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.clip_and_step(0.5)
    with torch.no_grad():
        out = model(torch.randn(7, 70, generator=gen))
    return [p.detach().clone() for p in model.parameters()] + [out]


@pytest.mark.parametrize("name", ["bitnet", "q1", "q4"])
def test_training_is_bit_identical_to_mains_kernels(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new = _train(name)
    monkeypatch.setattr(ternary, "_TernarySTE", _MainTernarySTE)
    monkeypatch.setattr(qat_kernels, "absmax_rows", main_absmax_rows)
    old = _train(name)
    assert len(new) == len(old)
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    assert not torch.equal(new[0], _train(name, steps=4)[0])  # the steps do change the weights


@pytest.mark.parametrize("shape", [(3, 1), (5, 16), (7, 33), (40, 1536)])
def test_ternary_grads_equal_mains_on_special_values(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    rows, n = shape
    rounded = rng.integers(-3, 4, shape).astype(np.int8)
    rounded[0, 0] = 127  # clipped (|r| >= 2 is stored as +-127)
    grad = (rng.standard_normal(shape) * 10.0 ** rng.integers(-40, 30, shape)).astype(np.float32)
    grad.reshape(-1)[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, 3e38][:grad.size][:6]
    gamma = np.abs(rng.standard_normal(rows)).astype(np.float32) + np.float32(1e-8)
    alpha = (rng.standard_normal(rows) * 2).astype(np.float32)
    alpha[0], gamma[-1] = 0.0, np.float32(1e-8)
    with np.errstate(all="ignore"):
        ratio = (torch.from_numpy(alpha) / torch.from_numpy(gamma)).neg_().numpy()
    want_w, want_a = np.empty_like(grad), np.empty(rows, np.float32)
    main_ternary_grads(rounded, ratio, grad, want_w, want_a)
    got_w, got_a = np.empty_like(grad), np.empty(rows, np.float32)
    qat_kernels.ternary_grads(rounded, alpha, gamma, grad, got_w, got_a)
    assert np.array_equal(got_w.view(np.int32), want_w.view(np.int32))  # bits, NaNs and zeros' signs too
    assert np.array_equal(got_a.view(np.int32), want_a.view(np.int32))

