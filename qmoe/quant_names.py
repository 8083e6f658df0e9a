"""What a quantizer's name says about its bits: ``q{k}`` is the k-bit BitLinear quantizer.

The one place that reads and writes that convention (the quantizer registry,
:data:`qmoe.quant.QUANTIZERS`, holds ``q1 ... q16`` under these names). It imports nothing,
so that what only reads names -- a spec file's ``bits = [...]``, the paper's display names,
``qmoe status``, the report -- does not load torch, as importing :mod:`qmoe.quant` does.
"""

from __future__ import annotations

import re

_BITLINEAR = re.compile(r"q(\d+)")

#: The quantizers :mod:`qmoe.quant` registers on import (a test keeps this equal to the registry),
#: so that checking a spec's names costs no torch import; other names need the live registry.
BUILTIN_QUANTIZERS = ("binary", "bitnet", "fp32", "ptq8", "q1", "q16", "q2", "q4", "q8")


def bitlinear_name(bits: int) -> str:
    """The name of the ``bits``-bit BitLinear quantizer: ``4 -> "q4"``."""
    return f"q{int(bits)}"


def bitlinear_bits(name: str) -> int | None:
    """The k of a BitLinear quantizer name ``q{k}`` (``"q16" -> 16``); None for any other name."""
    match = _BITLINEAR.fullmatch(str(name).strip())
    return int(match.group(1)) if match else None
