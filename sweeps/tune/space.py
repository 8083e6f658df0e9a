"""Search spaces of ``qmoe tune``: the default space, and SPACE.toml files, validated.

A space file (every name is a :class:`~qmoe.spec.TrainConfig` field)::

    [params]                    # searched; an entry replaces the default entry of that name
    lr = { low = 1e-4, high = 1e-2, log = true }       # a float range (log scale)
    patience = { low = 5, high = 30 }                 # whole-number bounds on an int field
    batch_size = { choices = [32, 64, 128] }          # a categorical choice
    hidden = { choices = [[640, 320], [256, 128]] }   # layer widths

    [fixed]                     # held constant for every trial (the default point included);
    max_epochs = 40             # a name here leaves the search

    [scheduler]                 # ASHA early stopping of poor trials, in epochs
    grace_period = 4            # default: max(2, max_epochs // 10)
    reduction_factor = 3
    enabled = true

Default-space entries a file does not name stay searched (put a name in ``[fixed]`` to stop
searching it). Mistakes (an unknown parameter or key, an empty or inverted range, a value of
the wrong type or out of the field's valid range) raise one-line ConfigErrors naming the
file and the key.

Optuna sees categorical values as labels (``"640,320"`` for a list); :meth:`Param.value` turns
a label back into the field's value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmoe.errors import ConfigError
from qmoe.spec import TrainConfig

from qmoe.sweeps.parse import read_toml

#: Fields whose values are whole numbers; ``hidden`` takes choices of width lists only.
INT_FIELDS = frozenset({"batch_size", "patience", "max_epochs", "mc_samples", "top_k"})
#: Fields that only change a mixture's training.
MIXTURE_FIELDS = frozenset({"router_lr", "top_k", "lb_weight", "mc_samples", "router_dropout", "temperature"})
TUNABLE = tuple(f.name for f in dataclasses.fields(TrainConfig))
_PARAM_KEYS = ("low", "high", "log", "choices")
_SCHEDULER_KEYS = ("grace_period", "reduction_factor", "enabled")


def _label(value: Any) -> Any:
    """How Optuna sees a categorical value: lists/tuples as ``"640,320"``."""
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    return value


@dataclass(frozen=True, kw_only=True)
class Param:
    """One searched hyper-parameter: a float or int range, or a categorical choice."""

    name: str  # a TrainConfig field
    kind: str  # "float" | "int" | "categorical"
    low: float | None = None
    high: float | None = None
    log: bool = False  # sample on a log scale (ranges only)
    choices: tuple[Any, ...] = ()  # the values (categorical only); lists become tuples

    def distribution(self) -> Any:
        """The Optuna distribution of this parameter."""
        import optuna

        if self.kind == "float":
            return optuna.distributions.FloatDistribution(self.low, self.high, log=self.log)
        if self.kind == "int":
            return optuna.distributions.IntDistribution(int(self.low), int(self.high), log=self.log)
        return optuna.distributions.CategoricalDistribution([_label(c) for c in self.choices])

    def suggest(self, trial: Any) -> Any:
        """Ask an Optuna trial for a value (its own representation: labels for choices)."""
        if self.kind == "float":
            return trial.suggest_float(self.name, self.low, self.high, log=self.log)
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), log=self.log)
        return trial.suggest_categorical(self.name, [_label(c) for c in self.choices])

    def value(self, suggested: Any) -> Any:
        """The TrainConfig value of a suggested (Optuna) value."""
        if self.kind == "categorical":
            return {_label(c): c for c in self.choices}[suggested]
        return int(suggested) if self.kind == "int" else float(suggested)

    def contains(self, value: Any) -> bool:
        """True when ``value`` (a TrainConfig value) lies in the parameter's range or choices."""
        if self.kind == "categorical":
            return _label(value) in {_label(c) for c in self.choices}
        return self.low <= value <= self.high

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind == "categorical":
            d["choices"] = [list(c) if isinstance(c, tuple) else c for c in self.choices]
        else:
            d.update(low=self.low, high=self.high, log=self.log)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> Param:
        d = dict(d)
        if "choices" in d:
            d["choices"] = tuple(tuple(c) if isinstance(c, list) else c for c in d["choices"])
        return cls(**d)


@dataclass(frozen=True, kw_only=True)
class SearchSpace:
    """What ``qmoe tune`` searches, what it holds fixed, and how ASHA stops poor trials."""

    params: tuple[Param, ...]
    fixed: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig overrides for every trial
    grace_period: int | None = None  # ASHA: epochs before a trial may be stopped (None: from max_epochs)
    reduction_factor: float = 3.0  # ASHA: keep the best 1/reduction_factor at each rung
    asha: bool = True  # False: every trial runs to its own end (early stopping only)
    source: str = "default"  # "default" or the space file

    def base_config(self, is_mixture: bool) -> TrainConfig:
        """The defaults of the kind of model with the fixed settings."""
        return TrainConfig.defaults(is_mixture).replace(**self.fixed)

    def config(self, is_mixture: bool, suggested: Mapping[str, Any]) -> TrainConfig:
        """The TrainConfig of one trial from its suggested (Optuna) values."""
        by_name = {p.name: p for p in self.params}
        values = {name: by_name[name].value(v) for name, v in suggested.items() if name in by_name}
        return self.base_config(is_mixture).replace(**values)

    def values_json(self, suggested: Mapping[str, Any]) -> str:
        """JSON of suggested (Optuna) values as TrainConfig values (``hidden`` as a list)."""
        by_name = {p.name: p for p in self.params}
        values = {k: by_name[k].value(v) for k, v in suggested.items() if k in by_name}
        return json.dumps({k: list(v) if isinstance(v, tuple) else v for k, v in values.items()})

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run space for ``OptunaSearch``; returns the Optuna trial number as a constant
        (it lands in Tune's config as ``study_trial``, so rows can be matched with the study)."""
        for p in self.params:
            p.suggest(trial)
        return {"study_trial": trial.number}

    def default_point(self, is_mixture: bool) -> dict[str, Any] | None:
        """The base settings as an Optuna point (None when some value lies outside the space).

        A mixture's unset ``router_lr`` is its ``lr`` (what the optimiser then uses).
        """
        base = self.base_config(is_mixture)
        point = {}
        for p in self.params:
            value = getattr(base, p.name)
            if p.name == "router_lr" and value is None:
                value = base.lr
            if value is None or not p.contains(value):
                return None
            point[p.name] = _label(value) if p.kind == "categorical" else value
        return point

    @property
    def max_epochs(self) -> int:
        """The most epochs a trial can run (ASHA's ``max_t``)."""
        for p in self.params:
            if p.name == "max_epochs":
                return int(p.high if p.kind != "categorical" else max(p.choices))
        return int(self.fixed.get("max_epochs", TrainConfig.single().max_epochs))

    @property
    def grace(self) -> int:
        """ASHA's grace period in epochs."""
        if self.grace_period is not None:
            return self.grace_period
        return min(self.max_epochs, max(2, self.max_epochs // 10))

    def to_dict(self) -> dict[str, Any]:
        return {"source": self.source, "params": [p.to_dict() for p in self.params], "fixed": dict(self.fixed),
                "scheduler": {"grace_period": self.grace_period, "reduction_factor": self.reduction_factor,
                              "enabled": self.asha}}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> SearchSpace:
        sched = d.get("scheduler", {})
        return cls(params=tuple(Param.from_dict(p) for p in d["params"]), fixed=dict(d.get("fixed", {})),
                   grace_period=sched.get("grace_period"), reduction_factor=sched.get("reduction_factor", 3.0),
                   asha=sched.get("enabled", True), source=d.get("source", "default"))


def default_space(n_experts: int) -> SearchSpace:
    """The default space for a single model (``n_experts == 1``) or a mixture.

    Learning rate and weight decay on log scales, dropout, hidden widths, batch size, label
    smoothing; for mixtures also the router's learning rate, top-k and the load-balancing
    weight. Every range holds the paper's defaults (DESIGN §5), so the defaults can be the
    first point evaluated.
    """
    common = [Param(name="lr", kind="float", low=1e-4, high=1e-2, log=True),
              Param(name="weight_decay", kind="float", low=1e-6, high=1e-1, log=True),
              Param(name="dropout", kind="float", low=0.0, high=0.5),
              Param(name="label_smoothing", kind="float", low=0.0, high=0.2)]
    if n_experts == 1:
        return SearchSpace(params=(*common,
                                   Param(name="hidden", kind="categorical",
                                         choices=((320, 160), (640, 320), (1024, 512), (640, 320, 160))),
                                   Param(name="batch_size", kind="categorical", choices=(32, 64, 128, 256))))
    return SearchSpace(params=(*common,
                               Param(name="hidden", kind="categorical",
                                     choices=((128, 64), (256, 128), (256, 128, 64), (512, 256, 128))),
                               Param(name="batch_size", kind="categorical", choices=(64, 128, 256, 512)),
                               Param(name="router_lr", kind="float", low=1e-4, high=1e-2, log=True),
                               Param(name="top_k", kind="categorical", choices=tuple(range(1, min(n_experts, 3) + 1))),
                               Param(name="lb_weight", kind="float", low=1e-4, high=1e-1, log=True)))


# -- reading a space file -----------------------------------------------------------------------

def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _check_value(name: str, value: Any, where: str, n_experts: int) -> Any:
    """``value`` as the field's type, valid for TrainConfig (else ConfigError at ``where``)."""
    if name == "hidden":
        if not (isinstance(value, list) and value and all(isinstance(v, int) and not isinstance(v, bool)
                                                          for v in value)):
            raise ConfigError(f"{where}: hidden values are lists of layer widths, e.g. [640, 320], got {value!r}")
        value = tuple(value)
    elif name in INT_FIELDS:
        if not isinstance(value, int) or isinstance(value, bool):
            raise ConfigError(f"{where}: {name} takes whole numbers, got {value!r}")
    elif not _is_number(value):
        raise ConfigError(f"{where}: {name} takes numbers, got {value!r}")
    else:
        value = float(value)
    if name == "top_k" and value > n_experts:
        raise ConfigError(f"{where}: top_k {value} is more than the mixture's {n_experts} experts")
    try:
        TrainConfig.defaults(n_experts > 1).replace(**{name: value})
    except ConfigError as err:
        raise ConfigError(f"{where}: {err}") from None
    return value


def _param(name: str, raw: Any, where: str, n_experts: int) -> Param:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: write a range {{ low = ..., high = ... }} or {{ choices = [...] }}; "
                          f"to hold {name} at one value put it in [fixed]")
    for key in raw:
        if key not in _PARAM_KEYS:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(_PARAM_KEYS)}")
    if "choices" in raw:
        if set(raw) - {"choices"}:
            raise ConfigError(f"{where}: give either choices or low/high, not both")
        choices = raw["choices"]
        if not isinstance(choices, list):
            raise ConfigError(f"{where}: choices must be a list, e.g. choices = [32, 64]")
        if len(choices) < 2:
            raise ConfigError(f"{where}: empty range: {len(choices)} choice(s); list at least two "
                              f"(to hold {name} at one value put it in [fixed])")
        values = tuple(_check_value(name, c, where, n_experts) for c in choices)
        if len({_label(v) for v in values}) != len(values):
            raise ConfigError(f"{where}: a choice is listed twice")
        return Param(name=name, kind="categorical", choices=values)
    if name == "hidden":
        raise ConfigError(f"{where}: hidden takes choices, e.g. choices = [[640, 320], [256, 128]]")
    if "low" not in raw or "high" not in raw:
        raise ConfigError(f"{where}: a range needs both low and high (or give choices = [...])")
    log = raw.get("log", False)
    if not isinstance(log, bool):
        raise ConfigError(f"{where}: log must be true or false, got {log!r}")
    low, high = (_check_value(name, raw[k], f"{where}.{k}", n_experts) for k in ("low", "high"))
    if low > high:
        raise ConfigError(f"{where}: low {low} > high {high}: swap them")
    if low == high:
        raise ConfigError(f"{where}: empty range: low == high == {low}; to hold {name} at one value put it in [fixed]")
    if log and low <= 0:
        raise ConfigError(f"{where}: a log range needs low > 0, got {low}")
    return Param(name=name, kind="int" if name in INT_FIELDS else "float", low=low, high=high, log=log)


def load_space(path: str | Path, n_experts: int) -> SearchSpace:
    """Read and validate a space file for a model of ``n_experts`` experts (1 = single model).

    Raises:
        ConfigError: a missing or malformed file, or a bad entry (naming the file and the key).
    """
    source = str(path)
    raw = read_toml(Path(path))
    for key in raw:
        if key not in ("params", "fixed", "scheduler"):
            raise ConfigError(f"{source}: unknown key {key!r}; known: params, fixed, scheduler")
    tables = {}
    for key in ("params", "fixed", "scheduler"):
        tables[key] = raw.get(key, {})
        if not isinstance(tables[key], dict):
            raise ConfigError(f"{source}: {key!r} must be a table: write [{key}]")
    fixed: dict[str, Any] = {}
    for name, value in tables["fixed"].items():
        if name not in TUNABLE:
            raise ConfigError(f"{source}: [fixed] {name}: unknown parameter; known: {', '.join(TUNABLE)}")
        fixed[name] = list(_check_value(name, value, f"{source}: [fixed] {name}", n_experts)) \
            if name == "hidden" else _check_value(name, value, f"{source}: [fixed] {name}", n_experts)
    try:
        TrainConfig.defaults(n_experts > 1).replace(**fixed)
    except ConfigError as err:
        raise ConfigError(f"{source}: [fixed]: {err}") from None
    params = {p.name: p for p in default_space(n_experts).params if p.name not in fixed}
    for name, spec in tables["params"].items():
        where = f"{source}: [params] {name}"
        if name not in TUNABLE:
            raise ConfigError(f"{where}: unknown parameter; tunable: {', '.join(TUNABLE)}")
        if name in fixed:
            raise ConfigError(f"{where}: also in [fixed]: a parameter is either searched or fixed")
        if name in MIXTURE_FIELDS and n_experts == 1:
            raise ConfigError(f"{where}: applies to mixtures only, and the model is a single one")
        params[name] = _param(name, spec, where, n_experts)
    if not params:
        raise ConfigError(f"{source}: nothing to search: every parameter is in [fixed]")
    sched = tables["scheduler"]
    for key in sched:
        if key not in _SCHEDULER_KEYS:
            raise ConfigError(f"{source}: [scheduler] unknown key {key!r}; known: {', '.join(_SCHEDULER_KEYS)}")
    grace, factor, enabled = sched.get("grace_period"), sched.get("reduction_factor", 3.0), sched.get("enabled", True)
    if grace is not None and (not isinstance(grace, int) or isinstance(grace, bool) or grace < 1):
        raise ConfigError(f"{source}: [scheduler] grace_period must be a whole number of epochs >= 1, got {grace!r}")
    if not _is_number(factor) or not factor > 1 or not math.isfinite(factor):
        raise ConfigError(f"{source}: [scheduler] reduction_factor must be a number > 1, got {factor!r}")
    if not isinstance(enabled, bool):
        raise ConfigError(f"{source}: [scheduler] enabled must be true or false, got {enabled!r}")
    space = SearchSpace(params=tuple(params.values()), fixed=fixed, grace_period=grace,
                        reduction_factor=float(factor), asha=enabled, source=source)
    if grace is not None and grace > space.max_epochs:
        raise ConfigError(f"{source}: [scheduler] grace_period {grace} is more than max_epochs {space.max_epochs}")
    return space


def resolve_space(space: str | Path | None, n_experts: int) -> SearchSpace:
    """``--space``: ``default`` (or None) -> :func:`default_space`, else a file (:func:`load_space`)."""
    if space is None or str(space) == "default":
        return default_space(n_experts)
    return load_space(Path(space).expanduser(), n_experts)
