"""The Bayesian router: a small MLP whose dropout stays on for Monte-Carlo passes."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from qmoe.models.dropout import dropout


class Router(nn.Module):
    """``Linear(D,128) - ReLU - Dropout - Linear(128,64) - ReLU - Linear(64,N)``, Xavier init."""

    def __init__(self, in_dim: int, n_experts: int, dropout: float = 0.2) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_dim, 128)
        self.fc2 = nn.Linear(128, 64)
        self.fc3 = nn.Linear(64, n_experts)
        self.dropout = dropout
        for layer in (self.fc1, self.fc2, self.fc3):
            nn.init.xavier_uniform_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, z: torch.Tensor, mc: bool = False) -> torch.Tensor:
        """Routing logits (B, N); dropout is active in training or when ``mc`` is set."""
        return self._head(F.relu(self.fc1(z)), mc)

    def _head(self, h: torch.Tensor, mc: bool) -> torch.Tensor:
        h = dropout(h, self.dropout, training=self.training or mc)
        h = F.relu(self.fc2(h))
        return self.fc3(h)

    def mc_probs(self, z: torch.Tensor, samples: int, temperature: float = 1.0
                 ) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and std of ``softmax(g(z)/T)`` over ``samples`` dropout passes, each (B, N).

        The mean is the router's ``p``; the spread is the sample's epistemic uncertainty.
        One pass without MC (``samples == 1`` in eval) is the deterministic router. The
        first layer comes before the dropout, so it is computed once for all passes.
        """
        mc = samples > 1
        h = F.relu(self.fc1(z))  # (B, 128), the same in every pass
        h_rep = h.unsqueeze(0).expand(samples, *h.shape).reshape(samples * h.shape[0], -1)
        logits = self._head(h_rep, mc).view(samples, z.shape[0], -1)  # (M, B, N)
        probs = torch.softmax(logits / temperature, dim=-1)
        std = probs.std(dim=0, unbiased=False) if samples > 1 else torch.zeros_like(probs[0])
        return probs.mean(dim=0), std
