"""What a row's model is: display labels, bit-widths and the precision of an expert."""

from __future__ import annotations

import math

from qmoe.quant_names import bitlinear_bits

# Bits per weight of each quantizer family; ternary BitNet stores log2(3) bits of information.
_PRECISION = {"fp32": 32.0, "ptq8": 8.0, "bitnet": math.log2(3), "binary": 1.0}


def base_name(expert: str) -> str:
    """An expert label without its duplicate suffix: ``"q4#2"`` -> ``"q4"``."""
    return str(expert).split("#", 1)[0].strip().lower()


def bit_width(model: str) -> int | None:
    """The k of a single BitLinear model ``q{k}`` (``q16`` -> 16); None for anything else."""
    return bitlinear_bits(base_name(model))


def precision(expert: str) -> float:
    """Bits per weight of an expert (fp32 = 32, q8 = 8, bitnet = 1.58); NaN when unknown."""
    name = base_name(expert)
    k = bit_width(name)
    return float(k) if k is not None else _PRECISION.get(name, math.nan)


def highest_precision(experts: list[str]) -> str | None:
    """The expert with the most bits per weight; None when no precision is known or it ties."""
    ranked = sorted(((precision(e), e) for e in experts if not math.isnan(precision(e))), reverse=True)
    if not ranked or (len(ranked) > 1 and ranked[0][0] == ranked[1][0]):
        return None
    return ranked[0][1]


def config_label(paper_name: str, alpha: float, n_experts: int) -> str:
    """The display name of a configuration: ``Q4-Base``, ``BitNet-Q4/8-QMoE-C α=0.3``."""
    if n_experts > 1 and alpha > 0:
        return f"{paper_name} α={alpha:g}"
    return paper_name
