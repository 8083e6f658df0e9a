"""Deployed models without torch: numpy and the compiled numba kernels only.

``import qmoe.native`` imports neither torch nor numba (the kernels load on first use). The
trial's deployed forms (:func:`qmoe.quant.deploy`) are thin torch wrappers over these same
objects, so a model exported from a trial and run here computes the same outputs, by
construction.

API::

    Layer(kind, weight, bias, rescale=None, relu=False, tau=None)      # one canonical layer
    NativeMLP(layers: Sequence[Layer])                                  # an expert / a model
    NativeMLP(...)(x: np.ndarray (B, D) float32) -> np.ndarray (B, C) float32
    Router(layers: Sequence[Layer], masks: np.ndarray (M, H) float32, temperature=1.0)
    frozen_masks(seed: int, samples: int, width: int, dropout: float) -> np.ndarray (M, H)
    NativeMixture(experts: Sequence[Sequence[Layer]], router: Router, *, alpha=0.0, top_k=1)
    NativeMixture(...)(x) -> MixtureOutput(logits (B, C), p, p_cur, uncertainty, kl (B, N),
                                           selected (B, k) int64)

A :class:`Layer` is what a deployment stores, independent of any kernel layout:

==========  ===================================  ============================================
``kind``    ``weight`` (N, D)                    ``y_j`` for an input row x
==========  ===================================  ============================================
fp32        float32                              ``sum_i x_i W_ji + b_j``
q16         integers in -32768..32767            ``float32(sum_i x8_i q_ji) * (r_j / s) + b_j``
int8        integers in -128..127 (q4, q8, ptq8)  as q16
int2        integers in -2..1 (q2)               as q16
pm1         -1 or +1 (q1)                        as q16
ternary     -1, 0 or +1 (bitnet)                 as q16
binary      -1 or +1                             ``float32(sum_i xb_i q_ji) * (beta r_j) + b_j``
==========  ===================================  ============================================

with ``bias`` b (N,) float32, ``rescale`` r (N,) float32 (None for fp32), ``relu`` applied
after the layer, ``x8 = round(x s)`` and ``s = 127 / max|x|`` per row (float32, half to even,
as :func:`qmoe.quant.primitives.absmax_quantize`), and for binary ``xb = +1 where x > tau else
-1``, ``beta = mean|x|`` per row. Integer sums are exact; the float steps are single IEEE
float32 operations in a fixed order (fp32 sums in input order, one fused multiply-add per
input: ``acc = fma(x_i, w_ji, acc)``, rounded once), so a row's outputs do not depend on its
batch mates. Any object with these six attributes works
as a layer (e.g. an export file's layer records).

The mixture is DESIGN §4's: every expert runs; the router's first layer output is multiplied
by each of its M frozen dropout masks (:func:`frozen_masks`: drawn once at deploy time from a
seed, so the deployed Bayesian router is deterministic), the rest of the router runs per mask,
``p`` is the mean of the M softmaxes (``softmax(g / T)``) and the uncertainty their population
std; ``KL_i = KL(q_i || mean_i q_i)`` with ``q_i = softmax(E_i)``; ``p_cur = softmax(log p +
alpha KL)`` (``p`` itself for alpha 0); the top-k experts by ``p_cur`` (ties: lower index)
combine as ``sum_k p_cur_k E_k``. Routing arithmetic is float64, outputs float32.

Each layer is lowered to the fastest layout this CPU runs (:mod:`qmoe.native.target`,
:mod:`qmoe.native.packing`): AVX-512 BW and AVX2 table look-ups for the bit-plane kinds, AVX2
``vpmaddubsw`` for int8, float32 weights in panels of 16 outputs on AVX2, portable loops
elsewhere; the outputs are the same in every layout.
"""

from __future__ import annotations

from qmoe.native.layers import KINDS, Layer, check_layer
from qmoe.native.mixture import MixtureOutput, NativeMixture, Router, frozen_masks
from qmoe.native.mlp import NativeMLP

__all__ = ["KINDS", "Layer", "MixtureOutput", "NativeMLP", "NativeMixture", "Router", "check_layer",
           "frozen_masks"]
