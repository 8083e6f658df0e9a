"""glibc malloc settings for training processes (DESIGN §12), in one place.

A training step allocates and frees the same MB-sized tensors (fake-quantized weights,
gradients, optimizer temporaries) every step. With glibc's default, adaptive thresholds such a
block can be an ``mmap`` handed back to the OS when freed, and the next step page-faults it in
again, zero-filled: 60k-125k page faults per epoch of the 1536-640-320 expert were measured,
20-40% of a QAT epoch. Fixed thresholds keep those blocks in the heap for reuse. Values never
change; peak RSS can grow by the free heap kept.

Processes started by ``make`` and Ray workers of a sweep get the settings from the environment
(:data:`MALLOC_ENV`, read by glibc at start); :func:`keep_freed_memory` applies the same ones
to a running process that did not (a plain ``python`` or ``qmoe trial``). No torch import here:
the sweep driver builds its worker environment from this module.
"""

from __future__ import annotations

import ctypes
import os

#: Threshold (bytes) for both settings: blocks below it come from the heap; free heap up to it
#: is kept. The same value as the Makefile's exports.
THRESHOLD = 1 << 30
#: The environment that makes glibc apply the settings at process start.
MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": str(THRESHOLD), "MALLOC_TRIM_THRESHOLD_": str(THRESHOLD)}
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # mallopt parameter numbers (malloc.h)
_applied = False


def keep_freed_memory() -> bool:
    """Apply the settings to this process once, unless its environment already did.

    Returns:
        True if they are in force, False where there is no glibc ``mallopt`` (nothing changes).
    """
    global _applied
    if _applied or "MALLOC_TRIM_THRESHOLD_" in os.environ:
        _applied = True
        return True
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):  # not glibc (macOS, Windows)
        return False
    _applied = mallopt(_M_MMAP_THRESHOLD, THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, THRESHOLD) == 1
    return _applied
