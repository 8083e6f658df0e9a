"""The training loop's determinism (with the process-level malloc settings it applies)."""

from __future__ import annotations

import numpy as np
import torch

from qmoe.models import Expert
from qmoe.spec import TrainConfig
from qmoe.train import fit


def _data(n: int = 96, d: int = 12, c: int = 3) -> tuple[torch.Tensor, np.ndarray]:
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(n) % c
    x = torch.randn(n, d, generator=gen) + 2.0 * torch.nn.functional.one_hot(y, d).float()
    return x, y.numpy()


def test_qat_training_is_deterministic_for_every_qat_quantizer() -> None:
    x, y = _data()
    cfg = TrainConfig.single().replace(max_epochs=3, patience=3, hidden=(16, 8), batch_size=16)
    for q in ("q1", "q2", "q4", "q8", "q16", "bitnet"):
        states = []
        for _ in range(2):
            torch.manual_seed(1)
            model = Expert(12, 3, cfg.hidden, q, cfg.dropout)
            result = fit(model, x, y, x[:24], y[:24], cfg, n_classes=3, seed=5)
            states.append((result.history, {k: v.clone() for k, v in model.state_dict().items()}))
        assert states[0][0] == states[1][0], q
        assert all(torch.equal(states[0][1][k], states[1][1][k]) for k in states[0][1]), q
