"""The entropy curiosity variant: sharpens uncertain, undecided samples, per sample only."""

from __future__ import annotations

import math

import pytest
import torch

from qmoe.errors import ConfigError
from qmoe.models import MixtureOfExperts
from qmoe.models.moe import entropy_gain, entropy_routing

# float32 softmax(log p) reproduces p up to a few ulps (~1.2e-7 each) of exp/log/sum; 1e-6 is
# a bound on that rounding, far below the changes the variant makes (> 1e-3 below).
ROUNDING = 1e-6


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    """Rows: 0 uncertain and undecided; 1 certain (u = 0); 2 decided (one-hot p, H = 0);
    3 uncertain and fairly decided."""
    p = torch.tensor([[0.40, 0.35, 0.25], [0.40, 0.35, 0.25], [1.0, 0.0, 0.0], [0.80, 0.15, 0.05]])
    u = torch.tensor([[0.20, 0.25, 0.15], [0.0, 0.0, 0.0], [0.20, 0.25, 0.15], [0.20, 0.25, 0.15]])
    return p, u


def test_gain_is_normalised_uncertainty_times_normalised_entropy() -> None:
    p, u = batch()
    gain = entropy_gain(p, u)
    assert gain.shape == (4, 1)
    h0 = -(p[0] * p[0].log()).sum() / math.log(3)
    assert gain[0, 0].item() == pytest.approx((0.20 / 0.5) * h0.item(), abs=ROUNDING)
    assert gain[1, 0].item() == 0.0 and gain[2, 0].item() == pytest.approx(0.0, abs=ROUNDING)
    maximal = entropy_gain(torch.full((1, 3), 1 / 3), torch.full((1, 3), 0.5))  # both at their maxima
    assert maximal.item() == pytest.approx(1.0, abs=ROUNDING)


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0])
def test_uncertain_samples_are_sharpened_others_unchanged(alpha: float) -> None:
    p, u = batch()
    p_cur = entropy_routing(p, u, alpha)
    assert torch.allclose(p_cur.sum(dim=1), torch.ones(4), atol=ROUNDING)
    for row in (0, 3):  # uncertain: the leading expert gains weight, the last one loses it
        assert p_cur[row, 0] > p[row, 0] + 1e-3 and p_cur[row, 2] < p[row, 2] - 1e-4
    for row in (1, 2):  # u = 0, or H = 0: exactly the router's distribution (up to rounding)
        assert torch.allclose(p_cur[row], p[row], atol=ROUNDING)
    # a monotone sharpening never changes which expert ranks first
    assert torch.equal(p_cur.argmax(dim=1), p.argmax(dim=1))


def test_more_alpha_sharpens_more() -> None:
    p, u = batch()
    assert entropy_routing(p, u, 5.0)[0, 0] > entropy_routing(p, u, 1.0)[0, 0] > entropy_routing(p, u, 0.2)[0, 0]


def test_alpha_zero_is_exactly_plain_routing() -> None:
    p, u = batch()
    assert entropy_routing(p, u, 0.0) is p


def test_a_sample_is_routed_the_same_in_any_batch() -> None:
    """The published variant min-max normalised u over the batch; here a sample's p_cur is its own."""
    torch.manual_seed(0)
    p = torch.softmax(torch.randn(64, 3), dim=1)
    u = torch.rand(64, 3) * 0.3
    full = entropy_routing(p, u, 1.0)
    alone = torch.cat([entropy_routing(p[i:i + 1], u[i:i + 1], 1.0) for i in range(64)])
    # row-wise ops only; the tolerance covers a kernel vectorising differently by batch size
    # (a batch min-max normalisation would move p_cur by orders of magnitude more)
    assert torch.allclose(full, alone, atol=ROUNDING)
    perm = torch.randperm(64)
    assert torch.allclose(entropy_routing(p[perm], u[perm], 1.0), full[perm], atol=ROUNDING)
    # neighbours with far larger uncertainty do not change sample 0 (a batch min-max would)
    others = torch.cat([p[:1], p[1:]]), torch.cat([u[:1], u[1:] + 0.2])
    assert torch.allclose(entropy_routing(*others, 1.0)[0], full[0], atol=ROUNDING)


def test_the_gain_is_a_constant_for_the_gradient() -> None:
    """Like KL in Eq. 8, u H scales the exponent but is not itself trained through."""
    p, u = batch()
    logits = p.clamp_min(1e-3).log()

    def grad(fn) -> torch.Tensor:
        x = logits.clone().requires_grad_(True)
        fn(torch.softmax(x, dim=1))[:, 0].sum().backward()
        assert x.grad is not None
        return x.grad

    gain = 1.0 + 1.0 * entropy_gain(torch.softmax(logits, dim=1), u)
    constant = grad(lambda q: torch.softmax(gain * q.clamp_min(1e-12).log(), dim=1))
    assert torch.allclose(grad(lambda q: entropy_routing(q, u, 1.0)), constant, atol=ROUNDING)
    assert constant[0].abs().sum() > 1e-3  # the router still gets a gradient


def test_mixture_uses_the_variant() -> None:
    torch.manual_seed(0)
    z = torch.randn(32, 16)
    kwargs = dict(hidden=(8,), dropout=0.1, mc_samples=10)
    plain = MixtureOfExperts(16, 4, ["bitnet", "q4", "q8"], alpha=0.0, curiosity="entropy", **kwargs)
    plain.train()
    torch.manual_seed(1)
    out = plain(z)
    assert out.p_cur is out.p  # alpha = 0: plain routing whatever the variant
    plain.alpha = 2.0
    torch.manual_seed(1)
    sharpened = plain(z)
    assert torch.equal(sharpened.p, out.p)  # same dropout masks
    assert torch.allclose(sharpened.p_cur, entropy_routing(sharpened.p, sharpened.uncertainty, 2.0))
    assert (sharpened.p_cur.max(dim=1).values >= out.p.max(dim=1).values - ROUNDING).all()
    assert (sharpened.p_cur.max(dim=1).values > out.p.max(dim=1).values + 1e-4).any()
    with pytest.raises(ConfigError, match="curiosity 'ucb' is unknown"):
        MixtureOfExperts(16, 4, ["bitnet", "q4"], curiosity="ucb", **kwargs)
