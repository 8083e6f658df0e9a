"""Row groups of 16, 24 or 64 rows (:func:`~qmoe.native.kernels.rows.group_size`): a model whose
weights exceed :data:`~qmoe.native.kernels.vnni.GROUP_WEIGHTS` runs groups of 64 (of
:data:`~qmoe.native.kernels.fblock.FGROUP`, 24 on AVX2, if its layers are all float ones), a
smaller one groups of 16, and a batch equals each of its rows alone bit for bit either way."""

from __future__ import annotations

import numpy as np
import pytest

from qmoe.native import NativeMixture, NativeMLP, Router, frozen_masks
from qmoe.native.kernels.chain import max_width, scratch_offsets
from qmoe.native.kernels.fblock import FGROUP
from qmoe.native.kernels.rows import batched, group_size
from qmoe.native.kernels.vnni import GROUP, GROUP_MAX, GROUP_WEIGHTS
from qmoe.native.layout import N_MC
from qmoe.native.target import HAS_AVX2, HAS_AVX512, HAS_VNNI
from tests.qmoe.native.native_cases import make_layer, make_mlp

PAPER = (1536, 640, 320, 50)
#: In and out of whole groups of 4, 16, 24 and 64 rows.
ROWS = [1, 4, 23, 24, 25, 28, 63, 64, 65, 68, 130, 256]
#: kind: rows of its paper MLP's groups (fp32 4.8 MB and q16 2.4 MB of weights; int8 1.2 MB).
GROUPS = {"fp32": FGROUP, "q16": GROUP_MAX, "int8": GROUP}


def _big_mixture() -> NativeMixture:
    """Experts of three kinds and an fp32 router whose first layer alone (1536 x 256, 1.5 MiB)
    nearly fills the budget: 2.2 MB of weights in all."""
    rng = np.random.default_rng(5)
    d, c, kinds = PAPER[0], 10, ("ternary", "int4", "int8")
    experts = [make_mlp(k, (d, 128, 64, c), seed=i) for i, k in enumerate(kinds)]
    router = Router(layers=[make_layer("fp32", 256, d, True, rng), make_layer("fp32", 64, 256, True, rng),
                            make_layer("fp32", len(kinds), 64, False, rng)],
                    masks=frozen_masks(5, 4, 256, 0.2), temperature=1.5)
    return NativeMixture(experts, router, alpha=0.3, top_k=2)


def _rows(seed: int, rows: int, d: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((rows, d)).astype(np.float32)
    return x * rng.uniform(0.01, 100, (rows, 1)).astype(np.float32)  # (rows, d)


def _rows_grouped(scratch: np.ndarray, o: tuple[int, ...], width: int) -> int:
    """Rows of the group buffer ``hs`` a batch has written (non-zero): the driver's group."""
    hs = scratch[o[14]: o[15]].view(np.float32).reshape(GROUP_MAX, width)  # (GROUP_MAX, width)
    return int(np.count_nonzero(np.abs(hs).sum(axis=1)))


@pytest.mark.parametrize("kind", list(GROUPS))
def test_batches_equal_each_row_alone(kind: str) -> None:
    mlp = NativeMLP(make_mlp(kind, PAPER, seed=3))
    x = _rows(3, max(ROWS), PAPER[0])
    x[2] = 0.0  # all zero: the EPS clamp
    alone = np.concatenate([mlp(x[i: i + 1]) for i in range(x.shape[0])])  # the one-row path
    for rows in ROWS:
        assert np.array_equal(mlp(x[:rows]), alone[:rows]), rows


@pytest.mark.parametrize("kind", list(GROUPS))
def test_the_group_is_64_rows_for_weights_past_l2_else_16(kind: str) -> None:
    """The choice, then what the driver does: a 64-row batch fills 64 rows of the group
    buffers, FGROUP for float layers only, or 16 (none where no layer shares its weight reads,
    e.g. on a target without AVX2)."""
    mlp = NativeMLP(make_mlp(kind, PAPER, seed=3))
    assert (mlp.w.size > GROUP_WEIGHTS) == (GROUPS[kind] != GROUP)
    assert group_size(mlp.w, mlp.meta) == GROUPS[kind]
    mlp(_rows(4, GROUP_MAX, PAPER[0]))
    width = max_width(mlp.meta)
    o = scratch_offsets(width, 0, 0, 0)
    assert _rows_grouped(mlp.scratch, o, width) == (GROUPS[kind] if batched(mlp.meta) else 0)


def test_a_mixture_past_l2_runs_64_rows_and_equals_each_row_alone() -> None:
    """The mixture's weights are every chain's (all of them read by each group): 64 rows,
    though no single layer is past the budget, and though its router's layers are float ones."""
    mix = _big_mixture()
    assert mix.w.size > GROUP_WEIGHTS and group_size(mix.w, mix.meta) == GROUP_MAX  # not all float
    assert all(low.w.size <= GROUP_WEIGHTS for low in mix.lowered)
    x = _rows(6, 130, PAPER[0])
    fields = ("logits", "p", "p_cur", "uncertainty", "kl", "selected")
    alone = [mix(x[i: i + 1]) for i in range(x.shape[0])]  # the one-row path
    for rows in (1, 4, 63, 64, 65, 68, 130):
        out = mix(x[:rows])
        for f in fields:
            got = getattr(out, f)
            assert np.array_equal(got, np.concatenate([getattr(a, f) for a in alone[:rows]])), (rows, f)
    width = max_width(mix.meta)
    o = scratch_offsets(width, mix.n_experts, mix.n_classes, int(mix.mix[N_MC]))
    mix.scratch[:] = 0
    mix(x[:GROUP_MAX])
    assert _rows_grouped(mix.scratch, o, width) == (GROUP_MAX if batched(mix.meta) else 0)


@pytest.mark.parametrize("kind, layout", [("fp32", "fp32-panels"), ("q16", "int16-pairs"), ("int8", "int8-dot-avx2"),
                                          ("int4", "int4-dot-avx2")])
def test_an_avx2_target_runs_rows_in_groups_for_every_dot_layout(kind: str, layout: str) -> None:
    """Without AVX-512 the float, int16, int8 and int4 layers still run a group's rows together
    (:mod:`~qmoe.native.kernels.rows`), each row as it would alone."""
    if not HAS_AVX2 or HAS_AVX512 or HAS_VNNI:
        pytest.skip("the target numba compiles for is not AVX2 without AVX-512")
    mlp = NativeMLP(make_mlp(kind, (1000, 72, 10), seed=7))
    assert mlp.layouts[0] == layout
    assert batched(mlp.meta)
    x = _rows(7, 37, 1000)
    got = mlp(x)
    width = max_width(mlp.meta)
    assert _rows_grouped(mlp.scratch, scratch_offsets(width, 0, 0, 0), width) == GROUP
    assert all(np.array_equal(mlp(x[i: i + 1]), got[i: i + 1]) for i in range(x.shape[0]))
