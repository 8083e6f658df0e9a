"""A deployed MLP: canonical layers lowered once, then run by one compiled call per batch."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from qmoe.errors import ConfigError
from qmoe.native import kernels
from qmoe.native.layers import Layer, Lowered, lower
from qmoe.native.layout import KIND_NAMES
from qmoe.native.packing import aligned_bytes


def assemble(lowered: Sequence[Lowered]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(meta, fp, w)`` of :mod:`qmoe.native.layout` for consecutive lowered layers; every
    layer's weights start on a 64-byte boundary of ``w``."""
    meta: list[int] = []
    w_off = f_off = 0
    offsets = []
    for low in lowered:
        meta += [low.code, low.d, low.n, w_off, f_off, int(low.relu), *low.params]
        offsets.append(w_off)
        w_off += -(-low.w.size // 64) * 64
        f_off += low.fp.size
    w = aligned_bytes(max(w_off, 64))
    for off, low in zip(offsets, lowered):
        w[off: off + low.w.size] = low.w
    fp = np.concatenate([low.fp for low in lowered]).astype(np.float32)
    return np.array(meta, np.int64), fp, w


def check_chain(layers: Sequence[Layer], where: str) -> None:
    """Raise a :class:`ConfigError` if consecutive layers' widths do not chain."""
    if not layers:
        raise ConfigError(f"{where}: no layers")
    for k in range(1, len(layers)):
        if layers[k].shape[1] != layers[k - 1].shape[0]:
            raise ConfigError(f"{where}: layer {k} takes {layers[k].shape[1]} inputs but layer {k - 1} "
                              f"gives {layers[k - 1].shape[0]}")


def as_rows(x: np.ndarray, d: int) -> np.ndarray:
    """``x`` as C-contiguous float32 rows (B, d) (a copy only where needed)."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2 or x.shape[1] != d:
        raise ValueError(f"input has shape {x.shape}; the model takes (batch, {d}) rows")
    return x


class NativeMLP:
    """Layers run one after another on each row, in one compiled call (no torch).

    Args:
        layers: canonical layers (:class:`~qmoe.native.layers.Layer`, or any object with the
            same attributes), chained: layer k's inputs are layer k-1's outputs.
        codes: per layer, a layout of :mod:`qmoe.native.layout` to use instead of the fastest
            (tests run every layout the machine has this way); None entries pick the fastest.
        backend: the compiled drivers to run (:class:`~qmoe.native.kernels.Backend`); default
            numba's (:func:`qmoe.native.kernels.load`).

    Raises:
        ConfigError: a layer is invalid, the widths do not chain, or a layout cannot run here.
        QmoeError: numba is missing.
    """

    def __init__(self, layers: Sequence[Layer], codes: Sequence[int | None] | None = None,
                 backend: kernels.Backend | None = None) -> None:
        self.backend = backend or kernels.load()
        self._drivers = self.backend.drivers
        check_chain(layers, "MLP")
        codes = list(codes) if codes is not None else [None] * len(layers)
        self.layers = tuple(layers)
        self.lowered = tuple(lower(layer, code, self.backend) for layer, code in zip(layers, codes))
        self.meta, self.fp, self.w = assemble(self.lowered)
        self.in_dim, self.out_dim = self.lowered[0].d, self.lowered[-1].n
        # the kernels' working memory, allocated once (calls hold the GIL: never shared)
        self.scratch = aligned_bytes(int(self._drivers.scratch_bytes(self.meta, np.empty(0, np.int64))))
        self._mlp_at = None  # the compiled mlp_at, resolved at the first run_at
        self._entry: tuple[Callable[[int, int, int, np.ndarray], None], int] | None = None  # see entry()

    @property
    def layouts(self) -> tuple[str, ...]:
        """The layout each layer runs in (:data:`~qmoe.native.layout.KIND_NAMES`)."""
        return tuple(KIND_NAMES[low.code] for low in self.lowered)

    @property
    def nbytes(self) -> int:
        """Bytes of weights, scales and biases one inference (one row) reads."""
        return int(sum(low.w.nbytes - low.batch_bytes + low.fp.nbytes for low in self.lowered))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """float32 outputs (B, N) of float rows ``x`` (B, D)."""
        x = as_rows(x, self.in_dim)
        out = np.empty((x.shape[0], self.out_dim), np.float32)
        self._drivers.mlp(x, self.meta, self.fp, self.w, self.scratch, out)
        return out

    def run_at(self, address: int, rows: int, out: np.ndarray) -> None:
        """Run on ``rows`` contiguous float32 rows at ``address`` (which the caller keeps alive,
        e.g. a torch tensor's ``data_ptr()``) into ``out`` (rows, N) float32, C-contiguous and
        writable (not checked: the compiled function is called without numba's dispatcher)."""
        run = self._mlp_at
        if run is None:
            run = self._mlp_at = kernels.entry_point(self._drivers.mlp_at, address, rows, self.meta, self.fp,
                                                     self.w, self.scratch, out)
        run(address, rows, self.meta, self.fp, self.w, self.scratch, out)

    def entry(self) -> tuple[Callable[[int, int, int, np.ndarray], None], int]:
        """``(run, handle)``: ``run(address, rows, handle, out)`` is :meth:`run_at` through the
        compiled ``mlp_handle`` driver (resolved once), whose other arrays ``handle`` points to
        (kept by this object), for a caller that binds both: no frame, no look-up, and two ints
        instead of four arrays to convert at each call (~0.4 µs of a batch-1 call)."""
        if self._entry is None:
            arrays = (self.meta, self.fp, self.w, self.scratch)
            self._handle = np.array([v for a in arrays for v in (a.ctypes.data, a.size)], np.int64)
            handle = int(self._handle.ctypes.data)
            self._entry = (kernels.entry_point(self._drivers.mlp_handle, 0, 1, handle,
                                               np.empty((1, self.out_dim), np.float32)), handle)
        return self._entry

    def __getstate__(self) -> dict:
        """A copy (or pickle) binds its own entry: the handle holds this object's addresses."""
        state = self.__dict__.copy()
        state["_entry"] = None
        state.pop("_handle", None)
        return state
