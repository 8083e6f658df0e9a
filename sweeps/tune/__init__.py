"""``qmoe tune``: Optuna (TPE, seeded) inside Ray Tune over training hyper-parameters (DESIGN §8).

- :mod:`~qmoe.sweeps.tune.tune_runner`: what to tune (:class:`TuneSpec`, :class:`TuneRequest`),
  :func:`run_tune` and :func:`resume_tune` on the shared run core (:mod:`qmoe.sweeps.engine`);
- :mod:`~qmoe.sweeps.tune.space`: the search space and SPACE.toml files;
- :mod:`~qmoe.sweeps.tune.study`: the Optuna study, its seeds, agreeing with our table on resume;
- :mod:`~qmoe.sweeps.tune.tune_trainable`, :mod:`~qmoe.sweeps.tune.tune_recorder`: the worker
  and the driver side of one trial;
- :mod:`~qmoe.sweeps.tune.tune_store`, :mod:`~qmoe.sweeps.tune.tuning_table`,
  :mod:`~qmoe.sweeps.tune.best_toml`: the run's folder, its table and ``best.toml``.

Names are imported lazily, as in :mod:`qmoe.sweeps`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from qmoe.lazy import lazy_exports

_MODULES: dict[str, tuple[str, ...]] = {  # submodule -> the names it exports
    "tune_runner": ("TuneOutcome", "TuneRequest", "TuneSpec", "resume_tune", "run_tune"),
    "space": ("SearchSpace", "default_space", "load_space"),
    "tune_store": ("TuneStore",),
}

__getattr__, __dir__, __all__ = lazy_exports(__name__, _MODULES, globals())

if TYPE_CHECKING:  # static checkers and IDEs see the eager imports
    from qmoe.sweeps.tune.space import SearchSpace, default_space, load_space
    from qmoe.sweeps.tune.tune_runner import TuneOutcome, TuneRequest, TuneSpec, resume_tune, run_tune
    from qmoe.sweeps.tune.tune_store import TuneStore
