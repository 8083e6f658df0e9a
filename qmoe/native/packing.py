"""Weight layouts: canonical integer or float weights -> the bytes one kernel reads (numpy only).

One packer per layout of :mod:`qmoe.native.layout`, each returning ``(params, bytes)``, and
its inverse where a test or :meth:`~qmoe.native.mlp.NativeMLP` needs the weights back.
Bit-plane kinds first become planes (:func:`bit_planes`): the integer weight of every kind is
``(B0 << sh0) - (B1 << sh1) + offset`` with ``B0, B1`` bits (q1 ``2 B0 - 1``, q2 ``B0 - 2 B1``,
bitnet ``P - M``).
"""

from __future__ import annotations

import numpy as np

from qmoe.native.layout import PANEL

#: The int8 AVX2 kernel sums int16 pairs up to ``2 x 127 x max|w|`` for ``flush`` chunks.
INT16_MAX = 32767


def aligned_bytes(n: int) -> np.ndarray:
    """``n`` zero bytes starting on a 64-byte boundary."""
    raw = np.zeros(n + 64, np.uint8)
    off = -raw.ctypes.data % 64
    return raw[off: off + n]


def _bytes(a: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(a).reshape(-1).view(np.uint8)


# -- bit-planes ---------------------------------------------------------------------------
PLANE_KINDS = {"pm1": ((-1, 1), (1, 0), -1), "int2": ((-2, -1, 0, 1), (0, 1), 0),
               "ternary": ((-1, 0, 1), (0, 0), 0)}


def bit_planes(kind: str, q: np.ndarray) -> tuple[list[np.ndarray], tuple[int, int], int]:
    """``(planes, (sh0, sh1), offset)`` of integer weights ``q`` (N, D) of a bit-plane kind."""
    q = q.astype(np.int64)
    if kind == "pm1":
        return [q > 0], (1, 0), -1
    if kind == "int2":
        return [(q & 1) == 1, (q & 2) == 2], (0, 1), 0
    return [q > 0, q < 0], (0, 0), 0


def plane_weights(planes: list[np.ndarray], shifts: tuple[int, int], offset: int) -> np.ndarray:
    """Inverse of :func:`bit_planes`: int64 (N, D)."""
    q = (planes[0].astype(np.int64) << shifts[0]) + offset
    if len(planes) == 2:
        q = q - (planes[1].astype(np.int64) << shifts[1])
    return q


def pack_lut16(planes: list[np.ndarray]) -> np.ndarray:
    """4-input table layout (:func:`~qmoe.native.kernels.dots.dots_lut16`): (blocks of 32
    outputs, planes, pairs of groups, 32) bytes of two 4-bit patterns, then int32 counts of
    set bits (planes, outputs padded to 32)."""
    n, d = planes[0].shape
    nb, d_pad = -(-n // 32), -(-d // 16) * 16
    body = np.zeros((nb, len(planes), d_pad // 8, 32), np.uint8)
    counts = np.zeros((len(planes), nb * 32), np.int32)
    for p, bits in enumerate(planes):
        padded = np.zeros((nb * 32, d_pad), np.uint8)
        padded[:n, :d] = bits
        nib = padded.reshape(nb * 32, d_pad // 4, 4) @ np.array([1, 2, 4, 8], np.uint8)  # (N', G)
        pairs = nib[:, 0::2] | (nib[:, 1::2] << 4)  # (N', G / 2)
        body[:, p] = pairs.reshape(nb, 32, -1).transpose(0, 2, 1)
        counts[p, :n] = bits.sum(axis=1)
    return np.concatenate([_bytes(body), _bytes(counts)])


def unpack_lut16(data: np.ndarray, n_planes: int, n: int, d: int) -> list[np.ndarray]:
    nb, d_pad = -(-n // 32), -(-d // 16) * 16
    body = data[: nb * n_planes * (d_pad // 8) * 32].reshape(nb, n_planes, d_pad // 8, 32)
    out = []
    for p in range(n_planes):
        pairs = body[:, p].transpose(0, 2, 1).reshape(nb * 32, d_pad // 8)
        nib = np.stack([pairs & 15, pairs >> 4], axis=-1).reshape(nb * 32, d_pad // 4, 1)
        bits = (nib >> np.arange(4, dtype=np.uint8)) & 1
        out.append(bits.reshape(nb * 32, d_pad)[:n, :d].astype(bool))
    return out


def pack_lut32(planes: list[np.ndarray]) -> np.ndarray:
    """5-input table layout (``vpermw``): (blocks of 32 outputs, planes, steps of 15 inputs, 32)
    uint16, an element holding its step's three 5-bit groups in bits 0-4, 5-9, 10-14."""
    n, d = planes[0].shape
    nb, nsteps = -(-n // 32), -(-d // 15)
    out = np.zeros((nb, len(planes), nsteps, 32), np.uint16)
    for p, bits in enumerate(planes):
        padded = np.zeros((nb * 32, nsteps * 15), np.uint16)
        padded[:n, :d] = bits
        five = padded.reshape(nb * 32, 3 * nsteps, 5) @ np.array([1, 2, 4, 8, 16], np.uint16)
        u = five[:, 0::3] | (five[:, 1::3] << 5) | (five[:, 2::3] << 10)  # (N', nsteps)
        out[:, p] = u.reshape(nb, 32, nsteps).transpose(0, 2, 1)
    return _bytes(out)


def unpack_lut32(data: np.ndarray, n_planes: int, n: int, d: int) -> list[np.ndarray]:
    nb, nsteps = -(-n // 32), -(-d // 15)
    u = data.view(np.uint16)[: nb * n_planes * nsteps * 32].reshape(nb, n_planes, nsteps, 32)
    u = u.transpose(1, 0, 3, 2).reshape(n_planes, nb * 32, nsteps, 1)
    bits = (u >> np.arange(15, dtype=np.uint16)) & 1  # (P, N', nsteps, 15)
    return list(bits.reshape(n_planes, nb * 32, 15 * nsteps)[:, :n, :d].astype(bool))


def pack_words(bits: np.ndarray) -> np.ndarray:
    """Bits (N, D) -> uint64 words (N, ceil(D / 64)), bit i of a row = bit i % 64 of word i // 64."""
    n, d = bits.shape
    padded = np.zeros((n, -(-d // 64) * 64), bool)
    padded[:, :d] = bits
    return np.packbits(padded, axis=-1, bitorder="little").view(np.uint64)


def unpack_words(words: np.ndarray, d: int) -> np.ndarray:
    return np.unpackbits(np.ascontiguousarray(words).view(np.uint8), axis=-1, bitorder="little")[:, :d].astype(bool)


def pack_planes(planes: list[np.ndarray]) -> np.ndarray:
    """AND + popcount layout: word-major (ceil(D/64), planes, N) uint64."""
    words = np.stack([pack_words(p) for p in planes])  # (P, N, W)
    return _bytes(words.transpose(2, 0, 1))


def unpack_planes(data: np.ndarray, n_planes: int, n: int, d: int) -> list[np.ndarray]:
    words = data.view(np.uint64).reshape(-1, n_planes, n).transpose(1, 2, 0)  # (P, N, W)
    return [unpack_words(words[p], d) for p in range(n_planes)]


# -- int8 -----------------------------------------------------------------------------------
def pack_int8_avx2(q: np.ndarray) -> tuple[tuple[int, int, int], np.ndarray]:
    """``vpmaddubsw`` layout: rows of ``32 ceil(D/32)`` int8 (outputs padded to a multiple of 4),
    then int32 (j, i) pairs of the weights that were -128, stored as -127 (``vpsignb`` cannot
    negate -128). Returns ``((chunks, flush, corrections), bytes)``."""
    n, d = q.shape
    chunks = -(-d // 32)
    rows = np.zeros((-(-n // 4) * 4, 32 * chunks), np.int8)
    low = q == -128
    rows[:n, :d] = np.where(low, -127, q)
    corr = np.argwhere(low).astype(np.int32)  # (K, 2): j, i
    biggest = max(1, int(np.abs(rows).max(initial=1)))
    flush = max(1, INT16_MAX // (2 * 127 * biggest))
    return (chunks, flush, len(corr)), np.concatenate([_bytes(rows), _bytes(corr)])


def unpack_int8_avx2(data: np.ndarray, params: tuple[int, ...], n: int, d: int) -> np.ndarray:
    chunks, _, ncorr = params[:3]
    n4, stride = -(-n // 4) * 4, 32 * chunks
    q = data[: n4 * stride].view(np.int8).reshape(n4, stride)[:n, :d].astype(np.int64)
    corr = data[n4 * stride: n4 * stride + 8 * ncorr].view(np.int32).reshape(-1, 2)
    q[corr[:, 0], corr[:, 1]] -= 1
    return q


#: The nibble kernel's int16 lanes gain at most 2 x (2 x 15 x 127) per chunk: 4 chunks fit.
INT4_FLUSH = INT16_MAX // (4 * 15 * 127)


def pack_int4_avx2(q: np.ndarray) -> tuple[tuple[int, int], np.ndarray]:
    """Weights in -8..7 as ``w + 8`` nibbles: rows of ``32 ceil(D/64)`` bytes (outputs padded to
    a multiple of 4); byte b of chunk k holds inputs ``64 k + b`` (low) and ``64 k + 32 + b``."""
    n, d = q.shape
    chunks = -(-d // 64)
    u = np.zeros((-(-n // 4) * 4, 64 * chunks), np.uint8)
    u[:n, :d] = q + 8
    u = u.reshape(u.shape[0], chunks, 2, 32)
    return (chunks, INT4_FLUSH), _bytes(u[:, :, 0] | (u[:, :, 1] << 4))


def unpack_int4_avx2(data: np.ndarray, chunks: int, n: int, d: int) -> np.ndarray:
    n4 = -(-n // 4) * 4
    b = data[: n4 * 32 * chunks].reshape(n4, chunks, 1, 32)
    u = np.concatenate([b & 15, b >> 4], axis=2).reshape(n4, 64 * chunks)
    return u[:n, :d].astype(np.int64) - 8


#: Outputs per block of the ``vpdpbusd`` layout (four registers of 16 int32 lanes).
VNNI_BLOCK = 64
#: Widest input of the ``vpdpbusd`` layout: an int32 lane sums ``d`` products ``(x + 128) w``,
#: each at most ``255 x 128`` in magnitude.
VNNI_MAX_D = (2**31 - 1) // (255 * 128)


def pack_int8_vnni(q: np.ndarray) -> tuple[tuple[int], np.ndarray]:
    """``vpdpbusd`` layout: blocks of :data:`VNNI_BLOCK` outputs (N padded with zero rows), each
    ``ceil(D/4)`` groups of (64 outputs, 4 inputs) int8 (D padded with zeros), then each output's
    weight sum (int32, N padded): the kernel sums ``(x + 128) w`` and subtracts ``128 sum w``.
    Returns ``((groups,), bytes)``."""
    n, d = q.shape
    groups, n_pad = -(-d // 4), -(-n // VNNI_BLOCK) * VNNI_BLOCK
    padded = np.zeros((n_pad, 4 * groups), np.int8)
    padded[:n, :d] = q
    body = padded.reshape(n_pad // VNNI_BLOCK, VNNI_BLOCK, groups, 4).transpose(0, 2, 1, 3)
    sums = padded.astype(np.int32).sum(axis=1, dtype=np.int32)
    return (groups,), np.concatenate([_bytes(body), _bytes(sums)])


def unpack_int8_vnni(data: np.ndarray, groups: int, n: int, d: int) -> np.ndarray:
    n_pad = -(-n // VNNI_BLOCK) * VNNI_BLOCK
    body = data[: n_pad * 4 * groups].view(np.int8).reshape(n_pad // VNNI_BLOCK, groups, VNNI_BLOCK, 4)
    return body.transpose(0, 2, 1, 3).reshape(n_pad, 4 * groups)[:n, :d].astype(np.int64)


def pack_q16_vnni(q: np.ndarray) -> tuple[tuple[int], np.ndarray]:
    """``vpdpwssd`` layout of int16 weights: blocks of :data:`VNNI_BLOCK` outputs (N padded with
    zero rows), each ``ceil(D/2)`` pairs of (64 outputs, 2 inputs) int16 (D padded with zeros).
    Returns ``((pairs,), bytes)``."""
    n, d = q.shape
    pairs, n_pad = -(-d // 2), -(-n // VNNI_BLOCK) * VNNI_BLOCK
    padded = np.zeros((n_pad, 2 * pairs), np.int16)
    padded[:n, :d] = q
    return (pairs,), _bytes(padded.reshape(n_pad // VNNI_BLOCK, VNNI_BLOCK, pairs, 2).transpose(0, 2, 1, 3))


def pack_planes_vnni(planes: list[np.ndarray], shifts: tuple[int, int], offset: int) -> np.ndarray:
    """Bit-planes in ``vpdpbusd`` order (the row-group kernel makes the int8 weights from them in
    registers): blocks of :data:`VNNI_BLOCK` outputs (N padded), each ``ceil(D/4)`` groups of 4
    inputs, each per plane 4 uint64 (16 outputs x 4 inputs: bit ``4 j + i`` for output ``j``,
    input ``i``; padding 0); then each output's sum of the weights the kernel multiplies by,
    padded inputs included (int32, N padded to the block)."""
    n, d = planes[0].shape
    groups, n_pad = -(-d // 4), -(-n // VNNI_BLOCK) * VNNI_BLOCK
    body = np.zeros((n_pad // VNNI_BLOCK, groups, len(planes), 4, 64), bool)
    padded = [np.zeros((n_pad, 4 * groups), bool) for _ in planes]
    for p, bits in enumerate(planes):
        padded[p][:n, :d] = bits
        body[:, :, p] = padded[p].reshape(n_pad // VNNI_BLOCK, 4, 16, groups, 4).transpose(0, 3, 1, 2, 4).reshape(
            n_pad // VNNI_BLOCK, groups, 4, 64)
    words = np.packbits(body, axis=-1, bitorder="little")  # 8 bytes = one little-endian uint64
    sums = plane_weights(padded, shifts, offset).sum(axis=1)  # the padding's weights too (pm1: -1)
    return np.concatenate([_bytes(words), _bytes(sums.astype(np.int32))])


def unpack_planes_vnni(data: np.ndarray, n_planes: int, n: int, d: int) -> list[np.ndarray]:
    groups, n_pad = -(-d // 4), -(-n // VNNI_BLOCK) * VNNI_BLOCK
    words = data[: n_pad // VNNI_BLOCK * groups * n_planes * 32].reshape(n_pad // VNNI_BLOCK, groups, n_planes, 4, 8)
    bits = np.unpackbits(words, axis=-1, bitorder="little").reshape(n_pad // VNNI_BLOCK, groups, n_planes, 4, 16, 4)
    bits = bits.transpose(2, 0, 3, 4, 1, 5).reshape(n_planes, n_pad, 4 * groups)
    return list(bits[:, :n, :d].astype(bool))


def unpack_q16_vnni(data: np.ndarray, pairs: int, n: int, d: int) -> np.ndarray:
    n_pad = -(-n // VNNI_BLOCK) * VNNI_BLOCK
    body = data[: n_pad * 4 * pairs].view(np.int16).reshape(n_pad // VNNI_BLOCK, pairs, VNNI_BLOCK, 2)
    return body.transpose(0, 2, 1, 3).reshape(n_pad, 2 * pairs)[:n, :d].astype(np.int64)


# -- float panels ------------------------------------------------------------------------
def pack_float_panels(weight: np.ndarray) -> np.ndarray:
    """float32 weights (N, D) as panels of :data:`~.layout.PANEL` outputs: (ceil(N/PANEL), D,
    PANEL), output ``p PANEL + k`` of input ``i`` at float ``(p D + i) PANEL + k``; the padding
    outputs' weights are 0."""
    n, d = weight.shape
    n_pad = -(-n // PANEL) * PANEL
    padded = np.zeros((n_pad, d), np.float32)
    padded[:n] = weight
    return _bytes(padded.reshape(n_pad // PANEL, PANEL, d).transpose(0, 2, 1))


def unpack_float_panels(data: np.ndarray, n: int, d: int) -> np.ndarray:
    n_pad = -(-n // PANEL) * PANEL
    body = data[: 4 * n_pad * d].view(np.float32).reshape(n_pad // PANEL, d, PANEL)
    return body.transpose(0, 2, 1).reshape(n_pad, d)[:n].copy()
