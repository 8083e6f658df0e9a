"""A deployed layer in canonical form (:class:`Layer`), checked, and lowered to a kernel layout.

The canonical form is what a deployment stores, independent of any kernel: the kind, the
integer (or float) weight matrix, the per-output float32 rescale, the float32 bias, the ReLU
flag and, for binary, the input threshold. :func:`lower` picks the layout the backend's CPU
paths run fastest (:mod:`qmoe.native.kernels`) and packs the weights for it (:mod:`qmoe.native.packing`).

==========  ==================================  ===============================================
kind        weight (N, D)                       output ``y_j``
==========  ==================================  ===============================================
fp32        float32                             ``sum_i x_i W_ji + b_j`` (float32, i ascending)
q16         int16 values                        ``float32(sum_i x8_i q_ji) * (r_j / s) + b_j``
int8        int8 values (q4, q8, ptq8)          the same, int8 weights
int2        -2..1 (q2)                          the same, two bit-planes
pm1         -1 or +1 (q1)                       the same, one bit-plane
ternary     -1, 0, +1 (bitnet)                  the same, two bit-planes
binary      -1 or +1                            ``float32(sum_i xb_i q_ji) * (beta r_j) + b_j``
==========  ==================================  ===============================================

``x8 = round(x s)`` with ``s = 127 / max|x|`` per sample (float32, half to even); binary:
``xb = +1 where x > tau else -1`` and ``beta = mean|x|``. ``r`` is the rescale. The integer
sums are exact; each float32 step is one IEEE operation, so every machine computes the same
``y`` from the same integers.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from qmoe.errors import ConfigError
from qmoe.native import layout as L
from qmoe.native import packing as P
from qmoe.native.kernels import Backend

#: Canonical kinds and the inclusive range of their integer weights (None: float).
KINDS: dict[str, tuple[int, int] | None] = {
    "fp32": None, "q16": (-32768, 32767), "int8": (-128, 127), "int2": (-2, 1), "pm1": (-1, 1),
    "ternary": (-1, 1), "binary": (-1, 1)}


@dataclass(frozen=True, kw_only=True, eq=False)
class Layer:
    """One deployed layer (see the module docstring for the arithmetic of each kind).

    Attributes:
        kind: one of :data:`KINDS`.
        weight: (N, D) float32 for fp32; integer values of the kind's range otherwise (any
            integer or float dtype holding them exactly); pm1 and binary never 0.
        bias: (N,) float32.
        rescale: (N,) float32 multiplier of each output's integer dot; None for fp32.
        relu: whether a ReLU follows the layer.
        tau: binary only: inputs above it are +1.
    """

    kind: str
    weight: np.ndarray
    bias: np.ndarray
    rescale: np.ndarray | None = None
    relu: bool = False
    tau: float | None = None

    @property
    def shape(self) -> tuple[int, int]:
        """(N, D): outputs, inputs."""
        return int(self.weight.shape[0]), int(self.weight.shape[1])


@dataclass(frozen=True, kw_only=True, eq=False)
class Lowered:
    """A layer in a kernel's layout: the record fields and its float and weight blocks."""

    code: int  # a layout of qmoe.native.layout
    d: int
    n: int
    relu: bool
    params: tuple[int, int, int, int]
    w: np.ndarray  # uint8
    fp: np.ndarray  # float32
    batch_bytes: int = 0  # bytes at the end of w that only row groups read (PLANES_VNNI's copy)


def check_layer(layer: Layer, where: str = "layer") -> None:
    """Raise a :class:`ConfigError` naming ``where`` if ``layer`` is not a valid canonical layer."""
    if layer.kind not in KINDS:
        raise ConfigError(f"{where}: unknown kind {layer.kind!r}; use one of {', '.join(KINDS)}")
    w = np.asarray(layer.weight)
    if w.ndim != 2 or 0 in w.shape:
        raise ConfigError(f"{where}: weight must be a non-empty (N, D) matrix, got shape {w.shape}")
    n = w.shape[0]
    for name, v in (("bias", layer.bias), ("rescale", layer.rescale)):
        if v is None and name == "rescale" and layer.kind == "fp32":
            continue
        v = None if v is None else np.asarray(v)
        if v is None or v.shape != (n,) or not np.isfinite(v).all():
            raise ConfigError(f"{where}: {name} must be {n} finite floats")
    bounds = KINDS[layer.kind]
    if bounds is None:
        if not np.isfinite(w).all():
            raise ConfigError(f"{where}: fp32 weights must be finite")
    elif not (np.all(w == np.round(w)) and w.min() >= bounds[0] and w.max() <= bounds[1]):
        raise ConfigError(f"{where}: {layer.kind} weights must be integers in {bounds[0]}..{bounds[1]}")
    if layer.kind in ("pm1", "binary") and (w == 0).any():
        raise ConfigError(f"{where}: {layer.kind} weights must be -1 or +1, not 0")
    if (layer.kind == "binary") != (layer.tau is not None):
        raise ConfigError(f"{where}: tau is given for binary layers, and only for them")
    if layer.tau is not None and not np.isfinite(layer.tau):
        raise ConfigError(f"{where}: tau must be finite")


def layouts(kind: str, weight: np.ndarray | None = None, backend: Backend | None = None) -> list[int]:
    """The layouts (:mod:`qmoe.native.layout`) ``backend`` (default: the numba
    target's, :mod:`qmoe.native.target`) can run for ``kind``, fastest first (int8 weights within -8..7 can also take the nibble layout)."""
    avx2, vpermw, vnni = _paths(backend)
    if kind == "fp32":  # panels first on AVX2; AVX-512 keeps the layout its 64-output blocks were measured on
        first = avx2 and not vpermw
        return [L.FLOAT_PANELS, L.FLOAT] if first else [L.FLOAT, L.FLOAT_PANELS]
    if kind == "binary":
        return [L.XNOR]
    if kind == "q16":
        return [L.Q16_VNNI] * (vnni or avx2) + [L.Q16]
    if kind == "int8":
        small = weight is not None and np.min(weight) >= -8 and np.max(weight) <= 7
        wide = weight is not None and np.shape(weight)[1] > P.VNNI_MAX_D
        return ([L.INT8_VNNI] if vnni and not wide else []) + ([L.INT4_AVX2] if avx2 and small else []) + (
            [L.INT8_AVX2] if avx2 else []) + [L.INT8]
    wide = weight is not None and np.shape(weight)[1] > P.VNNI_MAX_D
    return [L.PLANES_VNNI] * (vnni and vpermw and not wide) + [L.LUT32] * vpermw + [L.LUT16] * avx2 + [L.PLANES]


def _paths(backend: Backend | None) -> tuple[bool, bool, bool]:
    """(AVX2, AVX-512 BW, AVX-512 VNNI) paths of ``backend``; without one, those of the numba
    target, read without loading numba (:mod:`qmoe.native.target`)."""
    if backend is not None:
        return backend.avx2, backend.vpermw, backend.vnni
    from qmoe.native import target

    return target.HAS_AVX2, target.HAS_VPERMW, target.HAS_VNNI


def lower(layer: Layer, code: int | None = None, backend: Backend | None = None) -> Lowered:
    """``layer`` (checked first) packed in layout ``code``, by default the fastest of
    :func:`layouts` for ``backend``.

    Raises:
        ConfigError: an invalid layer, or a layout this machine cannot run for it.
    """
    check_layer(layer)
    n, d = layer.shape
    allowed = layouts(layer.kind, layer.weight, backend)
    code = allowed[0] if code is None else code
    if code not in allowed:
        raise ConfigError(f"layout {L.KIND_NAMES.get(code, code)} cannot run {layer.kind} weights on "
                          f"this CPU; use one of {', '.join(L.KIND_NAMES[c] for c in allowed)}")
    bias = np.asarray(layer.bias, np.float32)
    if code == L.FLOAT:
        w = P._bytes(np.asarray(layer.weight, np.float32).T)  # (D, N)
        return Lowered(code=code, d=d, n=n, relu=layer.relu, params=(0, 0, 0, 0), w=w, fp=bias)
    if code == L.FLOAT_PANELS:
        w = P.pack_float_panels(np.asarray(layer.weight, np.float32))
        return Lowered(code=code, d=d, n=n, relu=layer.relu, params=(0, 0, 0, 0), w=w, fp=bias)
    q = np.asarray(layer.weight).astype(np.int64)
    batch_bytes = 0
    fp = np.concatenate([np.asarray(layer.rescale, np.float32), bias])
    params: tuple[int, ...] = ()
    if code == L.XNOR:
        w = P._bytes(P.pack_words(q > 0).T)  # (W, N)
        fp = np.concatenate([fp, np.array([layer.tau], np.float32)])
    elif code == L.Q16:
        w = P._bytes(q.astype(np.int16).T)  # (D, N)
    elif code == L.INT8:
        w = P._bytes(q.astype(np.int8))
    elif code == L.INT4_AVX2:
        params, w = P.pack_int4_avx2(q)
    elif code == L.INT8_AVX2:
        params, w = P.pack_int8_avx2(q)
    elif code == L.INT8_VNNI:
        params, w = P.pack_int8_vnni(q)
    elif code == L.Q16_VNNI:
        params, w = P.pack_q16_vnni(q)
    else:
        planes, shifts, offset = P.bit_planes(layer.kind, q)
        params = (len(planes), shifts[0], shifts[1], offset)
        pack = {L.LUT32: P.pack_lut32, L.PLANES_VNNI: P.pack_lut32, L.LUT16: P.pack_lut16,
                L.PLANES: P.pack_planes}[code]
        w = pack(planes)
        if code == L.PLANES_VNNI:  # the LUT32 bytes (a multiple of 64) for one row, then the row groups'
            batch = P.pack_planes_vnni(planes, shifts, offset)
            w, batch_bytes = np.concatenate([w, batch]), batch.size
    params = (tuple(int(p) for p in params) + (0, 0, 0, 0))[:4]
    return Lowered(code=code, d=d, n=n, relu=layer.relu, params=params, w=w, fp=fp, batch_bytes=batch_bytes)


def unpack(low: Lowered) -> np.ndarray:
    """The integer weights (N, D) int64 that ``low`` stores (float32 for fp32): what the kernel
    really multiplies by, read back from its layout."""
    n, d, p = low.n, low.d, low.params
    if low.code == L.FLOAT:
        return low.w.view(np.float32).reshape(d, n).T.copy()
    if low.code == L.FLOAT_PANELS:
        return P.unpack_float_panels(low.w, n, d)
    if low.code == L.Q16:
        return low.w.view(np.int16).reshape(d, n).T.astype(np.int64)
    if low.code == L.INT8:
        return low.w.view(np.int8).reshape(n, d).astype(np.int64)
    if low.code == L.INT8_AVX2:
        return P.unpack_int8_avx2(low.w, p, n, d)
    if low.code == L.INT4_AVX2:
        return P.unpack_int4_avx2(low.w, p[0], n, d)
    if low.code == L.INT8_VNNI:
        return P.unpack_int8_vnni(low.w, p[0], n, d)
    if low.code == L.Q16_VNNI:
        return P.unpack_q16_vnni(low.w, p[0], n, d)
    if low.code == L.XNOR:
        return np.where(P.unpack_words(low.w.view(np.uint64).reshape(-1, n).T, d), 1, -1)
    unpackers = {L.LUT16: P.unpack_lut16, L.LUT32: P.unpack_lut32, L.PLANES_VNNI: P.unpack_lut32,
                 L.PLANES: P.unpack_planes}
    planes = unpackers[low.code](low.w, p[0], n, d)
    q = P.plane_weights(planes, (p[1], p[2]), p[3])
    if low.code == L.PLANES_VNNI:  # the row groups' copy must hold the same weights
        batch = P.plane_weights(P.unpack_planes_vnni(low.w[low.w.size - low.batch_bytes:], p[0], n, d),
                                (p[1], p[2]), p[3])
        if not np.array_equal(batch, q):
            raise ValueError("the row groups' copy of the weights differs from the one-row layout's")
    return q
