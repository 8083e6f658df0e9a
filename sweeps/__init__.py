"""Ray Tune orchestration of qmoe trials (DESIGN §8), installed as ``qmoe.sweeps``. The only
package that imports ray; importing it does not (ray loads when a sweep runs).

Public API::

    from qmoe.sweeps import (builtin_spec, load_spec, plan_sweep, run_sweep, resume_sweep,
                             sweep_status, summary_by_config, RunOptions)

What is where:

- a sweep's grid: :mod:`~qmoe.sweeps.grid` (specs and their TOML files), :mod:`~qmoe.sweeps.builtin`
  (the built-in sweeps and their flags), :mod:`~qmoe.sweeps.parse` (flag values),
  :mod:`~qmoe.sweeps.plan` (the grid expanded on its tables);
- running it: :mod:`~qmoe.sweeps.runner` (run, resume, what a command plans) on the run core
  shared with tuning, :mod:`~qmoe.sweeps.engine`; in the workers :mod:`~qmoe.sweeps.trainable`,
  on the driver :mod:`~qmoe.sweeps.recorder` and :mod:`~qmoe.sweeps.progress`;
  :mod:`~qmoe.sweeps.cluster` connects to Ray;
- on disk: :mod:`~qmoe.sweeps.folder` (a run's folder, lock, atomic writes),
  :mod:`~qmoe.sweeps.store` (the results table), :mod:`~qmoe.sweeps.status`;
- :mod:`qmoe.sweeps.tune` (``qmoe tune``), :mod:`qmoe.sweeps.bench` (the Ray side of
  ``qmoe bench``), :mod:`~qmoe.sweeps.embed_actors` (feature extraction on Ray).

Names are imported lazily (PEP 562), so ``from qmoe.sweeps import parse_folds`` does not pay
for pandas, and a command that needs one part loads only that part.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmoe.lazy import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {  # submodule -> the names it exports
    "builtin": ("alpha_spec", "bits_spec", "moe_spec", "paper_spec"),
    "engine": ("RunOptions",),
    "grid": ("SPECS", "GridGroup", "SweepSpec", "builtin_spec", "load_spec"),
    "overrides": ("Overrides", "apply_overrides", "load_hparams"),
    "parse": ("check_sweep_name", "parse_floats", "parse_folds", "parse_ints", "parse_names"),
    "plan": ("SweepPlan", "plan_sweep"),
    "runner": ("SweepOutcome", "plan_command", "resume_sweep", "run_sweep"),
    "status": ("SweepStatus", "summary_by_config", "sweep_status"),
    "store": ("SweepStore",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _MODULES, globals())


if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from qmoe.sweeps.builtin import alpha_spec, bits_spec, moe_spec, paper_spec
    from qmoe.sweeps.engine import RunOptions
    from qmoe.sweeps.grid import SPECS, GridGroup, SweepSpec, builtin_spec, load_spec
    from qmoe.sweeps.overrides import Overrides, apply_overrides, load_hparams
    from qmoe.sweeps.parse import check_sweep_name, parse_floats, parse_folds, parse_ints, parse_names
    from qmoe.sweeps.plan import SweepPlan, plan_sweep
    from qmoe.sweeps.runner import SweepOutcome, plan_command, resume_sweep, run_sweep
    from qmoe.sweeps.status import SweepStatus, summary_by_config, sweep_status
    from qmoe.sweeps.store import SweepStore
