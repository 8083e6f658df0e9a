"""Which function runs a trial: ``qmoe.trial:run_trial``, unless a test or a benchmark names another.

The workers load it by reference (``"package.module:function"``), so Ray runs an injected fake
(``QMOE_TRIAL_FN=tests.sweeps.fakes:fast_trial``, or ``RunOptions(trial_fn=...)``) exactly like
the real one. A picklable callable works as well.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from collections.abc import Callable
from typing import Any

from qmoe.errors import ConfigError

DEFAULT_TRIAL_FN = "qmoe.trial:run_trial"
TRIAL_FN_ENV = "QMOE_TRIAL_FN"  # testing hook: "module:function" replacing run_trial

TrialFn = Callable[..., Any]  # (spec, table, *, threads) -> a result with .record and .samples


def trial_fn_ref(given: str | TrialFn | None = None) -> str | TrialFn:
    """The trial function to run: ``given``, else ``$QMOE_TRIAL_FN``, else :data:`DEFAULT_TRIAL_FN`."""
    return given or os.environ.get(TRIAL_FN_ENV) or DEFAULT_TRIAL_FN


def resolve_trial_fn(ref: str | TrialFn) -> TrialFn:
    """A callable from ``"package.module:function"`` (or the callable itself).

    Raises:
        ConfigError: a malformed reference, a missing module or attribute.
    """
    if callable(ref):
        return ref
    module_name, _, attr = str(ref).partition(":")
    if not module_name or not attr:
        raise ConfigError(f"trial function {ref!r} must look like 'package.module:function'")
    try:
        fn = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"trial function {ref!r} cannot be loaded: {err}") from None
    if not callable(fn):
        raise ConfigError(f"trial function {ref!r} is not callable")
    return fn


def check_trial_fn(ref: str | TrialFn) -> None:
    """Fail now on a reference the workers could not load; the driver itself never calls it.

    The default (:data:`DEFAULT_TRIAL_FN`) is only looked up, not imported: importing it loads
    torch and sklearn (~2-3 s of CPU and ~500 MB), which the driver does not need and which would
    compete with Ray's start for the machine. Any other reference is loaded (:func:`resolve_trial_fn`).

    Raises:
        ConfigError: as :func:`resolve_trial_fn`, or the default's module is missing.
    """
    if ref != DEFAULT_TRIAL_FN:
        resolve_trial_fn(ref)
    elif importlib.util.find_spec(DEFAULT_TRIAL_FN.partition(":")[0]) is None:
        raise ConfigError(f"trial function {ref!r} cannot be loaded: its module is not installed")
