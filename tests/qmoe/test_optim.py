"""qmoe's AdamW: the fused one-pass kernel rounds every operation exactly as the formula says
(checked against exact rational arithmetic), stays within float32 rounding of torch's AdamW,
folds gradient clipping in exactly; torch's passes where the kernel does not apply."""

from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch

import qmoe.optim
from qmoe.optim import AdamW
from qmoe.optim_kernel import adamw_step

f32 = np.float32
TINY = np.finfo(np.float32).tiny


def _round32(x: Fraction) -> np.float32:
    """``x`` rounded to the nearest float32, ties to even (exact: no double rounding)."""
    guess = np.float32(float(x))  # within one float32 step of the answer
    cands = [guess, np.nextafter(guess, f32(np.inf)), np.nextafter(guess, f32(-np.inf))]
    best = min(cands, key=lambda c: (abs(Fraction(float(c)) - x), int(np.array(c).view(np.int32)) & 1))
    return f32(best)


def _fma(a: np.float32, b: np.float32, c: np.float32) -> np.float32:
    return _round32(Fraction(float(a)) * Fraction(float(b)) + Fraction(float(c)))


def _reference(p, g, m, v, clip, decay, w1, beta2, w2, tiny, bc2, eps, neg):  # noqa: ANN001, ANN202
    """The kernel's formula element by element: numpy's float32 ``* / + sqrt`` are single
    correctly rounded IEEE operations; the two FMAs are rounded once from the exact value."""
    p, m, v = p.copy(), m.copy(), v.copy()
    for i in range(len(p)):
        gi = g[i] * clip
        pi = p[i] * decay
        mi = _fma(w1, gi - m[i], m[i])
        vi = _fma(w2 * gi, gi, v[i] * beta2)
        d = np.sqrt(tiny if vi < tiny else vi) / bc2 + eps
        p[i], m[i], v[i] = pi + (neg * mi) / d, mi, vi
    return p, m, v


def _case(n: int, seed: int) -> tuple[np.ndarray, ...]:
    """Parameters, gradients and moments as training has them, with the awkward values: exact
    zero gradients (an STE's clipped weights), zero second moments, gradients whose squares
    are subnormal, large gradients, negative everything."""
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(n) * 0.05).astype(f32)
    g = (rng.standard_normal(n) * 10.0 ** rng.integers(-22, 1, n)).astype(f32)
    g[rng.random(n) < 0.25] = 0.0
    m = (rng.standard_normal(n) * 1e-3).astype(f32)
    v = (rng.random(n) * 10.0 ** rng.integers(-30, -2, n)).astype(f32)
    v[rng.random(n) < 0.2] = 0.0
    return p, g, m, v


@pytest.mark.parametrize(("step", "clip", "seed"), [(1, 1.0, 0), (40, 0.37, 1), (3000, 1.0, 2)])
def test_kernel_rounds_every_operation_exactly(step: int, clip: float, seed: int) -> None:
    lr, wd, b1, b2, eps = 5.79e-4, 5.13e-3, 0.9, 0.999, 1e-8
    scalars = (f32(clip), f32(1 - lr * wd), f32(1 - b1), f32(b2), f32(1 - b2), f32(TINY),
               f32((1 - b2**step) ** 0.5), f32(eps), f32(-(lr / (1 - b1**step))))
    p, g, m, v = _case(1500, seed)
    want = _reference(p, g, m, v, *scalars)
    got = [p.copy(), g.copy(), m.copy(), v.copy()]
    adamw_step(*got, *scalars)
    assert np.array_equal(got[1], g)  # the gradient is read, never written
    for w, x in zip(want, (got[0], got[2], got[3])):
        assert np.array_equal(w.view(np.int32), x.view(np.int32))


def test_kernel_elements_are_independent() -> None:
    """Any split of a tensor (vector body, remainders) gives the same bits as the whole."""
    scalars = (f32(0.5), f32(0.999997), f32(0.1), f32(0.999), f32(0.001), f32(TINY), f32(0.03),
               f32(1e-8), f32(-1e-3))
    whole = [a.copy() for a in _case(1037, 3)]
    adamw_step(*whole, *scalars)
    parts = [a.copy() for a in _case(1037, 3)]
    for lo, hi in [(0, 1), (1, 18), (18, 531), (531, 1037)]:
        adamw_step(*(a[lo:hi] for a in parts), *scalars)
    assert all(np.array_equal(a.view(np.int32), b.view(np.int32)) for a, b in zip(whole, parts))


def _run(cls: type, steps: int = 40, clip: float | None = None, contiguous: bool = True,
         **kw: object) -> tuple[list[torch.Tensor], torch.optim.Optimizer]:
    torch.manual_seed(0)
    shapes = [(32, 48), (32,), (5, 32), (5,)]
    params = [torch.nn.Parameter(torch.randn(s) * 0.02) for s in shapes]
    if not contiguous:
        params[0] = torch.nn.Parameter(torch.randn(48, 32).t() * 0.02)
    opt = cls([{"params": params[:2]}, {"params": params[2:], "lr": 3e-3}], lr=5.79e-4,
              weight_decay=5.13e-3, **kw)
    gen = torch.Generator().manual_seed(1)
    for step in range(steps):
        for i, p in enumerate(params):
            # gradients from 1e-20 (squares below float32's smallest normal) to 1e-1, 30% exact
            # zeros (clipped by an STE), whole rows always zero, and now and then no gradient
            g = torch.randn(p.shape, generator=gen) * 10.0 ** torch.randint(-20, 0, p.shape, generator=gen)
            g[torch.rand(p.shape, generator=gen) < 0.3] = 0.0
            if i == 0:
                g[:4] = 0.0
            p.grad = None if (step % 7 == 3 and i == 1) else g.contiguous() if contiguous else g
        if clip is None:
            opt.step()
        elif isinstance(opt, AdamW):
            opt.clip_and_step(clip)
        else:
            torch.nn.utils.clip_grad_norm_(params, clip)
            opt.step()
    return [p.detach().clone() for p in params], opt


def _close_to_torch(got: list[torch.Tensor], want: list[torch.Tensor], steps: int) -> None:
    """Within one float32 step of the largest value per step taken: each step's update differs
    from torch's by at most a rounding (torch's MKL sqrt is not correctly rounded), which can
    move a parameter's rounding by one unit, at most once per step."""
    for a, b in zip(got, want):
        tol = steps * float(np.spacing(np.float32(b.abs().max())))
        assert (a - b).abs().max().item() <= tol


@pytest.mark.parametrize("clip", [None, 1.0, 1e-3])
def test_adamw_stays_within_rounding_of_torch(clip: float | None) -> None:
    want, ref = _run(torch.optim.AdamW, clip=clip)
    got, opt = _run(AdamW, clip=clip)
    _close_to_torch(got, want, 40)
    for p_ref, p in zip(ref.state, opt.state):
        assert torch.equal(ref.state[p_ref]["step"], opt.state[p]["step"])
        assert torch.allclose(ref.state[p_ref]["exp_avg"], opt.state[p]["exp_avg"], rtol=1e-5, atol=0)
    assert not all(torch.equal(a, b) for a, b in zip(got, want)), "the fused kernel did not run"


def test_clip_and_step_equals_clipping_then_stepping() -> None:
    """The clipping folded into the update is torch's clip_grad_norm_, bit for bit."""
    fused, _ = _run(AdamW, clip=0.05)

    class Unfused(AdamW):
        def clip_and_step(self, max_norm: float) -> None:
            torch.nn.utils.clip_grad_norm_([p for g in self.param_groups for p in g["params"]], max_norm)
            self.step()

    unfused, _ = _run(Unfused, clip=0.05)
    assert all(torch.equal(a, b) for a, b in zip(fused, unfused))


def test_without_the_kernel_torch_passes_bit_for_bit(monkeypatch: pytest.MonkeyPatch) -> None:
    """Where the kernel does not apply, the step is torch's AdamW, op for op."""
    monkeypatch.setattr(qmoe.optim, "adamw_step", None)
    for clip in (None, 0.05):
        want, ref = _run(torch.optim.AdamW, clip=clip)
        got, opt = _run(AdamW, clip=clip)
        assert all(torch.equal(a, b) for a, b in zip(want, got))
        for p_ref, p in zip(ref.state, opt.state):
            assert all(torch.equal(ref.state[p_ref][k], opt.state[p][k]) for k in ("step", "exp_avg", "exp_avg_sq"))


def test_other_settings_and_layouts_take_torch_passes() -> None:
    amsgrad, _ = _run(AdamW, amsgrad=True)  # other settings: torch's own step
    assert all(torch.equal(a, b) for a, b in zip(_run(torch.optim.AdamW, amsgrad=True)[0], amsgrad))
    strided, _ = _run(AdamW, contiguous=False, clip=0.05)  # a transposed weight: torch's passes
    want, _ = _run(torch.optim.AdamW, contiguous=False, clip=0.05)
    assert all(torch.equal(a, b) for a, b in zip(want, strided))


def test_training_steps_never_import_torch_dynamo() -> None:
    # torch's Optimizer.add_param_group and zero_grad import torch._dynamo (~150 MB, 1-2 s) on
    # their first call; a fresh process shows whether ours does (other tests may have imported it)
    import subprocess
    import sys

    code = ("import sys, torch\nfrom qmoe.optim import AdamW\n"
            "lin = torch.nn.Linear(8, 4)\nopt = AdamW(lin.parameters(), lr=1e-3)\n"
            "before = lin.weight.detach().clone()\n"
            "for _ in range(3):\n    opt.zero_grad()\n    lin(torch.randn(5, 8)).sum().backward()\n"
            "    opt.clip_and_step(1.0)\n"
            "print(int(not torch.equal(before, lin.weight)), len(opt.param_groups), "
            "int('torch._dynamo' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["1", "1", "0"]  # it trained, one group, and no torch._dynamo


@pytest.mark.parametrize(("name", "kind"),
                         [("q1", "layer"), ("q8", "layer"), ("bitnet", "ternary"), ("bitnet", "rows")])
def test_weight_statistics_from_the_step_change_no_bit(name: str, kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The forward's weight statistics computed in the optimizer's pass (qat_kernels'
    adamw_layer_stats / adamw_row_gamma) give the same training, bit for bit, as the forward
    computing them itself; and the forward does use them. bitnet: its one-node forward takes
    gamma and the ternary weight itself ("ternary"), its graph gamma alone ("rows")."""
    from qmoe.quant import qat_kernels
    from qmoe.quant.layers import QuantLinear
    from qmoe.quant.ternary import TernaryConfig

    if kind == "rows":  # the graph of the layer's parts
        monkeypatch.setattr(TernaryConfig, "one_node_linear", lambda *args: None)

    def train(use: bool) -> tuple[list[torch.Tensor], int]:
        torch.manual_seed(0)
        model = torch.nn.Sequential(QuantLinear(33, 40, name), torch.nn.ReLU(), QuantLinear(40, 5, name))
        opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
        x, y = torch.randn(16, 33), torch.randint(0, 5, (16,))
        hits = 0
        for _ in range(4):
            hits += sum(qat_kernels.cached_stats(layer.weight, kind) is not None for layer in (model[0], model[2]))
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(x), y).backward()
            opt.clip_and_step(0.5)
        return [p.detach().clone() for p in model.parameters()], hits

    got, hits = train(True)
    assert hits == 6  # steps 2-4 of both layers
    monkeypatch.setattr(qat_kernels, "request_stats", lambda *args, **kwargs: None)
    want, none = train(False)
    assert none == 0
    assert all(torch.equal(a, b) for a, b in zip(got, want))


def test_the_fused_step_bumps_the_parameter_version() -> None:
    """The kernel writes through numpy: the step tells torch (stale statistics, saved tensors)."""
    p = torch.nn.Parameter(torch.randn(10))
    opt = AdamW([p], lr=0.1)
    p.grad = torch.ones(10)
    before = p._version
    opt.step()
    assert p._version == before + 1
