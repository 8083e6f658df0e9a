"""Which files the compiled drivers are made of, and their digest (imports no numba).

:mod:`.drivers` checks the digest against the one written in it before using numba's disk
cache; :mod:`qmoe.native.aot` names its ahead-of-time builds by it.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

#: The files compiled into the drivers, relative to ``qmoe/native``.
SOURCES = ("layout.py", "target.py", "kernels/simd.py", "kernels/lut16.py", "kernels/lut32.py", "kernels/vnni.py",
           "kernels/act.py", "kernels/dots.py", "kernels/chain.py", "kernels/fblock.py", "kernels/rows.py",
           "kernels/xnor.py")


def sources_sha256(extra: tuple[str, ...] = ()) -> str:
    """SHA-256 of the :data:`SOURCES` files' contents (then of ``extra``, same root), in order."""
    digest = hashlib.sha256()
    root = Path(__file__).resolve().parent.parent
    for name in SOURCES + extra:
        digest.update(name.encode() + b"\0" + (root / name).read_bytes() + b"\0")
    return digest.hexdigest()
