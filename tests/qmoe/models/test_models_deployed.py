"""The deployed mixture: one native call, frozen router masks, the same code as the runtime."""

from __future__ import annotations

import numpy as np
import torch

from qmoe.models import MixtureOfExperts
from qmoe.models.deployed import DeployedMixture
from qmoe.native import NativeMixture, NativeMLP, frozen_masks
from qmoe.quant import deploy, deploy_form, size_report


def _moe(alpha: float = 0.3, mc: int = 10, experts=("bitnet", "q4", "q8")) -> MixtureOfExperts:
    torch.manual_seed(0)
    return MixtureOfExperts(40, 5, list(experts), hidden=(24, 12), dropout=0.1, alpha=alpha,
                            mc_samples=mc).eval()


def test_deployed_mixture_is_the_native_mixture_of_its_canonical_data() -> None:
    """What an export stores (canonical experts, router, masks) rebuilds the same function."""
    deployed = deploy(_moe(), seed=11)
    assert isinstance(deployed, DeployedMixture)
    native = deployed.native
    rebuilt = NativeMixture(native.experts, native.router, alpha=native.alpha, top_k=native.top_k)
    x = torch.randn(33, 40)
    out, again = deployed(x), rebuilt(x.numpy())
    for name in ("logits", "p", "p_cur", "uncertainty", "kl"):
        assert np.array_equal(getattr(out, name).numpy(), getattr(again, name)), name
    assert np.array_equal(out.selected.numpy(), again.selected)
    assert out.lb_loss.item() == again.lb_loss
    assert np.array_equal(native.router.masks, frozen_masks(11, 10, 128, 0.2))


def test_deployed_expert_is_the_native_mlp_of_its_canonical_layers() -> None:
    moe = _moe()
    for expert in moe.experts:
        deployed = deploy(expert)
        x = torch.randn(9, 40)
        assert np.array_equal(deployed(x).numpy(), NativeMLP(deployed.net.native.layers)(x.numpy()))


def test_frozen_masks_make_the_deployed_router_deterministic() -> None:
    moe = _moe()
    x = torch.randn(20, 40)
    a, b, c = deploy(moe, seed=1)(x), deploy(moe, seed=1)(x), deploy(moe, seed=2)(x)
    assert torch.equal(a.p, b.p) and torch.equal(a.logits, b.logits)
    assert not torch.equal(a.p, c.p)  # other masks, another (equally valid) Bayesian router
    assert (a.uncertainty > 0).any()  # still the spread of M dropout passes


def test_one_pass_router_matches_the_torch_mixture() -> None:
    """With M = 1 the torch router has no dropout either: the two mixtures compute the same
    routing up to float rounding (fp32 experts: no integer rounding to flip)."""
    moe = _moe(alpha=0.5, mc=1, experts=("fp32", "fp32", "fp32"))
    for e, scale in zip(moe.experts, (1.0, 3.0, -2.0)):  # experts that disagree
        with torch.no_grad():
            e.net[-1].weight.mul_(scale)
    x = torch.randn(64, 40)
    with torch.no_grad():
        ref = moe(x)
    got = deploy(moe, seed=0)(x)
    for name in ("logits", "p", "p_cur", "kl"):
        torch.testing.assert_close(getattr(got, name), getattr(ref, name), rtol=1e-4, atol=1e-5)
    top = ref.p_cur.topk(2, dim=1).values
    clear = (top[:, 0] - top[:, 1]) > 1e-4
    assert torch.equal(got.selected[clear], ref.selected[clear])


def test_deployed_mixture_reports_its_forms_and_size() -> None:
    moe = _moe()
    deployed = deploy(moe)
    assert deploy_form(deployed) == "numba-bitplane,numba-int8-dot,numba-fp32"
    assert size_report(deployed) == size_report(moe)
    assert not any(p.requires_grad for p in deployed.parameters()) and not deployed.training
