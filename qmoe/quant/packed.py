"""Deployed modules of the integer and bit quantizers, and the fused MLP that runs them.

One layer class per kernel family of :mod:`qmoe.quant.kernels`:

==========================  ======================  ==============================================
class                       quantizers              what is stored and computed
==========================  ======================  ==============================================
:class:`Int8Linear`         q4, q8, ptq8            int8 weights; int8 activations; int32 sums
:class:`BitSerialLinear`    q1 (1 plane),           weight bit-planes; int8 activations; table
                            q2, bitnet (2 planes)   lookups of 5-input subset sums (AVX-512 BW),
                                                    else AND + popcount of their 8 bit-planes
:class:`BinaryPackedLinear` binary                  sign bits of W, bits of ``x > tau``; XNOR +
                                                    popcount, ``alpha_j * beta`` rescale
==========================  ======================  ==============================================

Every layer is an ``nn.Module`` taking and returning float32 torch tensors, with ``form``,
``config``, ``in_features``, ``out_features``, :meth:`PackedLinear.int_weight` (the integer
weights it really stores, unpacked) and :meth:`PackedLinear.dequantized_weight`.
:func:`qmoe.quant.fused.fuse_mlps` replaces each ``nn.Sequential`` of layers of one family
(with ReLU and, in eval, Dropout between them) by a :class:`~qmoe.quant.fused.PackedMLP`: the
whole MLP in one compiled call, so batch 1 crosses from Python into machine code once per
expert, not once per layer. Both classes are called without nn.Module's hook dispatch and hand a contiguous float32 input to
the kernel by address (~2 µs of Python per call in all, :func:`run_driver`).

q4 weights are 4-bit values kept one per byte: the int8 kernel reads them as int8 (the
deployed *size* still counts 4 bits, :mod:`qmoe.quant.size`; :func:`bytes_read` counts what
the kernel reads).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch
from torch import Tensor, nn

from qmoe.errors import QmoeError
from qmoe.quant.primitives import pack_bits

if TYPE_CHECKING:
    from qmoe.quant.fused import PackedMLP


def load_kernels() -> Any:
    """The :mod:`~qmoe.quant.kernels` module, imported on first use (numba costs ~0.3 s to
    import, so ``import qmoe.quant`` stays light).

    Raises:
        QmoeError: numba is not installed.
    """
    from qmoe.quant import kernels

    kernels.require_numba()
    return kernels


def aligned(a: np.ndarray) -> np.ndarray:
    """A C-contiguous copy of ``a`` starting on a 64-byte boundary (whole cache lines: the
    kernels' vector loads of weight rows then never straddle two lines)."""
    raw = np.empty(a.nbytes + 64, np.uint8)
    off = -raw.ctypes.data % 64
    out = raw[off: off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _np32(t: Tensor | np.ndarray) -> np.ndarray:
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(t, dtype=np.float32)


def run_driver(module: PackedLinear | PackedMLP, x: Tensor) -> Tensor:
    """Run ``module``'s compiled driver on ``x`` (..., D); returns float32 (..., N).

    A contiguous float32 (B, D) CPU tensor takes the short path: the driver reads it in place
    through its address and writes a fresh numpy array that torch then wraps. At batch 1 each
    torch call costs ~0.2-1 µs, as much as a layer of the 1-bit kernel, so this path makes
    the fewest: ~2 µs in all, where the general one costs ~5 µs.
    """
    d_in, n_out = module.in_features, module.out_features
    shape = x.shape
    if (len(shape) == 2 and shape[1] == d_in and x.dtype is torch.float32 and x.is_cpu
            and x.is_contiguous()):
        out = np.empty((shape[0], n_out), np.float32)  # (B, N): new each call, never shared
        module._driver_at(x.data_ptr(), shape[0], module.meta, module.fp, module.w, out)
        return torch.from_numpy(out)
    if x.shape[-1] != d_in:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects {d_in}")
    lead = x.shape[:-1]
    xn = np.ascontiguousarray(x.detach().reshape(-1, d_in).to("cpu", torch.float32).numpy())  # (B, D)
    out = np.empty((xn.shape[0], n_out), np.float32)
    module._driver(xn, module.meta, module.fp, module.w, out)
    return torch.from_numpy(out).reshape(*lead, n_out)


class PackedLinear(nn.Module):
    """Base of the packed layers: flat weights, per-output ``rscale`` and bias, a kernel family.

    Args:
        config: the quantizer config (kept for :mod:`~qmoe.quant.size` and ``deploy_form``).
        in_features, out_features: layer dimensions D and N.
        weights: the layer's flat weight array in the family's layout and dtype.
        params: the five family parameters of the layer record (:data:`kernels.REC`).
        rscale: (N,) float32 multiplier of output j's integer dot (before ``/ s_x``).
        bias: (N,) float bias or None.
        extra: one more float32 the family reads (binary: ``tau``).
    """

    form: ClassVar[str] = ""
    driver_name: ClassVar[str] = ""

    def __init__(self, config: Any, in_features: int, out_features: int, weights: np.ndarray,
                 params: Sequence[int], rscale: Tensor | np.ndarray, bias: Tensor | None,
                 extra: float = 0.0) -> None:
        super().__init__()
        kernels = load_kernels()
        self.config = config
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.params = tuple(int(p) for p in params)
        self.w = aligned(np.ascontiguousarray(weights))
        rs = _np32(rscale)
        b = np.zeros(self.out_features, np.float32) if bias is None else _np32(bias)
        self.has_bias = bias is not None
        self.fp = np.concatenate([rs, b, np.array([extra], np.float32)])  # (2N + 1,)
        self.meta = np.array([self.in_features, self.out_features, 0, 0, 0, *self.params], np.int64)
        self._driver = getattr(kernels, self.driver_name)
        self._driver_at = getattr(kernels, self.driver_name + "_at")

    @property
    def rscale(self) -> np.ndarray:
        return self.fp[: self.out_features]

    @property
    def bias(self) -> Tensor | None:
        """The float32 bias (N,), or None (the kernels then add zeros)."""
        if not self.has_bias:
            return None
        return torch.from_numpy(self.fp[self.out_features: 2 * self.out_features].copy())

    @property
    def nbytes_read(self) -> int:
        """Bytes of weights, scales and biases one inference reads."""
        return int(self.w.nbytes + self.fp.nbytes)

    def int_weight(self) -> np.ndarray:
        """The stored integer weights, unpacked: int64 (N, D)."""
        raise NotImplementedError

    def int_dots(self, x_int: np.ndarray) -> np.ndarray:
        """The kernel's integer dot products of integer activations with this layer's weights.

        Args:
            x_int: (B, D) integer activations: int8 values (binary: -1 / +1).

        Returns:
            int64 (B, N), computed by the same kernel code as :meth:`forward`.
        """
        raise NotImplementedError

    def dequantized_weight(self) -> Tensor:
        """The float weight this layer multiplies by: ``int_weight * rscale`` per row, (N, D)."""
        w = torch.from_numpy(self.int_weight().astype(np.float32))
        return w * torch.from_numpy(self.rscale.copy())[:, None]

    def forward(self, x: Tensor) -> Tensor:
        """float32 (..., N) outputs of inputs ``x`` (..., D) of any float dtype."""
        return run_driver(self, x)

    # Called without nn.Module's hook dispatch (~0.8 µs at batch 1): a deployed layer has no
    # hooks to run, and cannot be traced or compiled by torch anyway.
    __call__ = forward

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.has_bias}, config={self.config.name}, form={self.form}")


class Int8Linear(PackedLinear):
    """int8 weights (N, D) row-major; activations 8-bit absmax per sample; int32 sums.

    ``y_j = acc_j * (rscale_j / s_x) + b_j`` with ``acc = x_int . q_j``.
    """

    form = "numba-int8-dot"
    driver_name = "mlp_int8"

    def __init__(self, q: Tensor | np.ndarray, rscale: Tensor | np.ndarray, bias: Tensor | None,
                 config: Any) -> None:
        q = np.asarray(q.detach().cpu() if isinstance(q, Tensor) else q)
        if q.min() < -128 or q.max() > 127:
            raise QmoeError(f"{config.name}: integer weights outside int8 cannot use the int8 kernel")
        n, d = q.shape
        super().__init__(config, d, n, q.astype(np.int8).reshape(-1), (0, 0, 0, 0, 0), rscale, bias)

    def int_weight(self) -> np.ndarray:
        return self.w.reshape(self.out_features, self.in_features).astype(np.int64)

    def int_dots(self, x_int: np.ndarray) -> np.ndarray:
        return load_kernels().int8_dots(_int8_rows(x_int), self.w, self.out_features)


class BitSerialLinear(PackedLinear):
    """Weights as 1 or 2 packed bit-planes against 8-bit activations.

    The integer weight is ``(B0 << sh0) - (B1 << sh1) + offset``: q1 ``2 B0 - 1`` (one plane),
    q2 ``B0 - 2 B1`` (two's complement of 2 bits), bitnet ``P - M`` (plus and minus masks).
    Two layouts of the same bits, one per kernel (:mod:`~qmoe.quant.kernels`), both about one
    bit per weight and plane (zero padding aside):

    - ``lut=True`` (the default where the CPU has AVX-512 BW): groups of 5 input bits, looked
      up in tables of the activations' subset sums (``lut_acc``); (ceil(N/32), P, ceil(D/15),
      32) uint16, one holding 3 groups (15 inputs) of one output.
    - ``lut=False``: word-major planes, (ceil(D/64), P, N) uint64, against the 8 bit-planes of
      the activations, AND + popcount (``bitserial_acc``).
    """

    form = "numba-bitserial-popcount"
    driver_name = "mlp_bitserial"

    def __init__(self, planes: Sequence[np.ndarray], shifts: tuple[int, int], offset: int,
                 rscale: Tensor | np.ndarray, bias: Tensor | None, config: Any,
                 lut: bool | None = None) -> None:
        n, d = planes[0].shape
        lut = load_kernels().HAS_VPERMW if lut is None else bool(lut)
        if lut:
            words = _pack_fives(planes).view(np.uint64)
        else:
            packed = np.stack([pack_bits(p) for p in planes], axis=0)  # (P, N, W)
            words = np.ascontiguousarray(packed.transpose(2, 0, 1)).reshape(-1)  # (W * P * N,)
        super().__init__(config, d, n, words, (len(planes), shifts[0], shifts[1], offset, int(lut)),
                         rscale, bias)

    @classmethod
    def from_int(cls, q: Tensor, kind: str, rscale: Tensor | np.ndarray, bias: Tensor | None,
                 config: Any, lut: bool | None = None) -> BitSerialLinear:
        """Planes of the integer weights ``q`` (N, D): ``kind`` is ``pm1`` (q1), ``int2`` (q2)
        or ``ternary`` (bitnet); ``lut`` picks the layout (None: the CPU's best).

        Raises:
            QmoeError: ``q`` holds a value the kind cannot represent.
        """
        qn = q.detach().cpu().numpy().astype(np.int64)
        allowed = {"pm1": (-1, 1), "int2": (-2, -1, 0, 1), "ternary": (-1, 0, 1)}[kind]
        if not np.isin(qn, allowed).all():
            raise QmoeError(f"{config.name}: weights outside {allowed} cannot be packed as {kind}")
        if kind == "pm1":
            return cls([qn > 0], (1, 0), -1, rscale, bias, config, lut)
        if kind == "int2":
            return cls([(qn & 1) == 1, (qn & 2) == 2], (0, 1), 0, rscale, bias, config, lut)
        return cls([qn > 0, qn < 0], (0, 0), 0, rscale, bias, config, lut)

    def int_weight(self) -> np.ndarray:
        n_planes, sh0, sh1, offset, lut = self.params
        n, d = self.out_features, self.in_features
        if lut:
            bits = _unpack_fives(self.w.view(np.uint16), n_planes, n, d)
        else:
            words = self.w.reshape(-1, n_planes, n).transpose(1, 2, 0)  # (P, N, W)
            bits = [_unpack(np.ascontiguousarray(words[p]), d) for p in range(n_planes)]
        q = (bits[0] << sh0) + offset
        if n_planes == 2:
            q = q - (bits[1] << sh1)
        return q

    def int_dots(self, x_int: np.ndarray) -> np.ndarray:
        return load_kernels().bitserial_dots(_int8_rows(x_int), self.w, self.out_features, *self.params)


def _pack_fives(planes: Sequence[np.ndarray]) -> np.ndarray:
    """Bit-planes (N, D) -> the table kernel's layout, (ceil(N/32), P, ceil(D/15), 32) uint16
    flat: element (block, plane, step g, output r) holds the bits of inputs 15g..15g+14."""
    n, d = planes[0].shape
    nb, nsteps = -(-n // 32), -(-d // 15)
    out = np.zeros((nb, len(planes), nsteps, 32), np.uint16)
    for p, bits in enumerate(planes):
        padded = np.zeros((nb * 32, nsteps * 15), np.uint16)
        padded[:n, :d] = bits
        five = padded.reshape(nb * 32, 3 * nsteps, 5) @ np.array([1, 2, 4, 8, 16], np.uint16)
        u = five[:, 0::3] | (five[:, 1::3] << 5) | (five[:, 2::3] << 10)  # (N', nsteps)
        out[:, p] = u.reshape(nb, 32, nsteps).transpose(0, 2, 1)
    return out.reshape(-1)


def _unpack_fives(data: np.ndarray, n_planes: int, n: int, d: int) -> list[np.ndarray]:
    """Inverse of :func:`_pack_fives`: int64 bits (N, D) per plane."""
    nb, nsteps = -(-n // 32), -(-d // 15)
    u = data.reshape(nb, n_planes, nsteps, 32).transpose(1, 0, 3, 2).reshape(n_planes, nb * 32, nsteps, 1)
    bits = (u >> np.arange(15, dtype=np.uint16)) & 1  # (P, N', nsteps, 15)
    bits = bits.reshape(n_planes, nb * 32, 15 * nsteps)[:, :n, :d].astype(np.int64)
    return list(bits)


class BinaryPackedLinear(PackedLinear):
    """Deployed ``binary`` layer: sign bits of W, bits of ``x > tau``, XNOR + popcount.

    ``y_j = (d - 2 popcount(x_b XOR w_j)) * (alpha_j * beta) + b_j``, ``alpha_j = mean|W_j|``,
    ``beta = mean|x|`` per sample (see :mod:`qmoe.quant.binary`). Weight bits are stored
    word-major, (ceil(D/64), N) uint64.
    """

    form = "numba-xnor-popcount"
    driver_name = "mlp_xnor"

    def __init__(self, weight: Tensor, bias: Tensor | None, tau: float, config: Any = None) -> None:
        from qmoe.quant.binary import BinaryConfig, binary_alpha

        bits = pack_bits((weight.detach() >= 0).cpu().numpy())  # (N, W)
        n, d = weight.shape
        super().__init__(config if config is not None else BinaryConfig(tau=tau), d, n,
                         np.ascontiguousarray(bits.T).reshape(-1), (0, 0, 0, 0, 0),
                         binary_alpha(weight), bias, extra=float(np.float32(tau)))
        self.tau = float(tau)

    def int_weight(self) -> np.ndarray:
        words = self.w.reshape(-1, self.out_features).T  # (N, W)
        return np.where(_unpack(np.ascontiguousarray(words), self.in_features) == 1, 1, -1)

    def int_dots(self, x_int: np.ndarray) -> np.ndarray:
        x_pm1 = np.ascontiguousarray(x_int, dtype=np.float32)  # ±1: "> 0" gives the +1 bits back
        return load_kernels().xnor_dots(x_pm1, 0.0, self.w, self.out_features)


def _int8_rows(x_int: np.ndarray) -> np.ndarray:
    x_int = np.asarray(x_int)
    if x_int.min(initial=0) < -128 or x_int.max(initial=0) > 127:
        raise ValueError("integer activations must be int8 values")
    return np.ascontiguousarray(x_int, dtype=np.int8)


def quantize_activations(x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' per-sample 8-bit activation quantization of float rows (B, D).

    Returns:
        ``(x_int, s)``: int8 (B, D) and float32 (B,) with ``x_int = clip(round(x * s))``.
    """
    x32 = _np32(x)
    x_int = np.empty(x32.shape, np.int8)
    return x_int, load_kernels().quantize_rows(x32, x_int)


def _unpack(words: np.ndarray, d: int) -> np.ndarray:
    """uint64 words (N, W) -> int64 bits (N, d), bit i of a row = bit i % 64 of word i // 64."""
    bits = np.unpackbits(words.view(np.uint8), axis=-1, bitorder="little")[:, :d]
    return bits.astype(np.int64)
