"""Weight statistics the optimizer computes in its pass over a parameter for the next forward
(:func:`qmoe.quant.qat_kernels.adamw_layer_stats`, :func:`qmoe.quant.qat_kernels.adamw_row_gamma`),
and the forward's check that they are of the parameter's current contents. Re-exported by
:mod:`qmoe.quant.qat_kernels`; no jitted code here.
"""

from __future__ import annotations

import weakref

from torch import Tensor

#: Weight statistics the optimizer computes in its pass over a parameter for the next forward
#: (:mod:`qmoe.quant.qat_kernels`): ``id(param) -> [weakref(param), kind,
#: gamma's eps, (data_ptr, version) the value is of, value, operand]``.
_STATS: dict[int, list] = {}


def request_stats(param: Tensor, kind: str, eps: float = 0.0, operand: Tensor | None = None) -> None:
    """Ask the optimizer (:class:`qmoe.optim.AdamW`) to compute ``kind`` of ``param`` in its pass
    over it: "layer" (``(sum, min, max)`` as :func:`qmoe.quant.qat_kernels.layer_stats`), "rows"
    (bitnet's ``gamma`` as :func:`qmoe.quant.qat_kernels.row_gamma` with ``eps``) or "ternary"
    (that ``gamma``, then bitnet's weight with ``alpha`` = ``operand``, as
    :func:`qmoe.quant.qat_kernels.ternary`). Only for a leaf the optimizer updates
    (``requires_grad``); the first request of a parameter stands."""
    if param.requires_grad and id(param) not in _STATS:
        key = id(param)
        _STATS[key] = [weakref.ref(param, lambda _, k=key: _STATS.pop(k, None)), kind, eps, None, None, operand]


def requested_stats(param: Tensor) -> tuple[str, float, Tensor | None] | None:
    """``(kind, eps, operand)`` requested for ``param`` by :func:`request_stats`, or None."""
    entry = _STATS.get(id(param))
    return None if entry is None or entry[0]() is not param else (entry[1], entry[2], entry[5])


def store_stats(param: Tensor, value: object) -> None:
    """Record ``value``, the requested statistics of ``param``'s current contents."""
    entry = _STATS.get(id(param))
    if entry is not None and entry[0]() is param:
        entry[3], entry[4] = (param.data_ptr(), param._version), value


def cached_stats(param: Tensor, kind: str) -> object | None:
    """The statistics :func:`store_stats` recorded for ``param`` if ``param`` has not changed
    since (same memory, same version: every in-place torch operation bumps it, and the
    optimizer bumps it after its kernel writes), else None."""
    entry = _STATS.get(id(param))
    if entry is None or entry[0]() is not param or entry[1] != kind:
        return None
    if entry[3] != (param.data_ptr(), param._version):
        entry[4] = None  # stale: let it go (bitnet's values are a weight-sized tensor)
    return entry[4]


def take_stats(param: Tensor, kind: str) -> object | None:
    """:func:`cached_stats`, dropped from the cache as they are returned (for large values used once)."""
    value = cached_stats(param, kind)
    if value is not None:
        _STATS[id(param)][4] = None
    return value
