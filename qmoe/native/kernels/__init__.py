"""The numba kernels of the deployed forms. :func:`load` imports them (and numba) on first use.

Files: :mod:`.simd` (LLVM intrinsics), :mod:`.act` (activations), :mod:`.dots` (one dot kernel
per weight layout), :mod:`.chain` (a layer, a chain of layers, a mixture's routing) and
:mod:`.drivers` (the compiled entry points, the only ones cached on disk).
"""

from __future__ import annotations

from types import ModuleType

from qmoe.errors import QmoeError


def load() -> ModuleType:
    """The :mod:`.drivers` module (importing numba, ~0.3-1 s, on first use).

    Raises:
        QmoeError: numba cannot be imported; the message says how to install it.
    """
    try:
        from qmoe.native.kernels import drivers
    except ImportError as err:
        raise QmoeError(
            "the deployed forms need numba, which could not be imported "
            f"({err}); install it with `pip install numba` (a dependency of qmoe: `pip install -e .` "
            "installs it)") from None
    return drivers
