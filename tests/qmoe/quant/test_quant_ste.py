"""The fused straight-through fake-quant functions against the formulas they replace.

Values: bit for bit equal to the plain formulas of DESIGN §3 (as the earlier autograd graphs
computed them), on random weights, exact ties, zeros and degenerate rows. Gradients: the
documented STE (identity, zeroed where clipped; bitnet's ``alpha / gamma`` factor and the
product rule for ``alpha``).
"""

from __future__ import annotations

import pytest
import torch

from qmoe.quant import primitives as P
from qmoe.quant.bitlinear import BITLINEAR_BITS, bitlinear_int, bitlinear_scale, bitlinear_weight
from qmoe.quant.ternary import ternary_gamma, ternary_weight

EPS = P.EPS


def weights(case: str, shape: tuple[int, int] = (37, 53), seed: int = 0) -> torch.Tensor:
    """Float32 weights of a kind that stresses the rounding."""
    gen = torch.Generator().manual_seed(seed)
    w = torch.randn(shape, generator=gen) * 0.02
    if case == "ties":  # many values exactly on half-grid points and repeated values
        w = torch.randint(-8, 9, shape, generator=gen).float() / 16
    elif case == "zero-rows":
        w[: shape[0] // 2] = 0.0
    elif case == "zeros":
        w = torch.zeros(shape)
    elif case == "constant":
        w = torch.full(shape, 0.37)
    elif case == "outliers":
        w[0, 0], w[3, 5] = 4.0, -7.0
    elif case == "tiny":
        w = w * 1e-9
    return w


CASES = ["random", "ties", "zero-rows", "zeros", "constant", "outliers", "tiny"]


def old_bitlinear(w: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """DESIGN §3 q{k} as the former graph computed it: (value, 0/1 clip mask of the STE), from
    the layer's means of :func:`bitlinear_scale` (the kernels' fixed-order float64 sums, checked
    against a numpy reference and torch's ``mean()`` in ``test_qat_kernels.py``)."""
    mu, mean_abs = bitlinear_scale(w, 1)
    centred = w - mu
    if bits == 1:
        return torch.where(centred >= 0, 1.0, -1.0) * mean_abs, torch.ones_like(w)
    qmax = 2 ** (bits - 1) - 1
    scale = centred.abs().amax().clamp_min(EPS) / qmax
    r = torch.round(centred / scale)
    mask = ((r >= -qmax - 1) & (r <= qmax)).float()
    return r.clamp(-qmax - 1, qmax) * scale, mask


def old_ternary(w: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """bitnet as the former graph computed it: (value, ternary integers, 0/1 clip mask), from
    :func:`ternary_gamma`'s row means (checked in ``test_qat_kernels.py``)."""
    gamma = ternary_gamma(w)
    r = torch.round(w / gamma[:, None])
    t = r.clamp(-1, 1)
    return t * alpha[:, None], t, ((r >= -1) & (r <= 1)).float()


@pytest.mark.parametrize("bits", BITLINEAR_BITS)
@pytest.mark.parametrize("case", CASES)
def test_bitlinear_values_bit_identical_and_gradient_is_identity(bits: int, case: str) -> None:
    w0 = weights(case)
    expected, mask = old_bitlinear(w0, bits)
    w = w0.clone().requires_grad_()
    q = bitlinear_weight(w, bits)
    assert torch.equal(q, expected)
    with torch.no_grad():
        assert torch.equal(bitlinear_weight(w, bits), expected)  # eval / deployment path
    grad = torch.randn(w0.shape)
    q.backward(grad)
    assert torch.equal(mask, torch.ones_like(mask))  # the absmax grid never clips...
    assert torch.equal(w.grad, grad)  # ...so the STE is the identity, exactly


@pytest.mark.parametrize("bits", BITLINEAR_BITS)
@pytest.mark.parametrize("case", CASES)
def test_bitlinear_int_times_scale_is_the_fake_quant_weight(bits: int, case: str) -> None:
    w = weights(case, seed=bits)
    q, scales = bitlinear_int(w, bits)
    assert torch.equal(q.float() * scales["scale"], bitlinear_weight(w, bits))
    qmax = 2 ** (bits - 1) - 1
    assert int(q.min()) >= -qmax - 1 and int(q.max()) <= max(qmax, 1)


@pytest.mark.parametrize("bits", [2, 4, 8, 16])
@pytest.mark.parametrize("seed", range(5))
def test_bitlinear_scale_equals_max_abs_of_centred_weights(bits: int, seed: int) -> None:
    w = weights("random", (64, 200), seed) + seed * 0.01  # off-centre too
    mu, scale = bitlinear_scale(w, bits)
    # mu rounds its own (fixed-order float64) sum, not torch's: torch's float32 cascaded sum is
    # within (log2 n + 2) u mean|W| of the exact mean, the kernels' within u |mu| (u = 2^-24)
    tol = (torch.log2(torch.tensor(w.numel())) + 2) * 2.0**-24 * w.abs().mean() + 2.0**-24 * w.mean().abs()
    assert (mu - w.mean()).abs() <= tol
    assert torch.equal(scale, (w - mu).abs().amax().clamp_min(EPS) / (2 ** (bits - 1) - 1))


@pytest.mark.parametrize("case, shape", [(c, (37, 53)) for c in CASES] + [("random", (200, 300))])
def test_ternary_values_bit_identical_and_gradients_follow_the_ste(case: str, shape: tuple[int, int]) -> None:
    w0 = weights(case, shape=shape, seed=3)
    alpha0 = ternary_gamma(w0) * (1 + torch.rand(w0.shape[0], generator=torch.Generator().manual_seed(1)))
    expected, t, mask = old_ternary(w0, alpha0)
    w, alpha = w0.clone().requires_grad_(), alpha0.clone().requires_grad_()
    q = ternary_weight(w, alpha)
    assert torch.equal(q, expected)
    with torch.no_grad():
        assert torch.equal(ternary_weight(w, alpha), expected)
    grad = torch.randn(w0.shape)
    q.backward(grad)
    # to alpha: the product rule, sum_i t_i grad_i (each product exact): the float64 sum rounded
    # once, so within one float32 rounding of the exact sum (torch's float32 sum, in its own
    # order, is within (D - 1) u of the magnitudes)
    exact = (grad.double() * t.double()).sum(dim=1)
    assert ((alpha.grad.double() - exact).abs() <= 2.0**-24 * exact.abs() + 1e-45).all()
    # to W: identity times alpha / gamma, zero exactly where round(W / gamma) clipped
    gamma = ternary_gamma(w0)
    documented = grad * mask * (alpha0 / gamma)[:, None]
    assert torch.equal(w.grad == 0, documented == 0)
    torch.testing.assert_close(w.grad, documented, rtol=1e-6, atol=0)


def test_ternary_clips_where_round_leaves_minus_one_to_one() -> None:
    gamma = 1.0  # rows of constant |w| mean 1: w / gamma = w
    w = torch.tensor([[0.49, 0.5, 1.49, 1.5, 2.5, -1.5, -0.5, -3.0, 1.0, -1.0, 3.5, -1.6]])
    w = w / w.abs().mean() * gamma
    alpha = torch.ones(1, requires_grad=True)
    wr = w.clone().requires_grad_()
    ternary_weight(wr, alpha).sum().backward()
    r = torch.round(w / ternary_gamma(w)[:, None])
    assert torch.equal(wr.grad == 0, r.abs() > 1)


def test_ternary_alpha_gradient_passes_gradcheck() -> None:
    # the output is linear in alpha, so its STE gradient is the true one
    w = weights("outliers", (6, 9), seed=4).double()
    alpha = ternary_gamma(w).clone().requires_grad_()
    assert torch.autograd.gradcheck(lambda a: ternary_weight(w, a), (alpha,))


def test_ternary_gradients_only_where_asked() -> None:
    w = weights("random", seed=5)
    alpha = ternary_gamma(w).clone().requires_grad_()
    ternary_weight(w, alpha).sum().backward()  # weight without grad
    assert alpha.grad is not None and alpha.grad.shape == (w.shape[0],)
    wr = w.clone().requires_grad_()
    ternary_weight(wr, ternary_gamma(w)).sum().backward()  # alpha without grad
    assert wr.grad is not None and wr.grad.shape == w.shape


def old_absmax(x: torch.Tensor, bits: int) -> torch.Tensor:
    qmax = 2 ** (bits - 1) - 1
    s_x = qmax / x.abs().amax(dim=-1, keepdim=True).clamp_min(EPS)
    return torch.round(x * s_x).clamp(-qmax - 1, qmax) / s_x


@pytest.mark.parametrize("bits", [2, 4, 8])
@pytest.mark.parametrize("seed", range(4))
def test_absmax_values_bit_identical_never_clip_and_gradient_is_identity(bits: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x0 = torch.randn(16, 300, generator=gen) * torch.logspace(-6, 6, 16)[:, None]
    x0[0] = 0.0
    x0[1] = torch.randint(-4, 5, (300,), generator=gen).float() / 8  # ties
    x0[2, :] = 3.0  # all equal
    x = x0.clone().requires_grad_()
    y = P.absmax_quantize(x, bits)
    assert torch.equal(y, old_absmax(x0, bits))
    qmax = 2 ** (bits - 1) - 1
    assert (torch.round(x0 * P.absmax_scale(x0, bits)).abs() <= qmax).all()  # nothing clips
    grad = torch.randn(x0.shape, generator=gen)
    y.backward(grad)
    assert torch.equal(x.grad, grad)


def test_sign_pm1_matches_where_on_special_values() -> None:
    x = torch.tensor([0.0, -0.0, 1e-45, -1e-45, 2.0, -3.0, float("inf"), -float("inf"), float("nan")])
    x = torch.cat([x, torch.randn(1000)])
    assert torch.equal(P.sign_pm1(x), torch.where(x >= 0, 1.0, -1.0))
    assert torch.equal(P.sign_pm1(x.double()), torch.where(x.double() >= 0, 1.0, -1.0).double())


def test_quant_ste_mask_and_identity() -> None:
    x = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    mask = (torch.arange(5) % 2).double()
    y = P.quant_ste(x, lambda t: (t.round(), mask))
    assert torch.equal(y, x.detach().round()) and y.dtype == torch.float64
    grad = torch.randn(4, 5, dtype=torch.float64)
    y.backward(grad)
    assert torch.equal(x.grad, grad * mask)
    with torch.no_grad():  # no graph: the quantizer's value itself
        assert P.quant_ste(x, lambda t: (t.round(), None)).grad_fn is None
