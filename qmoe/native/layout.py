"""The flat description of a lowered model that the compiled drivers read (no numba, no torch).

A model is three arrays: ``meta`` (int64, :data:`REC` ints per layer), ``fp`` (float32: per
layer its rescale, bias and extra scalars) and ``w`` (uint8, 64-byte aligned: every layer's
weights in its layout, each block starting on a 64-byte boundary). A layer record is::

    kind, d_in, n_out, w_off (bytes), f_off (floats), relu, p0, p1, p2, p3

and ``fp[f_off:]`` holds ``rescale[N], bias[N]`` (fp32: ``bias[N]`` only; binary:
``alpha[N], bias[N], tau``). The meaning of ``p0..p3`` is the kind's (see :data:`KIND_NAMES`).
A mixture adds ``mix`` (int64, :data:`MIX_HEAD` ints then two per expert).
"""

from __future__ import annotations

#: ints per layer record of ``meta``.
REC = 10
KIND, D_IN, N_OUT, W_OFF, F_OFF, RELU, P0, P1, P2, P3 = range(REC)

# Weight layouts (the ``kind`` of a record); the packers live in qmoe.native.packing.
FLOAT = 0  # float32 (D, N): y = x W^T + b, float activations
Q16 = 1  # int16 (D, N) against 8-bit activations, int64 sums
INT8 = 2  # int8 rows (N, D), portable loop
INT8_AVX2 = 3  # int8 rows of 32-byte chunks, vpmaddubsw; p0 chunks, p1 flush, p2 corrections
INT4_AVX2 = 4  # (w + 8) nibbles, 64 inputs per 32-byte chunk; p0 chunks, p1 flush
PLANES = 5  # bit-planes word-major, AND + popcount (portable); p0 planes, p1 sh0, p2 sh1, p3 offset
LUT16 = 6  # bit-planes as 4-bit patterns for vpshufb tables (AVX2); p0..p3 as PLANES
LUT32 = 7  # bit-planes as 5-bit patterns for vpermw tables (AVX-512 BW); p0..p3 as PLANES
XNOR = 8  # sign bits word-major, XNOR + popcount (binary)
INT8_VNNI = 9  # int8 blocks of 64 outputs x 4 inputs, vpdpbusd (AVX-512 VNNI); p0 groups of 4 inputs
Q16_VNNI = 10  # int16 blocks of 64 outputs x 2 inputs, vpdpwssd (AVX-512 VNNI) or vpmaddwd (AVX2); p0 pairs
# LUT32's bytes (one row at a time), then the planes' bits in vpdpbusd order for row groups
# (packing.pack_planes_vnni; AVX-512 BW and VNNI); p0..p3 as PLANES
PLANES_VNNI = 11
# float32 panels of PANEL outputs, (ceil(N / PANEL), D, PANEL), the last zero-padded: each
# block of outputs reads its weights in one sequential stream (AVX2 row groups, :mod:`.kernels.fblock`)
FLOAT_PANELS = 12
#: Outputs of one panel of :data:`FLOAT_PANELS` (two AVX2 registers of float32).
PANEL = 16

KIND_NAMES = {FLOAT: "fp32", Q16: "int16-dot", INT8: "int8-dot", INT8_AVX2: "int8-dot-avx2",
              INT4_AVX2: "int4-dot-avx2", PLANES: "bitplane-popcount", LUT16: "bitplane-lut16-avx2",
              LUT32: "bitplane-lut32-avx512", XNOR: "xnor-popcount",
              INT8_VNNI: "int8-dot-vnni", Q16_VNNI: "int16-pairs", PLANES_VNNI: "bitplane-lut32+vnni",
              FLOAT_PANELS: "fp32-panels"}

#: ints at the head of ``mix``: experts, top-k, classes, Monte-Carlo passes, router's first
#: layer record and count, the float offsets of the masks, alpha and the temperature, and the
#: curiosity variant's code (:data:`CURIOSITY_CODES`).
MIX_HEAD = 10
(N_EXPERTS, TOP_K, N_CLASSES, N_MC, ROUTER_FIRST, ROUTER_COUNT, MASKS_OFF, ALPHA_OFF, TEMP_OFF,
 CURIOSITY) = range(MIX_HEAD)
#: The curiosity variants (:mod:`qmoe.models.moe`) as the kernels know them.
CURIOSITY_CODES = {"kl": 0, "entropy": 1}
ENTROPY = CURIOSITY_CODES["entropy"]
UNCERTAINTY_MAX = 0.5  # the std of values in [0, 1] is at most 1/2
