"""Training with the QAT kernels gives the same bits as main's kernels did (0d22b6c; cf8ed4c for
the statistics): the former ``ternary_grads``, ``absmax_rows``, ``signs``, ``layer_stats`` and
``adamw_layer_stats`` (one lane loop per sum, max and min, since fused into one loop) are kept
here verbatim and patched in, and a few steps of each quantizer's training must leave every
parameter ``torch.equal``."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmoe import optim
from qmoe.optim import AdamW
from qmoe.quant import qat_kernels, qat_signs, ternary
from qmoe.quant.layers import QuantLinear

pytestmark = pytest.mark.skipif(qat_kernels.njit is None, reason="numba is not installed")

if qat_kernels.njit is not None:
    from numba import njit

    @njit(error_model="numpy")
    def main_ternary_grads(rounded, ratio, grad, grad_w, grad_alpha):  # noqa: ANN001, ANN201
        one, two, zero = np.float32(1.0), np.float32(2.0), np.float32(0.0)
        n = grad.shape[1]
        prod = np.empty(n, np.float32)
        for j in range(grad.shape[0]):
            rt = ratio[j]
            for i in range(n):
                r, g = np.float32(rounded[j, i]), grad[j, i]
                prod[i] = min(max(r, -one), one) * g
                grad_w[j, i] = (min(max(abs(r) - two, -one), zero) * rt) * g
            grad_alpha[j] = np.float32(qat_kernels.block_sum(prod, 0, n))

    @njit(error_model="numpy")
    def main_absmax_rows(x, qmax, eps, out):  # noqa: ANN001, ANN201
        lo = -qmax - np.float32(1.0)
        n = x.shape[1]
        top = n - n % 16
        lanes = np.empty(16, np.float32)
        for r in range(x.shape[0]):
            lanes[:] = np.float32(0.0)
            for i in range(0, top, 16):
                for k in range(16):
                    a = abs(x[r, i + k])
                    lanes[k] = a if a > lanes[k] else lanes[k]
            m = np.float32(0.0)
            for k in range(16):
                m = lanes[k] if lanes[k] > m else m
            for i in range(top, n):
                a = abs(x[r, i])
                m = a if a > m else m
            m = m if m > eps else eps
            s = (np.float32(1.0) / m) * qmax
            for i in range(n):
                out[r, i] = min(max(np.rint(x[r, i] * s), lo), qmax) / s


    @njit(error_model="numpy")
    def main_signs(w, mu, scale, out):  # noqa: ANN001, ANN201
        for i in range(w.shape[0]):
            out[i] = scale if w[i] - mu >= np.float32(0.0) else -scale

    lane_sum16 = qat_kernels._lanes_at(16, "sum")  # main's single-op intrinsics
    lane_max16 = qat_kernels._lanes_at(16, "max")
    lane_negmax16 = qat_kernels._lanes_at(16, "negmax")
    _adamw_range = qat_kernels._adamw_range

    @njit(error_model="numpy")
    def main_layer_stats(w):  # noqa: ANN001, ANN201
        n = w.shape[0]
        top = n - n % 16
        total = 0.0
        zero = np.float32(0.0)
        w_max = neg_min = np.float32(-np.inf)
        for b in range(0, top, 2048):
            end = min(b + 2048, top)
            total += lane_sum16(w, b, end, zero)
            m, nm = lane_max16(w, b, end, zero), lane_negmax16(w, b, end, zero)
            w_max = m if m > w_max else w_max
            neg_min = nm if nm > neg_min else neg_min
        w_min = -neg_min
        for i in range(top, n):
            v = w[i]
            total += np.float64(v)
            w_min = v if v < w_min else w_min
            w_max = v if v > w_max else w_max
        return total, w_min, w_max

    @njit(error_model="numpy")
    def main_adamw_layer_stats(p, g, m, v, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps,  # noqa: ANN001, ANN201
                               neg_step):
        n = p.shape[0]
        top = n - n % 16
        total = 0.0
        zero = np.float32(0.0)
        w_max = neg_min = np.float32(-np.inf)
        for b in range(0, top, 2048):
            end = min(b + 2048, top)
            _adamw_range(p, g, m, v, b, end, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)
            total += lane_sum16(p, b, end, zero)
            hi, nlo = lane_max16(p, b, end, zero), lane_negmax16(p, b, end, zero)
            w_max = hi if hi > w_max else w_max
            neg_min = nlo if nlo > neg_min else neg_min
        _adamw_range(p, g, m, v, top, n, clip, decay, w1, beta2, w2, tiny, bc2_sqrt, eps, neg_step)
        w_min = -neg_min
        for i in range(top, n):
            x = p[i]
            total += np.float64(x)
            w_min = x if x < w_min else w_min
            w_max = x if x > w_max else w_max
        return total, w_min, w_max


class _MainTernarySTE(ternary._TernarySTE):
    """main's backward: the ratio by torch, then the former kernel."""

    @staticmethod
    def backward(ctx, grad):  # noqa: ANN001, ANN205
        weight, alpha, gamma, rounded = ctx.saved_tensors
        assert rounded is not None and qat_kernels.fusable(grad)  # the kernel path is what is compared
        ratio = (alpha.detach() / gamma).neg_()
        grad_w, grad_alpha = torch.empty_like(weight), torch.empty_like(gamma)
        main_ternary_grads(rounded.numpy(), ratio.numpy(), qat_kernels.as_np(grad), grad_w.numpy(), grad_alpha.numpy())
        return grad_w, grad_alpha


def _train(name: str, steps: int = 5) -> list[torch.Tensor]:
    torch.manual_seed(0)
    model = torch.nn.Sequential(QuantLinear(70, 48, name), torch.nn.ReLU(), QuantLinear(48, 33, name),
                                torch.nn.ReLU(), QuantLinear(33, 5, name))
    opt = AdamW(model.parameters(), lr=1e-2, weight_decay=0.01)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(16, 70, generator=gen) * 3, torch.randint(0, 5, (16,), generator=gen)
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.clip_and_step(0.5)
    with torch.no_grad():
        out = model(torch.randn(7, 70, generator=gen))
    return [p.detach().clone() for p in model.parameters()] + [out]


@pytest.mark.parametrize("name", ["bitnet", "q1", "q2", "q4"])
def test_training_is_bit_identical_to_mains_kernels(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    new = _train(name)
    monkeypatch.setattr(ternary, "_TernarySTE", _MainTernarySTE)
    monkeypatch.setattr(ternary.TernaryConfig, "one_node_linear", lambda *args: None)  # main's graph
    monkeypatch.setattr(qat_kernels, "absmax_rows", main_absmax_rows)
    monkeypatch.setattr(qat_kernels, "layer_stats", main_layer_stats)
    monkeypatch.setattr(optim, "adamw_layer_stats", main_adamw_layer_stats)
    monkeypatch.setattr(qat_signs, "centred_signs", lambda w, mu, _: qat_kernels.abs_centred_sum(w, mu))
    monkeypatch.setattr(qat_signs, "signs_from", lambda w, mu, _, scale, out: main_signs(w, mu, scale, out))
    old = _train(name)
    assert len(new) == len(old)
    assert all(torch.equal(a, b) for a, b in zip(new, old))
    assert not torch.equal(new[0], _train(name, steps=4)[0])  # the steps do change the weights


@pytest.mark.parametrize("shape", [(3, 1), (5, 16), (7, 33), (40, 1536)])
def test_ternary_grads_equal_mains_on_special_values(shape: tuple[int, int]) -> None:
    rng = np.random.default_rng(sum(shape))
    rows, n = shape
    rounded = rng.integers(-3, 4, shape).astype(np.int8)
    rounded[0, 0] = 127  # clipped (|r| >= 2 is stored as +-127)
    grad = (rng.standard_normal(shape) * 10.0 ** rng.integers(-40, 30, shape)).astype(np.float32)
    grad.reshape(-1)[:6] = [0.0, -0.0, np.nan, np.inf, -np.inf, 3e38][:grad.size][:6]
    gamma = np.abs(rng.standard_normal(rows)).astype(np.float32) + np.float32(1e-8)
    alpha = (rng.standard_normal(rows) * 2).astype(np.float32)
    alpha[0], gamma[-1] = 0.0, np.float32(1e-8)
    with np.errstate(all="ignore"):
        ratio = (torch.from_numpy(alpha) / torch.from_numpy(gamma)).neg_().numpy()
    want_w, want_a = np.empty_like(grad), np.empty(rows, np.float32)
    main_ternary_grads(rounded, ratio, grad, want_w, want_a)
    got_w, got_a = np.empty_like(grad), np.empty(rows, np.float32)
    qat_kernels.ternary_grads(rounded, alpha, gamma, grad, got_w, got_a)
    assert np.array_equal(got_w.view(np.int32), want_w.view(np.int32))  # bits, NaNs and zeros' signs too
    assert np.array_equal(got_a.view(np.int32), want_a.view(np.int32))
    in_place, got_a = grad.copy(), np.empty(rows, np.float32)  # the one-node backward's form
    qat_kernels.ternary_grads_(rounded, alpha, gamma, in_place, got_a)
    assert np.array_equal(in_place.view(np.int32), want_w.view(np.int32))
    assert np.array_equal(got_a.view(np.int32), want_a.view(np.int32))



def _adversarial(n: int, seed: int) -> np.ndarray:
    """Weights with NaN, infinities, zeros of both signs, denormals, huge values, ties of the max
    and min, in the lanes, the block edges and the tail."""
    rng = np.random.default_rng(seed)
    x = (rng.standard_normal(n) * 10.0 ** rng.integers(-40, 38, n)).astype(np.float32)
    specials = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e-45, -1e-45, 3.4e38, -3.4e38], np.float32)
    for k, at in enumerate(rng.integers(0, n, min(n, 12))):
        x[at] = specials[k % specials.size]
    return x


def _same_stats(got: tuple, want: tuple) -> bool:
    """The sums' bits (or both NaN: a NaN's sign is not specified -- LLVM's fadd is commutative,
    the backend picks which operand a NaN comes from, and main's kernels give either sign by
    target), and the min's and max's bits."""
    a, b = np.array(got[:1]), np.array(want[:1])
    sums = bool(np.isnan(a[0]) and np.isnan(b[0])) or np.array_equal(a.view(np.int64), b.view(np.int64))
    return sums and np.array_equal(np.array(got[1:], np.float32).view(np.int32),
                                   np.array(want[1:], np.float32).view(np.int32))


@pytest.mark.parametrize("n", [1, 15, 16, 17, 2047, 2048, 2064, 4111, 70 * 48])
@pytest.mark.parametrize("kind", ["random", "adversarial", "no_nan", "all_nan"])
def test_layer_stats_equal_mains(n: int, kind: str) -> None:
    x = _adversarial(n, n) if kind == "adversarial" else np.random.default_rng(n).standard_normal(n).astype(np.float32)
    if kind == "no_nan":
        x = np.nan_to_num(_adversarial(n, n + 1), nan=-0.0)
    elif kind == "all_nan":
        x[:] = np.nan
    assert _same_stats(qat_kernels.layer_stats(x), main_layer_stats(x))


@pytest.mark.parametrize("n", [7, 2048, 2064, 5000])
def test_adamw_layer_stats_equal_mains_on_special_values(n: int) -> None:
    rng = np.random.default_rng(n)
    p, g = _adversarial(n, n + 2), _adversarial(n, n + 3)
    m, v = (rng.standard_normal(n) * 1e-3).astype(np.float32), np.abs(rng.standard_normal(n) * 1e-6).astype(np.float32)
    f = np.float32
    scalars = (f(0.7), f(1 - 1e-5), f(0.1), f(0.999), f(0.001), f(np.finfo(np.float32).tiny), f(0.03), f(1e-8),
               f(-1e-3))
    got, want = [a.copy() for a in (p, g, m, v)], [a.copy() for a in (p, g, m, v)]
    with np.errstate(all="ignore"):
        s_got, s_want = qat_kernels.adamw_layer_stats(*got, *scalars), main_adamw_layer_stats(*want, *scalars)
    assert all(np.array_equal(a.view(np.int32), b.view(np.int32)) for a, b in zip(got, want))
    assert _same_stats(s_got, s_want)


@pytest.mark.parametrize("shape", [(3, 1), (5, 16), (7, 33), (9, 1536)])
def test_absmax_rows_equal_mains_on_special_values(shape: tuple[int, int]) -> None:
    x = _adversarial(shape[0] * shape[1], sum(shape)).reshape(shape)
    x[-1] = np.random.default_rng(1).standard_normal(shape[1]).astype(np.float32)  # a plain row too
    got, want = np.empty_like(x), np.empty_like(x)
    with np.errstate(all="ignore"):
        qat_kernels.absmax_rows(x, np.float32(127), np.float32(1e-8), got)
        main_absmax_rows(x, np.float32(127), np.float32(1e-8), want)
    assert np.array_equal(got.view(np.int32), want.view(np.int32))
