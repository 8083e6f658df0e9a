"""The four honest verdicts of a claim, decided from a corrected p, the estimate and the design.

- **holds**: significant (after correction) in the claimed direction;
- **contradicted**: significant the other way (for an equivalence: the difference lies
  significantly beyond the margin);
- **not shown**: the estimate points the claimed way but the test is not significant, or the
  design could not have decided (its smallest reachable p is not below the level);
- **no effect seen**: the estimate points against the claim or is zero, not significant.

A claim no test could run on (no data, fewer than two paired folds) is *not testable here*.
"""

from __future__ import annotations

import math

HOLDS, CONTRADICTED, NOT_SHOWN, NO_EFFECT = "holds", "contradicted", "not shown", "no effect seen"
UNTESTABLE = "not testable here"
VERDICTS = (HOLDS, CONTRADICTED, NOT_SHOWN, NO_EFFECT, UNTESTABLE)
LEVEL = 0.05


def _finite(x) -> bool:
    try:
        return x is not None and math.isfinite(float(x))
    except (TypeError, ValueError):
        return False


def directional(estimate: float, p_adj: float, *, claimed_sign: int, floor_adj: float = 0.0,
                level: float = LEVEL) -> str:
    """Verdict of a claim that an effect has sign ``claimed_sign`` (+1 or -1).

    Args:
        estimate: the effect (e.g. mean difference, 1 - variance ratio), signed.
        p_adj: the corrected two-sided p of its test.
        claimed_sign: +1 if the claim says the effect is positive, -1 if negative.
        floor_adj: the smallest corrected p the test could reach with this design; at or above
            ``level`` the design cannot decide and the verdict is "not shown".
    """
    if not _finite(estimate) or not _finite(p_adj):
        return UNTESTABLE
    points = estimate * claimed_sign > 0
    if _finite(floor_adj) and floor_adj >= level:
        return NOT_SHOWN
    if p_adj < level:
        return HOLDS if points else CONTRADICTED
    return NOT_SHOWN if points else NO_EFFECT


def equivalence(estimate: float, margin: float, p_tost_adj: float, p_out_adj: float,
                level: float = LEVEL) -> str:
    """Verdict of "a ≈ b within ±margin".

    Holds when the corrected TOST p is below ``level``; contradicted when the corrected one-sided
    p that the difference lies beyond the margin is; otherwise "not shown" if the estimate lies
    inside the margin and "no effect seen" (of equivalence) if it lies outside.
    """
    if not _finite(estimate) or not _finite(p_tost_adj):
        return UNTESTABLE
    if p_tost_adj < level:
        return HOLDS
    if _finite(p_out_adj) and p_out_adj < level:
        return CONTRADICTED
    return NOT_SHOWN if abs(estimate) < margin else NO_EFFECT


def threshold(value: float, claimed: float, best: float) -> str:
    """Verdict of a descriptive claim "value ≥ claimed" (no sampling test).

    Holds when the mean ``value`` reaches ``claimed``; contradicted when not even the single best
    trial (``best``) does; otherwise not shown (some trials do, the mean does not).
    """
    if not _finite(value):
        return UNTESTABLE
    if value >= claimed:
        return HOLDS
    if _finite(best) and best < claimed:
        return CONTRADICTED
    return NOT_SHOWN
