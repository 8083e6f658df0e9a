"""Deployed layers as torch modules: thin wrappers over :mod:`qmoe.native`.

A :class:`PackedLinear` holds one canonical :class:`qmoe.native.Layer` (the integer or float
weights a deployment stores, the per-output rescale, the bias, the ReLU flag, binary's
``tau``) and its quantizer config; running it runs the native kernel. Every quantizer's
``deploy_linear`` builds one (:func:`packed_linear`); :mod:`qmoe.quant.fused` then fuses each
MLP into one native call. The trial's deployed model and the torch-free runtime therefore
compute with the same code.

=======  ============================  ======================================================
kind     quantizers                    ``form``
=======  ============================  ======================================================
fp32     fp32                          ``numba-fp32``: float32 dots, input order
q16      q16                           ``numba-int16-dot``: int16 weights x int8 activations
int8     q4, q8, ptq8                  ``numba-int8-dot``: int8 weights x int8 activations
pm1      q1                            ``numba-bitplane``: weight bit-planes x int8
int2     q2                            activations (table look-ups with AVX-512 BW or AVX2,
ternary  bitnet                        AND + popcount elsewhere)
binary   binary                        ``numba-xnor-popcount``: sign bits, bits of x > tau
=======  ============================  ======================================================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor, nn

if TYPE_CHECKING:
    from qmoe.native import Layer, NativeMLP

#: ``form`` tag of each canonical kind's deployed layer.
FORMS = {"fp32": "numba-fp32", "q16": "numba-int16-dot", "int8": "numba-int8-dot",
         "pm1": "numba-bitplane", "int2": "numba-bitplane", "ternary": "numba-bitplane",
         "binary": "numba-xnor-popcount"}


def _np32(t: Tensor | np.ndarray | None, n: int) -> np.ndarray:
    if t is None:
        return np.zeros(n, np.float32)
    if isinstance(t, Tensor):
        t = t.detach().cpu().numpy()
    return np.ascontiguousarray(np.broadcast_to(t, (n,)), dtype=np.float32)


def packed_linear(kind: str, weight: Tensor | np.ndarray, bias: Tensor | None, config: Any, *,
                  rescale: Tensor | np.ndarray | None = None, tau: float | None = None) -> PackedLinear:
    """The deployed layer of canonical ``kind`` (:data:`qmoe.native.KINDS`).

    Args:
        kind: the canonical kind.
        weight: (N, D) float weights (fp32) or integer values (every other kind).
        bias: (N,) or None (the kernels then add zeros).
        config: the quantizer config (for :mod:`~qmoe.quant.size` and ``deploy_form``).
        rescale: (N,) or a scalar broadcast to N: each output's multiplier of its integer dot.
        tau: binary's input threshold.

    Raises:
        ConfigError: weights outside the kind's values.
    """
    from qmoe.native import Layer, check_layer

    w = weight.detach().cpu().numpy() if isinstance(weight, Tensor) else np.asarray(weight)
    n = w.shape[0]
    w = w.astype(np.float32) if kind == "fp32" else w.astype(np.int16 if kind == "q16" else np.int8)
    layer = Layer(kind=kind, weight=w, bias=_np32(bias, n), rescale=None if kind == "fp32" else _np32(rescale, n),
                  tau=None if tau is None else float(np.float32(tau)))
    check_layer(layer, f"{config.name} layer")
    return PackedLinear(layer, config, has_bias=bias is not None)


_F32, _NP32, _empty, _from_numpy = torch.float32, np.float32, np.empty, torch.from_numpy  # no lookups per call


def run_native(native: Any, x: Tensor) -> Tensor:
    """Run a :class:`~qmoe.native.NativeMLP` on ``x`` (..., D); float32 (..., N).

    A contiguous float32 (B, D) CPU tensor takes the short path: the kernel reads it in place
    through its address (a numpy view costs more than a 1-bit layer) and writes a fresh array
    that torch then wraps.
    """
    d_in, n_out = native.in_dim, native.out_dim
    shape = x.shape  # read once: each tensor attribute costs ~0.1-0.4 µs at batch 1
    if x.dtype is _F32 and x.is_cpu and len(shape) == 2 and shape[1] == d_in and x.is_contiguous():
        out = _empty((shape[0], n_out), _NP32)  # (B, N): new each call, never shared
        native.run_at(x.data_ptr(), shape[0], out)
        return _from_numpy(out)
    if x.shape[-1] != d_in:
        raise ValueError(f"input has {x.shape[-1]} features, the layer expects {d_in}")
    lead = x.shape[:-1]
    out = native(x.detach().reshape(-1, d_in).to("cpu", torch.float32).numpy())
    return torch.from_numpy(out).reshape(*lead, n_out)


def native_runner(native: NativeMLP) -> Callable[[Tensor], Tensor]:
    """:func:`run_native` on ``native`` as one function with the compiled entry point and its
    arrays bound (:meth:`~qmoe.native.NativeMLP.entry`): the short path goes from the
    module to the kernel with no other frame or attribute look-up (the deployed modules bind
    one at their first call, :class:`BoundRun`)."""
    d_in, n_out = native.in_dim, native.out_dim
    run, handle = native.entry()

    def call(x: Tensor) -> Tensor:
        shape = x.shape
        if x.dtype is _F32 and x.is_cpu and len(shape) == 2 and shape[1] == d_in and x.is_contiguous():
            out = _empty((shape[0], n_out), _NP32)  # (B, N): new each call, never shared
            run(x.data_ptr(), shape[0], handle, out)
            return _from_numpy(out)
        return run_native(native, x)

    return call


class BoundRun:
    """Mixin of the deployed modules: ``self._run(x)`` is :func:`run_native` on the module's
    native MLP (``_native()``), bound by :func:`native_runner` at the first call and kept in the
    instance (left out of copies and pickles, which bind their own)."""

    def _native(self) -> NativeMLP:
        raise NotImplementedError

    def bound(self) -> Callable[[Tensor], Tensor]:
        """The module's forward as one function (bound once): what a caller that runs it many
        times may call instead (:class:`~qmoe.models.expert.DeployedExpert` does)."""
        run = self.__dict__.get("_run")
        if run is None:
            run = self.__dict__["_run"] = native_runner(self._native())
        return run

    def _run(self, x: Tensor) -> Tensor:  # the first call only: the instance's binding shadows it
        return self.bound()(x)

    def __getstate__(self) -> dict:
        state = super().__getstate__()  # type: ignore[misc]
        state.pop("_run", None)
        return state


class PackedLinear(BoundRun, nn.Module):
    """One deployed layer: a canonical native layer and its quantizer config.

    Args:
        layer: the canonical :class:`qmoe.native.Layer` (ReLU is set by the fused MLP).
        config: the quantizer config.
        has_bias: whether the trained layer had a bias.

    Raises:
        QmoeError: numba is missing.
    """

    def __init__(self, layer: Layer, config: Any, has_bias: bool = True) -> None:
        from qmoe.native.kernels import load

        load()  # fail at deployment, not at the first call, when numba is missing
        super().__init__()
        self.native_layer, self.config, self.has_bias = layer, config, has_bias
        self.form = FORMS[layer.kind]
        self.out_features, self.in_features = layer.shape
        self._mlp: NativeMLP | None = None

    @property
    def kind(self) -> str:
        return self.native_layer.kind

    @property
    def tau(self) -> float | None:
        return self.native_layer.tau

    @property
    def rescale(self) -> np.ndarray:
        """(N,) float32 multiplier of each output's integer dot (ones for fp32)."""
        r = self.native_layer.rescale
        return np.ones(self.out_features, np.float32) if r is None else np.asarray(r, np.float32)

    @property
    def bias(self) -> Tensor | None:
        """The float32 bias (N,), or None."""
        return torch.from_numpy(np.array(self.native_layer.bias, np.float32)) if self.has_bias else None

    @property
    def mlp(self) -> NativeMLP:
        """This layer alone as a native MLP (built on first use)."""
        if self._mlp is None:
            from qmoe.native import NativeMLP

            self._mlp = NativeMLP([self.native_layer])
        return self._mlp

    @property
    def nbytes_read(self) -> int:
        """Bytes of weights, scales and biases one inference reads."""
        return self.mlp.nbytes

    def int_weight(self) -> np.ndarray:
        """The stored weights (N, D): int64 for the integer kinds, float32 for fp32."""
        w = np.asarray(self.native_layer.weight)
        return w.astype(np.float32) if self.kind == "fp32" else w.astype(np.int64)

    def dequantized_weight(self) -> Tensor:
        """The float weight this layer multiplies by: ``int_weight * rescale`` per row, (N, D)."""
        return torch.from_numpy(self.int_weight().astype(np.float32) * self.rescale[:, None])

    def _native(self) -> NativeMLP:
        return self.mlp

    def forward(self, x: Tensor) -> Tensor:
        """float32 (..., N) outputs of inputs ``x`` (..., D) of any float dtype."""
        return self._run(x)

    # Called without nn.Module's hook dispatch (~0.8 µs at batch 1): a deployed layer has no
    # hooks to run, and cannot be traced or compiled by torch anyway.
    __call__ = forward

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.has_bias}, config={self.config.name}, form={self.form}")


def quantize_activations(x: Tensor | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The kernels' per-sample 8-bit activation quantization of float rows (B, D).

    Returns:
        ``(x_int, s)``: int8 (B, D) and float32 (B,) with ``x_int = round(x * s)``.
    """
    from qmoe.native.kernels import load

    x32 = np.ascontiguousarray(x.detach().cpu().numpy() if isinstance(x, Tensor) else x, dtype=np.float32)
    x_int = np.empty(x32.shape, np.int8)
    return x_int, load().drivers.quantize_rows(x32, x_int)
