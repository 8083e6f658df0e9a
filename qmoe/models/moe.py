"""The mixture of quantized experts with curiosity routing (DESIGN §4, paper Eq. 5-8).

Curiosity is computed so that it changes routing: every expert gets its *own* divergence
``KL_i = KL(q_i || q_bar)`` from the experts' mean prediction, and ``p_i^cur ∝ p_i exp(α KL_i)``.
(The published code multiplied all experts of a sample by one common factor, which the
renormalisation cancels.) With α = 0 the routing is exactly the learned router's ``p``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from qmoe.models.expert import Expert
from qmoe.models.router import Router

_EPS = 1e-12


def expert_divergence(expert_logits: torch.Tensor) -> torch.Tensor:
    """``KL(q_i || q_bar)`` per sample and expert, (B, N), from logits (B, N, C)."""
    log_q = torch.log_softmax(expert_logits, dim=-1)  # (B, N, C)
    q = log_q.exp()
    log_q_bar = torch.log(q.mean(dim=1, keepdim=True).clamp_min(_EPS))  # (B, 1, C)
    return (q * (log_q - log_q_bar)).sum(dim=-1).clamp_min(0.0)  # (B, N)


def curiosity_routing(p: torch.Tensor, kl: torch.Tensor, alpha: float) -> torch.Tensor:
    """``p_i exp(α KL_i)`` renormalised over experts; returns ``p`` itself when α = 0.

    Args:
        p: router probabilities (B, N).
        kl: per-expert divergences (B, N); treated as a constant (no gradient).
        alpha: curiosity strength, >= 0.
    """
    if alpha == 0:
        return p
    logits = torch.log(p.clamp_min(_EPS)) + alpha * kl.detach()
    return torch.softmax(logits, dim=-1)


@dataclass
class MoEOutput:
    """Everything one forward pass of the mixture computes (tensors, batch first)."""

    logits: torch.Tensor  # (B, C) combined output
    p: torch.Tensor  # (B, N) router probabilities (mean of the MC passes)
    p_cur: torch.Tensor  # (B, N) after curiosity
    uncertainty: torch.Tensor  # (B, N) std of the router probabilities over MC passes
    kl: torch.Tensor  # (B, N) KL(q_i || q_bar)
    selected: torch.Tensor  # (B, k) indices of the chosen experts, best first
    lb_loss: torch.Tensor  # () Switch load-balancing loss N * sum_i f_i P_i


class MixtureOfExperts(nn.Module):
    """Quantized experts (one per quantizer name) and a Bayesian, curiosity-aware router.

    ``y = sum_{i in TopK(p_cur)} p_cur_i E_i(z)``: the weights are the selected experts'
    routing probabilities themselves (not renormalised over the top-k), so with k = 1 the
    router still gets a gradient from the task loss.
    """

    def __init__(self, in_dim: int, n_classes: int, quantizers: Sequence[str], *,
                 hidden: Sequence[int], dropout: float, router_dropout: float = 0.2,
                 alpha: float = 0.0, top_k: int = 1, mc_samples: int = 10,
                 temperature: float = 1.0) -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            Expert(in_dim, n_classes, hidden, q, dropout) for q in quantizers)
        self.names = [e.quantizer for e in self.experts]
        self.router = Router(in_dim, len(self.experts), router_dropout)
        self.alpha = float(alpha)
        self.top_k = min(int(top_k), len(self.experts))
        self.mc_samples = int(mc_samples)
        self.temperature = float(temperature)

    def route(self, z: torch.Tensor, expert_logits: torch.Tensor) -> MoEOutput:
        """Combine precomputed expert logits (B, N, C) for inputs z (B, D)."""
        p, unc = self.router.mc_probs(z, self.mc_samples, self.temperature)  # (B, N) each
        kl = expert_divergence(expert_logits)  # (B, N)
        p_cur = curiosity_routing(p, kl, self.alpha)
        weights, selected = torch.topk(p_cur, self.top_k, dim=-1)  # (B, k)
        chosen = torch.gather(
            expert_logits, 1, selected.unsqueeze(-1).expand(-1, -1, expert_logits.shape[-1]))
        logits = (weights.unsqueeze(-1) * chosen).sum(dim=1)  # (B, C)
        n = p.shape[-1]
        f = torch.bincount(selected[:, 0], minlength=n).to(p.dtype) / p.shape[0]  # (N,)
        lb = n * (f * p.mean(dim=0)).sum()
        return MoEOutput(logits, p, p_cur, unc, kl, selected, lb)

    def forward(self, z: torch.Tensor) -> MoEOutput:
        expert_logits = torch.stack([e(z) for e in self.experts], dim=1)  # (B, N, C)
        return self.route(z, expert_logits)

    def deploy_native(self, seed: int) -> nn.Module:
        """The deployed mixture (:class:`~qmoe.models.deployed.DeployedMixture`): experts,
        router with its Monte-Carlo masks frozen from ``seed``, and curiosity in one native call."""
        from qmoe.models.deployed import DeployedMixture

        return DeployedMixture(self, seed).eval().requires_grad_(False)
