"""The mixture of quantized experts with curiosity routing (DESIGN §4, paper Eq. 5-8).

Two curiosity variants (``curiosity``), both with α = 0 exactly the learned router's ``p``:

- ``kl`` (the paper's Eq. 8, the default): every expert gets its *own* divergence
  ``KL_i = KL(q_i || q_bar)`` from the experts' mean prediction, and
  ``p_i^cur ∝ p_i exp(α KL_i)``. (The published code multiplied all experts of a sample by one
  common factor, which the renormalisation cancels.)
- ``entropy`` (the published code's later ``entropy_regularization`` strategy, its default
  there, made per sample and batch-independent so that it does something): the router's
  distribution is sharpened by how uncertain the sample is, ``p_i^cur ∝ p_i^(1 + α u H)``, i.e.
  ``p_i exp(α u H log p_i)``, with ``H = H(p) / log N`` the routing entropy in [0, 1] and
  ``u`` the sample's MC-dropout uncertainty (the mean over experts of the std of ``p`` over the
  M passes) divided by its maximum 0.5, in [0, 1]. See :func:`entropy_routing`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import math

import torch
from torch import nn

from qmoe.errors import ConfigError
from qmoe.models.expert import Expert
from qmoe.models.router import Router
from qmoe.native.layout import UNCERTAINTY_MAX
from qmoe.spec import CURIOSITIES

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


def entropy_gain(p: torch.Tensor, uncertainty: torch.Tensor) -> torch.Tensor:
    """``u H`` per sample (B, 1), in [0, 1]: the normalised MC uncertainty times the
    normalised routing entropy (see :func:`entropy_routing`)."""
    n = p.shape[-1]
    log_p = torch.log(p.clamp_min(_EPS))
    h = -(p * log_p).sum(dim=-1, keepdim=True) / math.log(n)  # (B, 1) in [0, 1]
    u = (uncertainty.mean(dim=-1, keepdim=True) / UNCERTAINTY_MAX).clamp(0.0, 1.0)  # (B, 1)
    return (u * h).clamp(0.0, 1.0)


def entropy_routing(p: torch.Tensor, uncertainty: torch.Tensor, alpha: float) -> torch.Tensor:
    """``p_i^(1 + α u H)`` renormalised over experts; returns ``p`` itself when α = 0.

    The published ``entropy_regularization`` min-max normalised the uncertainty over the
    *batch* (so a sample's routing depended on the other samples of its batch, and at batch 1 it
    was the identity) and multiplied every expert of a sample by one common factor, which the
    renormalisation cancels (DESIGN §11). Here the factor is an exponent of each expert's own
    probability and ``u``, ``H`` are the sample's own, bounded by their maxima rather than by
    the batch: the same sample is routed the same in any batch.

    A monotone sharpening never changes which expert ranks first: it moves the selected
    expert's weight (towards 1 for an uncertain, undecided sample), hence the task loss's
    gradient and what the router learns; the top-1 choice changes only through training
    (and the top-k mix for k > 1).

    Args:
        p: router probabilities (B, N), the mean of the MC passes.
        uncertainty: std of the router probabilities over the MC passes (B, N).
        alpha: curiosity strength, >= 0.
    """
    if alpha == 0:
        return p
    gain = 1.0 + alpha * entropy_gain(p, uncertainty).detach()  # (B, 1): a constant, like KL
    return torch.softmax(gain * torch.log(p.clamp_min(_EPS)), dim=-1)


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
                 temperature: float = 1.0, curiosity: str = "kl") -> None:
        super().__init__()
        self.experts = nn.ModuleList(
            Expert(in_dim, n_classes, hidden, q, dropout) for q in quantizers)
        self.names = [e.quantizer for e in self.experts]
        self.router = Router(in_dim, len(self.experts), router_dropout)
        self.alpha = float(alpha)
        if curiosity not in CURIOSITIES:
            raise ConfigError(f"curiosity {curiosity!r} is unknown; known: {', '.join(CURIOSITIES)}")
        self.curiosity = curiosity
        self.top_k = min(int(top_k), len(self.experts))
        self.mc_samples = int(mc_samples)
        self.temperature = float(temperature)

    def route(self, z: torch.Tensor, expert_logits: torch.Tensor) -> MoEOutput:
        """Combine precomputed expert logits (B, N, C) for inputs z (B, D)."""
        p, unc = self.router.mc_probs(z, self.mc_samples, self.temperature)  # (B, N) each
        kl = expert_divergence(expert_logits)  # (B, N)
        p_cur = (entropy_routing(p, unc, self.alpha) if self.curiosity == "entropy"
                 else curiosity_routing(p, kl, self.alpha))
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
