"""The fused QAT passes (:mod:`qmoe.quant.qat_kernels`) against the torch formulas they replace,
bit for bit, on shapes that exercise the vector lanes and their tails."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from qmoe.quant import bitlinear, qat_kernels
from qmoe.quant import primitives as P

pytestmark = pytest.mark.skipif(qat_kernels.njit is None, reason="numba is not installed")


def torch_paths(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make every caller take the torch formula instead of the kernels."""
    monkeypatch.setattr(qat_kernels, "fusable", lambda *tensors: False)


def serial_absmax(x: torch.Tensor, bits: int) -> torch.Tensor:
    """The kernel's former serial loop in numpy float32: ``m = max|x|`` from 0 by ``a > m``
    (NaN skipped), ``s = (1 / max(m, eps)) * qmax``, ``clip(rint(x s)) / s``."""
    qmax, one = np.float32(2 ** (bits - 1) - 1), np.float32(1.0)
    rows = []
    with np.errstate(all="ignore"):
        for row in x.numpy():
            m = np.float32(0.0)
            for a in np.abs(row):
                m = a if a > m else m
            s = (one / max(m, np.float32(P.EPS))) * qmax
            rows.append(np.minimum(np.maximum(np.rint(row * s), -qmax - one), qmax) / s)
    return torch.from_numpy(np.stack(rows).astype(np.float32))


@pytest.mark.parametrize("width", [1, 15, 16, 17, 33, 320, 1536])
@pytest.mark.parametrize("seed", range(3))
def test_absmax_rows_equals_the_formula_at_every_lane_and_tail(width: int, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(24, width, generator=gen) * torch.logspace(-6, 6, 24)[:, None]
    x[0] = 0.0
    x[1, width // 2] = 40.0  # the max in some lane or in the tail, by width
    x[2, -1] = -50.0  # the max last (tail when width % 16 != 0)
    x[3, 0] = -60.0  # the max first
    x[4, width - 1] = float("nan")  # NaN skipped by the max, NaN in its place
    x[5, 0] = float("-inf")  # a diverged row: NaN throughout
    for bits in (2, 8):
        out = torch.empty_like(x)
        qmax = 2 ** (bits - 1) - 1
        qat_kernels.absmax_rows(x.numpy(), np.float32(qmax), np.float32(P.EPS), out.numpy())
        assert torch.equal(out.nan_to_num(nan=7.0), serial_absmax(x, bits).nan_to_num(nan=7.0))


@pytest.mark.parametrize("bits", [2, 8])
def test_absmax_quantize_equals_its_torch_path(bits: int, monkeypatch: pytest.MonkeyPatch) -> None:
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(64, 1536, generator=gen) * 3
    fused = P.absmax_quantize(x, bits)
    torch_paths(monkeypatch)
    assert torch.equal(fused, P.absmax_quantize(x, bits))


def reference_sum(x: np.ndarray) -> float:
    """The kernels' float64 sum of float32 ``x`` (flattened), in their order, in numpy: blocks
    of ``BLOCK`` elements each summed in ``SUM_LANES`` lanes (lane l adds elements l, l + L, ...
    from 0.0), the lanes added in order from 0.0, the block sums in turn from 0.0; then the last
    ``len(x) % SUM_LANES`` elements one by one."""
    x = np.asarray(x, np.float32).reshape(-1)
    lanes_n, block = qat_kernels.SUM_LANES, qat_kernels.BLOCK
    top = len(x) - len(x) % lanes_n
    total = 0.0
    for b in range(0, top, block):
        lanes = np.zeros(lanes_n)
        for row in x[b:min(b + block, top)].astype(np.float64).reshape(-1, lanes_n):
            lanes = lanes + row
        s = 0.0
        for v in lanes:
            s += float(v)
        total += s
    for v in x[top:]:
        total += float(v)
    return total


def reference_mean(x: torch.Tensor) -> torch.Tensor:
    """``fl32(reference_sum(x) / n)``, 0-dim."""
    return torch.tensor(np.float32(reference_sum(x.numpy()) / x.numel()))


def mean_tolerance(x: torch.Tensor) -> float:
    """How far torch's float32 ``mean()`` may be from the kernels' (exact to float64 and one
    float32 rounding): torch's own summation error, at most ``(log2 n + 2) u sum|x| / n`` for its
    cascaded sum (u = 2^-24), plus the kernels' rounding ``u |mean|``."""
    n = x.numel()
    return float((np.log2(n) + 2) * 2.0**-24 * x.abs().double().mean() + 2.0**-24 * x.double().mean().abs())


SIZES = [1, 15, 16, 17, 2047, 2048, 2049, 2 * 2048 + 16 * 3 + 5, 50 * 320, 640 * 1536]


@pytest.mark.parametrize("n", SIZES)
def test_layer_stats_sum_is_the_reference_order_and_min_max_exact(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen) * 0.02 + 0.003
    x[n // 2] = 0.5  # the max in a block or in the tail, by n
    x[-1] = -0.7  # the min last (in the tail when n % 16 != 0)
    total, lo, hi = qat_kernels.layer_stats(x.numpy())
    assert total == reference_sum(x.numpy())  # the same float64 operations, exactly
    assert qat_kernels.block_sum(x.numpy(), 0, n) == total
    assert (lo, hi) == (float(x.min()), float(x.max()))
    assert abs(float(reference_mean(x)) - float(x.mean())) <= mean_tolerance(x)


@pytest.mark.parametrize("n", SIZES)
def test_abs_centred_sum_is_the_reference_order_of_torchs_values(n: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(n, generator=gen) * 0.02 + 0.003
    mu = np.float32(0.001)
    centred = (x - torch.tensor(mu)).abs_()  # float32 |x - mu| as torch rounds it
    got = qat_kernels.abs_centred_sum(x.numpy(), mu)
    assert got == reference_sum(centred.numpy())
    assert abs(np.float32(got / n) - float(centred.mean())) <= mean_tolerance(centred)


def test_layer_stats_skip_nan_in_min_max_and_keep_infinities() -> None:
    x = torch.linspace(-1, 1, 4099)
    x[5], x[3000], x[-1] = float("nan"), float("inf"), float("-inf")
    total, lo, hi = qat_kernels.layer_stats(x.numpy())
    assert np.isnan(total) and (lo, hi) == (-np.inf, np.inf)


@pytest.mark.parametrize("shape", [(640, 1536), (320, 640), (50, 320), (3, 7), (2, 2049)])
def test_row_gamma_is_the_reference_mean_per_row_clamped(shape: tuple[int, int]) -> None:
    gen = torch.Generator().manual_seed(shape[1])
    w = torch.randn(shape, generator=gen) * 0.02
    w[0] = 0.0  # a zero row: gamma = EPS
    if shape[0] > 2:
        w[2, 1] = float("nan")  # NaN stays NaN through the clamp, as torch's clamp_min
    gamma = np.empty(shape[0], np.float32)
    qat_kernels.row_gamma(w.numpy(), np.float32(P.EPS), gamma)
    expected = np.array([max(np.float32(reference_sum(np.abs(row)) / shape[1]), np.float32(P.EPS))
                         if not np.isnan(row).any() else np.nan for row in w.numpy()], np.float32)
    np.testing.assert_array_equal(gamma, expected)
    torch_gamma = w.abs().mean(dim=1).clamp_min(P.EPS)
    ok = ~torch.isnan(torch_gamma)
    tol = torch.tensor([mean_tolerance(row.abs()) for row in w])
    assert ((torch.from_numpy(gamma) - torch_gamma).abs()[ok] <= tol[ok] + 2.0**-24 * P.EPS).all()


@pytest.mark.parametrize("bits", bitlinear.BITLINEAR_BITS)
@pytest.mark.parametrize("shape", [(640, 1536), (50, 320), (3, 7)])
def test_bitlinear_scale_is_the_formula_on_the_reference_mean(bits: int, shape: tuple[int, int]) -> None:
    """``mu`` the reference mean; ``s`` from it by DESIGN's formula in torch's float32 ops;
    both close to torch's (whose mean rounds in its own order)."""
    gen = torch.Generator().manual_seed(bits)
    w = torch.randn(shape, generator=gen) * 0.02 + 0.003
    mu, scale = bitlinear.bitlinear_scale(w, bits)
    assert torch.equal(mu, reference_mean(w))
    centred = (w - mu).abs_()
    if bits == 1:
        assert torch.equal(scale, reference_mean(centred))
    else:
        assert torch.equal(scale, centred.amax().clamp_min(P.EPS) / (2 ** (bits - 1) - 1))
    t_mu, t_scale = w.mean(), (w - w.mean()).abs()
    t_scale = t_scale.mean() if bits == 1 else t_scale.amax() / (2 ** (bits - 1) - 1)
    assert abs(float(mu - t_mu)) <= mean_tolerance(w)
    # s moves with mu by at most |mu - mu_torch| (/ qmax), plus the roundings
    assert abs(float(scale - t_scale)) <= 2 * mean_tolerance(w) + 4 * 2.0**-24 * float(t_scale)


@pytest.mark.parametrize("bits", bitlinear.BITLINEAR_BITS)
@pytest.mark.parametrize("shape", [(640, 1536), (50, 320), (3, 7)])
def test_bitlinear_fused_equals_its_torch_path(bits: int, shape: tuple[int, int],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The fused forward (the statistics in one pass, then the grid or the signs) gives the
    torch formula's values and gradient bit for bit, given the same ``(mu, s)``."""
    gen = torch.Generator().manual_seed(bits)
    w0 = torch.randn(shape, generator=gen) * 0.02 + 0.003
    grad = torch.randn(shape, generator=gen)
    w = w0.clone().requires_grad_()
    fused = bitlinear.bitlinear_weight(w, bits)
    fused.backward(grad)
    stats = bitlinear.bitlinear_scale(w0, bits)
    torch_paths(monkeypatch)
    monkeypatch.setattr(bitlinear, "bitlinear_scale", lambda weight, k: stats)
    w_ref = w0.clone().requires_grad_()
    ref = bitlinear.bitlinear_weight(w_ref, bits)
    ref.backward(grad)
    assert torch.equal(fused, ref)
    assert torch.equal(w.grad, w_ref.grad)
    assert torch.equal(fused, bitlinear.bitlinear_weight(w0, bits))  # no-grad path alike


def _adamw_case(n: int, seed: int) -> tuple[tuple[np.ndarray, ...], tuple[np.float32, ...]]:
    """Flat parameter, gradient and moments (zeros, NaN and infinities included) and the step's
    float32 scalars, as :class:`qmoe.optim.AdamW` passes them."""
    rng = np.random.default_rng(seed)
    p = (rng.standard_normal(n) * 0.05).astype(np.float32)
    g = (rng.standard_normal(n) * 10.0 ** rng.integers(-20, 1, n)).astype(np.float32)
    g[rng.random(n) < 0.2] = 0.0
    m = (rng.standard_normal(n) * 1e-3).astype(np.float32)
    v = (rng.random(n) * 1e-6).astype(np.float32)
    f = np.float32
    scalars = (f(0.7), f(1 - 1e-5), f(0.1), f(0.999), f(0.001), f(np.finfo(np.float32).tiny), f(0.03), f(1e-8),
               f(-1e-3))
    return (p, g, m, v), scalars


def _nan_equal(a: object, b: object) -> bool:
    return bool(np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True))


@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("special", [False, True])
def test_adamw_layer_stats_is_the_step_then_layer_stats(n: int, special: bool) -> None:
    """The optimizer's pass with the statistics: the same bits as adamw_step, then layer_stats."""
    arrays, scalars = _adamw_case(n, n)
    if special:  # a NaN and infinities in the block part or the tail, by n
        arrays[0][n // 3] = np.inf
        arrays[0][-1] = -np.inf
        arrays[1][n // 2] = np.nan
    want = [a.copy() for a in arrays]
    qat_kernels.adamw_step(*want, *scalars)
    want_stats = qat_kernels.layer_stats(want[0])
    got = [a.copy() for a in arrays]
    stats = qat_kernels.adamw_layer_stats(*got, *scalars)
    assert all(np.array_equal(a.view(np.int32), b.view(np.int32)) for a, b in zip(got, want))
    assert all(_nan_equal(a, b) for a, b in zip(stats, want_stats))
    assert special == bool(np.isnan(stats[0]))


@pytest.mark.parametrize("shape", [(1, 1), (3, 7), (5, 16), (2, 2049), (50, 320), (7, 2048), (640, 1536)])
@pytest.mark.parametrize("values", [False, True])
def test_adamw_row_gamma_is_the_step_then_row_gamma(shape: tuple[int, int], values: bool) -> None:
    """The step, gamma of the updated rows, and (``values``) ternary's weight and int8 rounding
    of them, the same bits as the kernels in turn."""
    rows, width = shape
    arrays, scalars = _adamw_case(rows * width, width)
    if rows > 2:
        arrays[1][2 * width] = np.nan  # row 2's gamma NaN
        arrays[0][width:2 * width] = 0.0  # row 1: zero weights, zero gradient: gamma = EPS
        arrays[1][width:2 * width] = 0.0
        arrays[2][width:2 * width] = 0.0
    alpha = np.random.default_rng(rows).uniform(0.5, 2.0, rows).astype(np.float32)
    want = [a.copy() for a in arrays]
    qat_kernels.adamw_step(*want, *scalars)
    want_gamma = np.empty(rows, np.float32)
    qat_kernels.row_gamma(want[0].reshape(rows, width), np.float32(P.EPS), want_gamma)
    want_out, want_rounded = np.empty((rows, width), np.float32), np.empty((rows, width), np.int8)
    qat_kernels.ternary(want[0].reshape(rows, width), want_gamma, alpha, want_out, want_rounded)
    got = [a.copy() for a in arrays]
    gamma = np.empty(rows, np.float32)
    out = np.full((rows, width) if values else (0, 0), np.float32(7.0))
    rounded = np.full((rows, width) if values else (0, 0), np.int8(99))
    qat_kernels.adamw_row_gamma(*got, *scalars, width, np.float32(P.EPS), gamma,
                                alpha if values else np.empty(0, np.float32), out, rounded)
    assert all(np.array_equal(a.view(np.int32), b.view(np.int32)) for a, b in zip(got, want))
    assert np.array_equal(gamma.view(np.int32), want_gamma.view(np.int32))
    if values:
        assert np.array_equal(out.view(np.int32), want_out.view(np.int32))
        assert np.array_equal(rounded[~np.isnan(want_out)], want_rounded[~np.isnan(want_out)])
    if rows > 2:
        assert np.isnan(gamma[2]) and gamma[1] == np.float32(P.EPS)


def test_cached_stats_only_for_the_unchanged_parameter_they_were_stored_for() -> None:
    w = torch.nn.Parameter(torch.randn(8, 40))
    qat_kernels.request_stats(w, "layer")
    assert qat_kernels.requested_stats(w) == ("layer", 0.0, None)
    assert qat_kernels.cached_stats(w, "layer") is None  # requested, not stored yet
    qat_kernels.store_stats(w, (1.0, -1.0, 2.0))
    assert qat_kernels.cached_stats(w, "layer") == (1.0, -1.0, 2.0)
    assert qat_kernels.cached_stats(w, "rows") is None  # another kind
    assert qat_kernels.cached_stats(w.detach(), "layer") is None  # another tensor object
    with torch.no_grad():
        w.mul_(2.0)  # an in-place change: the stored values are stale
    assert qat_kernels.cached_stats(w, "layer") is None
    frozen = torch.randn(3, 3)
    qat_kernels.request_stats(frozen, "layer")  # no gradient: the optimizer never updates it
    assert qat_kernels.requested_stats(frozen) is None
    key = id(w)
    del w  # the entry goes with the parameter
    assert key not in qat_kernels._STATS
