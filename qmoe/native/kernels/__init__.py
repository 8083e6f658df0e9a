"""The numba kernels of the deployed forms, and the :class:`Backend` that runs them.

Files: :mod:`.simd`, :mod:`.lut16`, :mod:`.lut32` and :mod:`.vnni` (LLVM intrinsics), :mod:`.act`
(activations), :mod:`.dots` (one dot kernel per weight layout), :mod:`.chain` (a layer, a chain of layers, a mixture's
routing), :mod:`.rows` (several rows through a chain at once),
:mod:`.drivers` (the compiled entry points, the only ones cached on disk), :mod:`.sources`
(what the drivers are made of) and :mod:`.aot_build` (the drivers compiled ahead of time).

Two backends run the same drivers: :func:`load` compiles them with numba just in time (from
numba's disk cache after the first use), for the CPU numba targets; :mod:`qmoe.native.aot`
loads them compiled ahead of time into an extension module that needs neither numba nor LLVM.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from qmoe.errors import QmoeError


@dataclass(frozen=True, kw_only=True, eq=False)
class Backend:
    """Compiled drivers and the instruction-set paths they were compiled with.

    Attributes:
        name: what compiled them, for reports (``"numba JIT for rocketlake"``).
        avx2: the AVX2 paths are compiled in (the layouts that need them may be chosen).
        vpermw: the AVX-512 BW paths are compiled in.
        vnni: the AVX-512 VNNI paths are compiled in (int8 dots by ``vpdpbusd``).
        drivers: ``scratch_bytes``, ``mlp`` and ``mixture`` of :mod:`.drivers` (numba's also
            has ``mlp_at`` and ``mixture_at`` and the helpers).
    """

    name: str
    avx2: bool
    vpermw: bool
    drivers: Any
    vnni: bool = False


def entry_point(driver: Any, *args: Any) -> Any:
    """``driver``'s compiled function for the types of ``args``, called without numba's
    dispatcher (which types every argument on every call, ~0.5 µs of a batch-1 call); the
    driver itself where it has no overloads (an ahead-of-time module's function, or numba
    with the JIT disabled). Compiles it first (or loads it from numba's disk cache) if needed.

    The function returned does not check its arguments' types: call it only with arguments of
    the types of ``args`` (the same arrays, or arrays of the same dtype, dimensions, layout
    and writability; ints for ints).
    """
    if not hasattr(driver, "overloads") or not hasattr(driver, "typeof_pyval"):
        return driver
    return driver.compile(tuple(driver.typeof_pyval(a) for a in args))


def load() -> Backend:
    """The numba backend: :mod:`.drivers` (importing numba, ~0.3-1 s, on first use), for the CPU
    of :mod:`qmoe.native.target`.

    Raises:
        QmoeError: numba cannot be imported; the message says how to install it.
    """
    try:
        from qmoe.native import target
        from qmoe.native.kernels import drivers
    except ImportError as err:
        raise QmoeError(
            "the deployed forms need numba, which could not be imported "
            f"({err}); install it with `pip install numba` (a dependency of qmoe: `pip install -e .` "
            "installs it)") from None
    return Backend(name=f"numba JIT for {target.target_cpu()[0] or 'this CPU'}", avx2=target.HAS_AVX2,
                   vpermw=target.HAS_VPERMW, drivers=drivers, vnni=target.HAS_VNNI)
