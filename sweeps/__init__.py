"""Ray Tune orchestration of qmoe trials: sweep specs, the trainable, run / resume / status,
and the results store (DESIGN §8). The only package that imports ray; importing ``sweeps``
itself does not (ray loads when a sweep runs).

Public API::

    from sweeps import (builtin_spec, load_spec, plan_sweep, run_sweep, resume_sweep,
                        sweep_status, summarize, RunOptions)

Names are imported lazily (PEP 562), so ``from sweeps import parse_folds`` does not pay for
pandas, and a command that needs one part loads only that part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmoe.lazy import lazy_exports

_EXPORTS: dict[str, str] = {
    "alpha_spec": "builtin",
    "bits_spec": "builtin",
    "moe_spec": "builtin",
    "paper_spec": "builtin",
    "check_sweep_name": "parse",
    "parse_floats": "parse",
    "parse_folds": "parse",
    "parse_ints": "parse",
    "parse_names": "parse",
    "SweepPlan": "plan",
    "plan_sweep": "plan",
    "RunOptions": "runner",
    "SweepOutcome": "runner",
    "resume_sweep": "runner",
    "run_sweep": "runner",
    "SPECS": "spec",
    "GridGroup": "spec",
    "SweepSpec": "spec",
    "builtin_spec": "spec",
    "load_hparams": "spec",
    "load_spec": "spec",
    "SweepStatus": "status",
    "summarize": "status",
    "sweep_status": "status",
    "SweepStore": "store",
}

__all__ = sorted(_EXPORTS)


__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS, globals())


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from sweeps.builtin import alpha_spec, bits_spec, moe_spec, paper_spec
    from sweeps.parse import check_sweep_name, parse_floats, parse_folds, parse_ints, parse_names
    from sweeps.plan import SweepPlan, plan_sweep
    from sweeps.runner import RunOptions, SweepOutcome, resume_sweep, run_sweep
    from sweeps.spec import SPECS, GridGroup, SweepSpec, builtin_spec, load_hparams, load_spec
    from sweeps.status import SweepStatus, summarize, sweep_status
    from sweeps.store import SweepStore
