"""A deployed mixture: every expert, the Bayesian router and curiosity routing in one call.

The router's Monte-Carlo dropout is frozen: :func:`frozen_masks` draws its M masks once, at
deploy time, from a seed (numpy's ``Generator``), and every sample uses the same M masks. The
deployed router is then a deterministic function (a Bayesian router with frozen MC masks), which
a runtime without torch reproduces exactly from the stored masks; its ``p`` is still the mean
of M dropout passes and its uncertainty their spread.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from qmoe.errors import ConfigError
from qmoe.native import kernels
from qmoe.native.layers import Layer, lower
from qmoe.native.layout import CURIOSITY_CODES
from qmoe.native.mlp import as_rows, assemble, check_chain
from qmoe.native.packing import aligned_bytes


def frozen_masks(seed: int, samples: int, width: int, dropout: float) -> np.ndarray:
    """The M = ``samples`` dropout masks of a deployed router, (M, width) float32.

    Each entry is 0 with probability ``dropout`` and ``1 / (1 - dropout)`` otherwise (inverted
    dropout, as ``torch.nn.functional.dropout``), drawn with ``numpy.random.default_rng(seed)``.
    One pass (``samples == 1``) is the router without dropout: a row of ones.
    """
    if samples < 1 or not 0.0 <= dropout < 1.0:
        raise ConfigError(f"router masks: need samples >= 1 and 0 <= dropout < 1, got {samples}, {dropout}")
    if samples == 1:
        return np.ones((1, width), np.float32)
    keep = np.random.default_rng(seed).random((samples, width)) >= dropout
    return keep * np.float32(1.0 / (1.0 - dropout))


@dataclass(frozen=True, kw_only=True, eq=False)
class Router:
    """The deployed router: fp32 layers (ReLU after all but the last), its frozen masks applied
    to the first layer's output (:func:`frozen_masks`), and the softmax temperature."""

    layers: Sequence[Layer]
    masks: np.ndarray  # (M, H) float32
    temperature: float = 1.0


@dataclass(frozen=True)
class MixtureOutput:
    """What one call of a :class:`NativeMixture` computes, batch first (numpy)."""

    logits: np.ndarray  # (B, C) float32: sum over the selected experts of p_cur_i E_i
    p: np.ndarray  # (B, N) router probabilities, mean of the M passes
    p_cur: np.ndarray  # (B, N) after curiosity
    uncertainty: np.ndarray  # (B, N) std of the router probabilities over the passes
    kl: np.ndarray  # (B, N) KL(q_i || mean_i q_i) of each expert's class distribution
    selected: np.ndarray  # (B, k) int64 experts chosen, best first
    lb_loss: float  # N sum_i f_i P_i over the batch (Switch load balancing; 0 for no rows)


class NativeMixture:
    """A mixture of deployed experts, routed as :class:`qmoe.models.MixtureOfExperts` routes
    (DESIGN §4): ``p_cur = softmax(log p + alpha KL)`` (``p`` itself for alpha 0; the ``entropy``
    variant: ``softmax((1 + alpha u H) log p)``, see :mod:`qmoe.models.moe`), top-k by
    ``p_cur``, output ``sum_k p_cur_k E_k``. One compiled call per batch runs it all.

    Args:
        experts: each expert's canonical layers (its last layer gives the C class logits).
        router: the deployed router (fp32 layers whose last gives one logit per expert).
        alpha: curiosity strength, >= 0.
        top_k: experts combined per sample.
        curiosity: the curiosity variant, ``kl`` (the paper's Eq. 8) or ``entropy``.
        backend: the compiled drivers to run; default numba's (:func:`qmoe.native.kernels.load`).

    Raises:
        ConfigError: inconsistent shapes or values.
        QmoeError: numba is missing.
    """

    def __init__(self, experts: Sequence[Sequence[Layer]], router: Router, *, alpha: float = 0.0,
                 top_k: int = 1, curiosity: str = "kl", backend: kernels.Backend | None = None) -> None:
        self.backend = backend or kernels.load()
        self._drivers = self.backend.drivers
        if not experts:
            raise ConfigError("mixture: no experts")
        for e, layers in enumerate(experts):
            check_chain(layers, f"expert {e}")
        check_chain(router.layers, "router")
        d, n_c, n_e = experts[0][0].shape[1], experts[0][-1].shape[0], len(experts)
        if any(ls[0].shape[1] != d or ls[-1].shape[0] != n_c for ls in experts):
            raise ConfigError("mixture: every expert must take the same inputs and give the same classes")
        if router.layers[0].shape[1] != d or router.layers[-1].shape[0] != n_e:
            raise ConfigError(f"router: must take {d} inputs and give {n_e} logits (one per expert)")
        if any(layer.kind != "fp32" for layer in router.layers) or len(router.layers) < 2:
            raise ConfigError("router: two or more fp32 layers")
        masks = np.ascontiguousarray(router.masks, np.float32)
        width = router.layers[0].shape[0]
        if masks.ndim != 2 or masks.shape[1] != width or masks.shape[0] < 1 or not np.isfinite(masks).all():
            raise ConfigError(f"router: masks must be finite (M, {width}) with M >= 1")
        if curiosity not in CURIOSITY_CODES:
            raise ConfigError(f"mixture: curiosity {curiosity!r} is unknown; known: {', '.join(CURIOSITY_CODES)}")
        if not (alpha >= 0 and np.isfinite(alpha)) or not 1 <= top_k <= n_e or router.temperature <= 0:
            raise ConfigError(f"mixture: need alpha >= 0, 1 <= top_k <= {n_e} and a positive temperature")
        chains = [list(ls) for ls in experts] + [list(router.layers)]
        lowered = [lower(layer, None, self.backend) for chain in chains for layer in chain]
        self.meta, fp, self.w = assemble(lowered)
        head = [n_e, top_k, n_c, masks.shape[0], len(lowered) - len(router.layers), len(router.layers),
                fp.size, fp.size + masks.size, fp.size + masks.size + 1, CURIOSITY_CODES[curiosity]]
        first = 0
        for chain in chains[:-1]:
            head += [first, len(chain)]
            first += len(chain)
        self.mix = np.array(head, np.int64)
        self.fp = np.concatenate([fp, masks.reshape(-1), np.array([alpha, router.temperature], np.float32)])
        self.lowered = tuple(lowered)
        self.experts = tuple(tuple(chain) for chain in chains[:-1])
        self.router, self.alpha, self.curiosity = router, float(alpha), curiosity
        self.in_dim, self.n_classes, self.n_experts, self.top_k = d, n_c, n_e, top_k
        self.scratch = aligned_bytes(int(self._drivers.scratch_bytes(self.meta, self.mix)))
        self.width = n_c + 4 * n_e + top_k
        self._mixture_at = None  # the compiled mixture_at, resolved at the first run_at

    @property
    def nbytes(self) -> int:
        """Bytes of weights, scales, biases and masks one inference (one row) reads."""
        return int(sum(low.w.nbytes - low.batch_bytes for low in self.lowered) + self.fp.nbytes)

    def __call__(self, x: np.ndarray) -> MixtureOutput:
        """The mixture on float rows ``x`` (B, D)."""
        x = as_rows(x, self.in_dim)
        out = np.empty((x.shape[0] + 1, self.width), np.float32)
        self._drivers.mixture(x, self.meta, self.fp, self.w, self.mix, self.scratch, out)
        return self.split(out)

    def run_at(self, address: int, rows: int, out: np.ndarray) -> None:
        """Run on ``rows`` contiguous float32 rows at ``address`` into ``out`` (rows + 1,
        C + 4N + k): per row the concatenated fields of :class:`MixtureOutput`, then the
        load-balancing loss in ``out[rows, 0]`` (:meth:`split` separates them)."""
        run = self._mixture_at  # the compiled driver without numba's dispatcher: ``out`` is not checked
        if run is None:
            run = self._mixture_at = kernels.entry_point(self._drivers.mixture_at, address, rows, self.meta,
                                                         self.fp, self.w, self.mix, self.scratch, out)
        run(address, rows, self.meta, self.fp, self.w, self.mix, self.scratch, out)

    def split(self, out: np.ndarray) -> MixtureOutput:
        """The fields of a raw output (B + 1, C + 4N + k), as views (``selected`` as int64)."""
        c, n, b = self.n_classes, self.n_experts, out.shape[0] - 1
        return MixtureOutput(out[:b, :c], out[:b, c: c + n], out[:b, c + n: c + 2 * n],
                             out[:b, c + 2 * n: c + 3 * n], out[:b, c + 3 * n: c + 4 * n],
                             out[:b, c + 4 * n:].astype(np.int64), float(out[b, 0]))

