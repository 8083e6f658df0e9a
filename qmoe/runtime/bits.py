"""How a ``.qmoe`` file stores a layer's weights: as few bits as their values need.

A storage encoding, not a kernel layout: each row of the (N, D) integer weights is packed on
its own, value after value, little-endian within a byte (the order of
``numpy.packbits(bitorder="little")``), the row padded with zero bits to a whole byte. A
``b``-bit value is the weight's two's complement (``w & (2^b - 1)``), except 1 bit, which
holds ``w > 0`` for the +-1 kinds. The runtime decodes it back to the integers and lowers those
for its kernels, whatever their layout.

========  =====================  ============================================
bits      kinds                  tensor
========  =====================  ============================================
1         pm1, binary            uint8 (N, ceil(D / 8))
2         int2, ternary          uint8 (N, ceil(D / 4))
4         int8 within -8..7      uint8 (N, ceil(D / 2))   (q4)
8         int8                   int8 (N, D)
16        q16                    int16 (N, D)
32        fp32                   float32 (N, D)
========  =====================  ============================================
"""

from __future__ import annotations

import numpy as np

#: Storage widths each kind may use, the narrowest first.
WIDTHS: dict[str, tuple[int, ...]] = {"pm1": (1,), "binary": (1,), "int2": (2,), "ternary": (2,),
                                      "int8": (4, 8), "q16": (16,), "fp32": (32,)}
#: The tensor dtype of each width.
DTYPES: dict[int, str] = {1: "uint8", 2: "uint8", 4: "uint8", 8: "int8", 16: "int16", 32: "float32"}


def width_for(kind: str, weight: np.ndarray) -> int:
    """The narrowest width of ``kind`` that holds every value of ``weight`` exactly."""
    for bits in WIDTHS[kind]:
        if bits >= 8 or bits == 1:
            return bits
        lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
        if weight.size == 0 or (int(weight.min()) >= lo and int(weight.max()) <= hi):
            return bits
    return WIDTHS[kind][-1]


def stored_shape(n: int, d: int, bits: int) -> tuple[int, int]:
    """Shape of the weight tensor of an (n, d) layer stored in ``bits``."""
    return (n, -(-d * bits // 8)) if bits < 8 else (n, d)


def encode(weight: np.ndarray, bits: int) -> np.ndarray:
    """The (N, D) weights as stored in ``bits`` (see the module docstring)."""
    if bits == 32:
        return np.ascontiguousarray(weight, np.float32)
    w = np.asarray(weight).astype(np.int64)
    if bits >= 8:
        return np.ascontiguousarray(w.astype(DTYPES[bits]))
    u = (w > 0).astype(np.uint8) if bits == 1 else (w & ((1 << bits) - 1)).astype(np.uint8)  # (N, D)
    planes = (u[:, :, None] >> np.arange(bits, dtype=np.uint8)) & 1  # (N, D, bits), low bit first
    return np.packbits(planes.reshape(w.shape[0], -1), axis=1, bitorder="little")


def decode(stored: np.ndarray, bits: int, d: int) -> np.ndarray:
    """Inverse of :func:`encode`: the (N, D) weights (int8 below 8 bits; else as stored)."""
    if bits >= 8:
        return stored
    flat = np.unpackbits(stored, axis=1, count=d * bits, bitorder="little").reshape(stored.shape[0], d, bits)
    u = np.zeros((stored.shape[0], d), np.int8)  # (N, D), built bit by bit (no wide temporaries)
    for k in range(bits):
        u |= flat[:, :, k] << k
    if bits == 1:
        return 2 * u - 1
    return np.where(u >= 1 << (bits - 1), u - (1 << bits), u).astype(np.int8)
