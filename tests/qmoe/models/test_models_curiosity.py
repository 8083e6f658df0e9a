"""Curiosity routing changes routing where experts disagree, and only there (DESIGN §4)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

from qmoe.models.moe import curiosity_routing, expert_divergence

RoutingFn = Callable[[torch.Tensor, torch.Tensor, float], torch.Tensor]


def published_bug(p: torch.Tensor, kl: torch.Tensor, alpha: float) -> torch.Tensor:
    """The published 'corrected' curiosity: one common factor per sample (the mean KL)."""
    factor = torch.exp(alpha * kl.mean(dim=1, keepdim=True))  # (B, 1): same for every expert
    boosted = p * factor
    return boosted / boosted.sum(dim=1, keepdim=True)


def scenario() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Router p prefers expert 0 slightly; samples 0-49 agree, 50-99 have an outlier expert 2."""
    torch.manual_seed(0)
    b, n, c = 100, 3, 5
    p = torch.tensor([0.40, 0.35, 0.25]).repeat(b, 1)
    base = torch.randn(b, 1, c) * 3
    logits = base.repeat(1, n, 1)  # (B, N, C): all experts identical -> agreement
    disagree = torch.arange(b) >= 50
    logits[disagree, 2] = -logits[disagree, 2]  # expert 2 predicts something else
    return p, logits, disagree


def top1_changes(fn: RoutingFn, alpha: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Which samples' top-1 expert differs from plain routing, split by (agree, disagree)."""
    p, logits, disagree = scenario()
    kl = expert_divergence(logits)
    changed = fn(p, kl, alpha).argmax(dim=1) != p.argmax(dim=1)
    return changed[~disagree], changed[disagree]


def test_kl_is_one_value_per_expert_and_zero_on_agreement() -> None:
    p, logits, disagree = scenario()
    kl = expert_divergence(logits)
    assert kl.shape == (100, 3)
    assert torch.allclose(kl[~disagree], torch.zeros_like(kl[~disagree]), atol=1e-6)
    # the outlier diverges most from the mean prediction
    assert bool((kl[disagree].argmax(dim=1) == 2).all())
    assert bool((kl[disagree, 2] > kl[disagree, 0] + 1e-3).all())


def test_alpha_zero_is_exactly_plain_routing() -> None:
    p, logits, _ = scenario()
    assert curiosity_routing(p, expert_divergence(logits), 0.0) is p


@pytest.mark.parametrize("alpha", [0.2, 1.0, 5.0, 50.0])
def test_agreeing_experts_never_change_top1(alpha: float) -> None:
    agree_changed, _ = top1_changes(curiosity_routing, alpha)
    assert not bool(agree_changed.any())


def test_disagreeing_experts_change_top1_for_large_enough_alpha() -> None:
    _, small = top1_changes(curiosity_routing, 0.01)
    _, large = top1_changes(curiosity_routing, 5.0)
    assert not bool(small.any())  # a tiny bonus does not overturn the router
    assert bool(large.all())  # a strong one sends every disagreeing sample to the outlier


def test_the_published_common_factor_formulation_fails_the_check() -> None:
    for alpha in (0.2, 5.0, 50.0):
        _, disagree_changed = top1_changes(published_bug, alpha)
        assert not bool(disagree_changed.any()), "a common factor cannot change routing"
    # ...which is exactly what the test above requires of the real routing
    assert bool(top1_changes(curiosity_routing, 5.0)[1].any())


def test_curiosity_is_a_distribution_and_has_no_gradient_through_kl() -> None:
    p, logits, _ = scenario()
    logits.requires_grad_(True)
    p = p.clone().requires_grad_(True)
    out = curiosity_routing(p, expert_divergence(logits), 1.0)
    assert torch.allclose(out.sum(dim=1), torch.ones(100))
    out[:, 0].sum().backward()
    assert p.grad is not None and logits.grad is None
