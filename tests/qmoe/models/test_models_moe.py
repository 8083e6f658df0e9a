"""The mixture: top-k combination, load balancing, Bayesian router, gradients."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from qmoe.models import Expert, MixtureOfExperts, Router


def make_moe(alpha: float = 0.0, top_k: int = 1, mc: int = 10) -> MixtureOfExperts:
    torch.manual_seed(0)
    return MixtureOfExperts(16, 4, ["bitnet", "q4", "q8"], hidden=(8,), dropout=0.1,
                            alpha=alpha, top_k=top_k, mc_samples=mc)


def test_expert_shapes_and_quantizer_is_a_parameter() -> None:
    e = Expert(16, 4, (8, 6), "q4", 0.1)
    assert e(torch.randn(3, 16)).shape == (3, 4)
    assert e.quantizer == "q4" and type(e) is type(Expert(16, 4, (8,), "fp32", 0.0))


def test_router_architecture_and_xavier_init() -> None:
    r = Router(16, 3)
    assert [m.weight.shape for m in (r.fc1, r.fc2, r.fc3)] == [(128, 16), (64, 128), (3, 64)]
    assert float(r.fc1.bias.detach().abs().sum()) == 0.0
    bound = (6 / (16 + 128)) ** 0.5
    assert float(r.fc1.weight.detach().abs().max()) <= bound


def test_mc_router_mean_and_spread() -> None:
    torch.manual_seed(1)
    r = Router(16, 3).eval()
    z = torch.randn(5, 16)
    p, std = r.mc_probs(z, 10)
    assert torch.allclose(p.sum(dim=1), torch.ones(5), atol=1e-6)
    assert bool((std > 0).any()), "MC dropout passes must differ in eval"
    p1, std1 = r.mc_probs(z, 1)
    assert torch.equal(std1, torch.zeros_like(std1))
    assert torch.allclose(p1, torch.softmax(r(z), dim=1))


def test_top1_output_is_selected_expert_times_its_probability() -> None:
    moe = make_moe().eval()
    z = torch.randn(6, 16)
    torch.manual_seed(3)
    out = moe(z)
    expert_logits = torch.stack([e(z) for e in moe.experts], dim=1)
    sel = out.selected[:, 0]
    rows = torch.arange(6)
    expected = out.p[rows, sel].unsqueeze(1) * expert_logits[rows, sel]
    assert torch.allclose(out.logits, expected, atol=1e-6)
    assert torch.equal(out.p_cur, out.p)  # alpha = 0


def test_top2_weights_are_not_renormalised() -> None:
    moe = make_moe(top_k=2).eval()
    z = torch.randn(4, 16)
    out = moe(z)
    expert_logits = torch.stack([e(z) for e in moe.experts], dim=1)
    w = torch.gather(out.p_cur, 1, out.selected)
    chosen = torch.gather(expert_logits, 1, out.selected.unsqueeze(-1).expand(-1, -1, 4))
    assert torch.allclose(out.logits, (w.unsqueeze(-1) * chosen).sum(1), atol=1e-6)
    assert bool((w.sum(dim=1) < 1).all())


def test_load_balancing_loss_is_switch_style() -> None:
    moe = make_moe().eval()
    out = moe(torch.randn(32, 16))
    f = torch.bincount(out.selected[:, 0], minlength=3).float() / 32
    assert torch.allclose(out.lb_loss, 3 * (f * out.p.mean(0)).sum())


def test_router_gets_gradient_from_the_task_with_top1() -> None:
    moe = make_moe(alpha=0.3).train()
    out = moe(torch.randn(16, 16))
    F.cross_entropy(out.logits, torch.randint(0, 4, (16,))).backward()
    assert moe.router.fc3.weight.grad is not None
    assert float(moe.router.fc3.weight.grad.abs().sum()) > 0
