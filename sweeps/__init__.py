"""Ray Tune orchestration of qmoe trials: sweep specs, the trainable, run / resume / status,
and the results store (DESIGN §8). The only package that imports ray; importing ``sweeps``
itself does not (ray loads when a sweep runs).

Public API::

    from sweeps import (builtin_spec, load_spec, plan_sweep, run_sweep, resume_sweep,
                        sweep_status, summarize, RunOptions)
"""

from sweeps.builtin import alpha_spec, bits_spec, moe_spec, paper_spec
from sweeps.parse import check_sweep_name, parse_floats, parse_folds, parse_ints, parse_names
from sweeps.plan import SweepPlan, plan_sweep
from sweeps.runner import RunOptions, SweepOutcome, resume_sweep, run_sweep
from sweeps.spec import SPECS, GridGroup, SweepSpec, builtin_spec, load_hparams, load_spec
from sweeps.status import SweepStatus, summarize, sweep_status
from sweeps.store import SweepStore

__all__ = [
    "SPECS", "GridGroup", "RunOptions", "SweepOutcome", "SweepPlan", "SweepSpec", "SweepStatus",
    "SweepStore", "alpha_spec", "bits_spec", "builtin_spec", "check_sweep_name", "load_hparams",
    "load_spec", "moe_spec", "paper_spec", "parse_floats", "parse_folds", "parse_ints", "parse_names",
    "plan_sweep", "resume_sweep", "run_sweep", "summarize", "sweep_status",
]
