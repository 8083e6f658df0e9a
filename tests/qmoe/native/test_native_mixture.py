"""The native mixture against a numpy reference of DESIGN §4, frozen masks, and no torch."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from qmoe.errors import ConfigError
from qmoe.native import Layer, NativeMixture, NativeMLP, Router, frozen_masks
from tests.qmoe.native.native_cases import make_layer, make_mlp, reference

D, C = 70, 6
KINDS = ("ternary", "int8", "fp32")


def _mixture(alpha: float, top_k: int = 1, samples: int = 10, seed: int = 0,
             curiosity: str = "kl") -> NativeMixture:
    rng = np.random.default_rng(seed)
    experts = [make_mlp(k, (D, 32, 16, C), seed=i) for i, k in enumerate(KINDS)]
    router = Router(layers=[make_layer("fp32", 24, D, True, rng), make_layer("fp32", 12, 24, True, rng),
                            make_layer("fp32", len(KINDS), 12, False, rng)],
                    masks=frozen_masks(seed, samples, 24, 0.2), temperature=1.5)
    return NativeMixture(experts, router, alpha=alpha, top_k=top_k, curiosity=curiosity)


def _softmax(v: np.ndarray) -> np.ndarray:
    e = np.exp(v - v.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _reference(mix: NativeMixture, x: np.ndarray) -> dict[str, np.ndarray]:
    """DESIGN §4 in numpy float64 from the same experts' and router's float32 outputs."""
    logits = np.stack([reference(list(e), x) for e in mix.experts], axis=1)  # (B, N, C)
    layers = list(mix.router.layers)
    hidden = reference(layers[:1], x)  # (B, H)
    probs = np.stack([_softmax(reference(layers[1:], hidden * m).astype(np.float64) / mix.router.temperature)
                      for m in mix.router.masks])  # (M, B, N)
    p, unc = probs.mean(axis=0), probs.std(axis=0)
    log_q = logits - logits.max(-1, keepdims=True)
    log_q = log_q - np.log(np.exp(log_q).sum(-1, keepdims=True))
    q = np.exp(log_q)
    kl = np.maximum((q * (log_q - np.log(np.maximum(q.mean(axis=1, keepdims=True), 1e-12)))).sum(-1), 0.0)
    log_p = np.log(np.maximum(p, 1e-12))
    if mix.curiosity == "entropy":  # p^(1 + alpha u H), u and H each normalised to [0, 1]
        h = -(p * log_p).sum(-1, keepdims=True) / np.log(p.shape[-1])
        u = np.clip(unc.mean(-1, keepdims=True) / 0.5, 0.0, 1.0)
        cur = _softmax((1.0 + mix.alpha * np.clip(u * h, 0.0, 1.0)) * log_p)
    else:
        cur = _softmax(log_p + mix.alpha * kl)
    cur = p if mix.alpha == 0 else cur
    selected = np.argsort(-cur, axis=1, kind="stable")[:, : mix.top_k]
    rows = np.arange(len(x))[:, None]
    out = (cur[rows, selected][..., None] * logits[rows, selected]).sum(axis=1)
    return {"logits": out, "p": p, "p_cur": cur, "uncertainty": unc, "kl": kl, "selected": selected}


@pytest.mark.parametrize("alpha, top_k, curiosity", [(0.0, 1, "kl"), (0.3, 1, "kl"), (5.0, 2, "kl"),
                                                     (0.0, 1, "entropy"), (3.0, 2, "entropy")])
def test_mixture_follows_design_section_4(alpha: float, top_k: int, curiosity: str) -> None:
    mix = _mixture(alpha, top_k, curiosity=curiosity)
    x = np.random.default_rng(1).standard_normal((64, D)).astype(np.float32)
    out, ref = mix(x), _reference(mix, x)
    # float64 exp/log of numpy and of libm may differ in the last bit; outputs are float32
    for name in ("p", "p_cur", "uncertainty", "kl"):
        np.testing.assert_allclose(getattr(out, name), ref[name], rtol=1e-5, atol=1e-6, err_msg=name)
    margin = np.sort(ref["p_cur"], axis=1)[:, -top_k] - np.sort(ref["p_cur"], axis=1)[:, -top_k - 1]
    clear = margin > 1e-5  # rows whose choice no rounding can change
    assert clear.mean() > 0.9
    assert np.array_equal(out.selected[clear], ref["selected"][clear])
    np.testing.assert_allclose(out.logits[clear], ref["logits"][clear], rtol=1e-5, atol=1e-5)
    if alpha == 0.0:
        assert np.array_equal(out.p_cur, out.p)  # plain learned routing, exactly
    f = np.bincount(out.selected[:, 0], minlength=3) / len(x)
    assert out.lb_loss == pytest.approx(3 * (f * out.p.mean(axis=0)).sum(), rel=1e-5)


def test_curiosity_changes_routing_where_experts_disagree() -> None:
    x = np.random.default_rng(2).standard_normal((64, D)).astype(np.float32)
    plain, curious = _mixture(0.0)(x), _mixture(50.0)(x)
    assert not np.array_equal(plain.selected, curious.selected)
    assert np.array_equal(plain.p, curious.p)  # the router itself is the same


def test_rows_are_independent_and_calls_repeat() -> None:
    mix = _mixture(0.3)
    x = np.random.default_rng(3).standard_normal((20, D)).astype(np.float32)
    out = mix(x)
    for i in (0, 7, 19):
        one = mix(x[i: i + 1])
        assert np.array_equal(one.logits, out.logits[i: i + 1]) and np.array_equal(one.selected, out.selected[i: i + 1])
    assert np.array_equal(mix(x).logits, out.logits)


@pytest.mark.parametrize("rows", [4, 23])
def test_row_groups_give_every_field_of_each_row_alone(rows: int) -> None:
    """Batches run the experts and the router four rows at a time where the layouts allow (the
    rest one by one): every output field of every row is the row's own, bit for bit."""
    mix = _mixture(0.3, top_k=2)
    x = np.random.default_rng(rows).standard_normal((rows, D)).astype(np.float32)
    out = mix(x)
    fields = ("logits", "p", "p_cur", "uncertainty", "kl", "selected")
    for i in range(rows):
        one = mix(x[i: i + 1])
        assert all(np.array_equal(getattr(one, f), getattr(out, f)[i: i + 1]) for f in fields)


def test_frozen_masks_are_seeded_inverted_dropout() -> None:
    m = frozen_masks(7, 10, 128, 0.2)
    assert m.shape == (10, 128) and m.dtype == np.float32
    assert set(np.unique(m)) == {0.0, np.float32(1 / 0.8)}
    assert 0.1 < (m == 0).mean() < 0.3
    assert np.array_equal(m, frozen_masks(7, 10, 128, 0.2))
    assert not np.array_equal(m, frozen_masks(8, 10, 128, 0.2))
    assert np.array_equal(frozen_masks(7, 1, 5, 0.2), np.ones((1, 5), np.float32))  # one pass: no dropout


def test_bad_mixtures_are_refused() -> None:
    good = _mixture(0.0)
    router = good.router
    with pytest.raises(ConfigError, match="router: must take 70 inputs and give 2 logits"):
        NativeMixture(list(good.experts)[:2], router)
    with pytest.raises(ConfigError, match=r"masks must be finite \(M, 24\)"):
        NativeMixture(good.experts, Router(layers=router.layers, masks=np.ones((3, 5), np.float32)))
    with pytest.raises(ConfigError, match="1 <= top_k <= 3"):
        NativeMixture(good.experts, router, top_k=4)
    with pytest.raises(ConfigError, match="curiosity 'kld' is unknown; known: kl, entropy"):
        NativeMixture(good.experts, router, curiosity="kld")


def test_importing_and_running_the_native_forms_imports_no_torch() -> None:
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import qmoe.native as native
        from tests.qmoe.native.native_cases import make_layer, make_mlp
        rng = np.random.default_rng(0)
        mlp = native.NativeMLP(make_mlp("ternary", (20, 8, 3)))
        router = native.Router(layers=[make_layer("fp32", 4, 20, True, rng), make_layer("fp32", 2, 4, False, rng)],
                               masks=native.frozen_masks(0, 3, 4, 0.2))
        mix = native.NativeMixture([make_mlp("int8", (20, 8, 3)), make_mlp("binary", (20, 8, 3))], router)
        x = rng.standard_normal((2, 20)).astype(np.float32)
        assert mlp(x).shape == (2, 3) and mix(x).logits.shape == (2, 3)
        print(sorted(m for m in sys.modules if m.split(".")[0] == "torch"))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out.stdout


def test_a_native_mlp_is_the_layers_it_was_given() -> None:
    layers = make_mlp("pm1", (30, 10, 4))
    mlp = NativeMLP(layers)
    assert mlp.layers == tuple(layers) and mlp.in_dim == 30 and mlp.out_dim == 4
    assert isinstance(mlp.layers[0], Layer) and mlp.nbytes > 0
