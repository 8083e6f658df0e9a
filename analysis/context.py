"""What every section builder needs: the results, the chosen references and correction."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import pandas as pd

from qmoe.analysis.load import Results
from qmoe.analysis.stats import Correction
from qmoe.errors import ConfigError

DEFAULT_SINGLE_REFERENCE = "fp32"
DEFAULT_MARGIN = 0.01  # equivalence margin of "≈": one F1 point


@dataclass(frozen=True, kw_only=True)
class Context:
    """The inputs of a report.

    ``single_reference`` is the model every single model is compared against (default fp32);
    ``mixture_reference`` is a mixture whose plain routing (alpha = 0) every mixture is compared
    against, or None for "each mixture against its own plain routing".
    """

    results: Results
    correction: Correction = Correction.BONFERRONI
    single_reference: str | None = None
    mixture_reference: str | None = None
    plots: bool = True
    seed: int = 0  # seed of the bootstrap and the generalised-pivot draws
    margin: float = DEFAULT_MARGIN  # equivalence margin (F1) of the "≈ 16-bit" claim, TOST

    @property
    def multi_protocol(self) -> bool:
        return len(self.results.protocols) > 1

    def protocols(self) -> Iterator[tuple[str, pd.DataFrame, pd.DataFrame]]:
        """(protocol, finished rows, errored rows) for each protocol present."""
        errors = self.results.errors
        for protocol in self.results.protocols:
            ok = self.results.ok[self.results.ok["protocol"] == protocol]
            err = errors[errors["protocol"] == protocol] if not errors.empty else errors
            yield protocol, ok, err

    def display(self, rows: list[dict], *, drop: Sequence[str] = ()) -> pd.DataFrame:
        """A display table: drops ``protocol`` when only one is present, and ``drop`` columns."""
        df = pd.DataFrame(rows)
        gone = [c for c in drop if c in df.columns]
        if not self.multi_protocol and "protocol" in df.columns:
            gone.append("protocol")
        return df.drop(columns=gone).astype(str) if len(df.columns) else df


def resolve_references(results: Results, names: Sequence[str] | None) -> tuple[str | None, str | None]:
    """``--reference`` values -> (single-model reference, mixture reference), as model names.

    A name is a model as in the ``model`` column (``q16``, ``bitnet,q4,q8``) or a paper name
    (``Q16-Base``), case-insensitive. Without a single-model name the reference is fp32 when
    the sweep has it.

    Raises:
        ConfigError: a name no row has (the message lists the known models), or two names of
            the same kind.
    """
    rows = pd.concat([results.ok, results.errors]) if not results.errors.empty else results.ok
    lookup: dict[str, tuple[str, str]] = {}
    for model, paper, kind in zip(rows["model"], rows["paper_name"], rows["kind"]):
        lookup.setdefault(str(model).lower(), (model, kind))
        if not str(paper).endswith("-C"):
            lookup.setdefault(str(paper).lower(), (model, kind))
    single = mixture = None
    for name in names or ():
        hit = lookup.get(str(name).strip().lower())
        if hit is None:
            known = ", ".join(sorted(set(rows["model"])))
            raise ConfigError(f"--reference {name!r} is not a model of this sweep; known: {known}")
        model, kind = hit
        if kind == "single":
            if single not in (None, model):
                raise ConfigError(f"--reference names two single models ({single}, {model}): give one")
            single = model
        else:
            if mixture not in (None, model):
                raise ConfigError(f"--reference names two mixtures ({mixture}, {model}): give one")
            mixture = model
    if single is None and DEFAULT_SINGLE_REFERENCE in set(results.ok["model"]):
        single = DEFAULT_SINGLE_REFERENCE
    return single, mixture
