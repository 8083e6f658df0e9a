"""The built-in sweeps with the knobs of their commands (``--values``, ``--experts``...).

Each function starts from the spec in ``sweeps/specs/`` and replaces the grid group that its
flags stand for, so that the TOML file stays the one place that says what a sweep runs.
"""

from __future__ import annotations

from qmoe.errors import ConfigError, UnknownNameError
from qmoe.quant_names import bitlinear_bits, bitlinear_name
from qmoe.spec import check_alpha

from qmoe.sweeps.grid import SweepSpec, builtin_spec, check_experts, is_quantizer, known_quantizers


def alpha_spec(values: tuple[float, ...] | None = None, experts: tuple[str, ...] | None = None,
               *, baseline: bool = True) -> SweepSpec:
    """``qmoe sweep alpha``: one mixture at several curiosity strengths.

    Args:
        values: curiosity alphas (>= 0); None keeps the spec's.
        experts: the mixture's quantizers (at least two); None keeps the spec's.
        baseline: also run alpha = 0 (plain routing), which every variance comparison needs.

    Raises:
        ConfigError: a negative alpha or fewer than two experts; UnknownNameError: an unknown expert.
    """
    spec = builtin_spec("alpha")
    group = spec.group("mixture")
    if experts is not None:
        if len(experts) < 2:
            raise ConfigError("--experts needs at least two quantizers for a mixture, e.g. bitnet,q4,q8")
        check_experts(experts, "--experts")
    models = (tuple(experts),) if experts is not None else group.models
    alphas = tuple(check_alpha(a, "--values") for a in values) if values is not None \
        else tuple(a for a in group.alphas if a > 0)
    alphas = ((0.0,) if baseline else ()) + tuple(a for a in alphas if not (baseline and a == 0))
    if not alphas:
        raise ConfigError("--values and --no-baseline leave no alpha to run: give at least one value")
    return spec.replace_group("mixture", models=models, alphas=alphas)


def bits_spec(values: tuple[int, ...] | None = None) -> SweepSpec:
    """``qmoe sweep bits``: single models q{b} for each bit-width, plus the references.

    Raises:
        UnknownNameError: a bit-width without a quantizer (lists the known ones).
    """
    spec = builtin_spec("bits")
    if values is None:
        return spec
    models = tuple((bitlinear_name(b),) for b in values)
    for b, (name,) in zip(values, models):
        if not is_quantizer(name):
            widths = sorted(k for k in map(bitlinear_bits, known_quantizers()) if k is not None)
            raise UnknownNameError(f"--values: no {b}-bit quantizer; known bit-widths: "
                                   f"{','.join(map(str, widths))}")
    return spec.replace_group("bits", models=models)


def moe_spec(values: tuple[float, ...] | None = None) -> SweepSpec:
    """``qmoe sweep moe``: the paper's mixtures with plain routing and curiosity routing.

    Args:
        values: curiosity alphas (> 0) to run besides alpha = 0; None keeps the spec's.
    """
    spec = builtin_spec("moe")
    if values is None:
        return spec
    alphas = tuple(check_alpha(a, "--values") for a in values)
    return spec.replace_group("mixtures", alphas=(0.0,) + tuple(a for a in alphas if a != 0))


def paper_spec() -> SweepSpec:
    """``qmoe sweep paper``: the Table 1 grid on every prepared dataset (see ``paper.toml``)."""
    return builtin_spec("paper")

