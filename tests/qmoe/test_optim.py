"""qmoe's AdamW: torch.optim.AdamW bit for bit (the default path re-implemented, others torch's)."""

from __future__ import annotations

import torch

from qmoe.optim import AdamW


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
    expected, ref = _adamw_run(torch.optim.AdamW)
    got, opt = _adamw_run(AdamW)
    assert all(torch.equal(a, b) for a, b in zip(expected, got))
    for p_ref, p in zip(ref.state, opt.state):
        assert all(torch.equal(ref.state[p_ref][k], opt.state[p][k]) for k in ("step", "exp_avg", "exp_avg_sq"))
    amsgrad, _ = _adamw_run(AdamW, amsgrad=True)  # other settings: torch's own step
    assert all(torch.equal(a, b) for a, b in zip(_adamw_run(torch.optim.AdamW, amsgrad=True)[0], amsgrad))
