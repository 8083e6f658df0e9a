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


def _adamw_run(cls: type, steps: int = 40, **kw: object) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    torch.manual_seed(0)
    params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in [(32, 48), (32,), (5, 32), (5,)]]
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}], lr=5.79e-4,
              weight_decay=5.13e-3, **kw)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            # gradients from 1e-20 (squares below float32's smallest normal) to 1e-2, 30% exact
            # zeros (clipped by an STE), whole rows always zero, and now and then no gradient
            g = torch.randn(p.shape, generator=gen) * 10.0 ** torch.randint(-20, -1, p.shape, generator=gen)
            g[torch.rand(p.shape, generator=gen) < 0.3] = 0.0
            if i == 0:
                g[:4] = 0.0
            p.grad = None if (step % 7 == 3 and i == 1) else g
        opt.step()
    return [p.detach().clone() for p in params], opt


def test_adamw_equals_torch_adamw_bit_for_bit() -> None:
    from qmoe.train import AdamW

    expected, ref = _adamw_run(torch.optim.AdamW)
    got, opt = _adamw_run(AdamW)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    for p_ref, p in zip(ref.state, opt.state):
        assert all(torch.equal(ref.state[p_ref][k], opt.state[p][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    amsgrad, _ = _adamw_run(AdamW, amsgrad=True)  # other settings: torch's own step
    assert all(torch.equal(a, b) for a, b in zip(_adamw_run(torch.optim.AdamW, amsgrad=True)[0], amsgrad))
