"""Sweep specs: the grid of trials a sweep runs, written as TOML (DESIGN §8).

A spec file looks like::

    description = "Curiosity strength of the BitNet-Q4/8 mixture"
    datasets = ["synth"]          # dataset names; --dataset / --data override
    folds = "all"                 # or [1, 2] or "1,3-5"
    seed = 0                      # sweep seed; every trial derives its own
    seeds = 1                     # training seeds per (config, fold): a count from seed, or [0, 3, 7]
    repeats = 0                   # seeded fold reassignments (repeated k-fold; not for official
                                  # folds): a count of split seeds from seed, or a list of them
    curiosity = "kl"              # kl | entropy, or ["kl", "entropy"] (mixtures with alpha > 0)
    protocol = "clean"            # clean | paper
    latency_runs = 200            # timed batch-1 runs per trial
    measure_energy = true         # CodeCarbon around training and inference
    skip_unprepared = false       # true: leave out datasets that are not prepared
    save_models = false           # keep each trial's model in models/<trial_key>/ (qmoe export KEY)
    latency = "in-sweep"          # in-sweep | isolated (the saved models timed alone after the trials)

    [hparams]                     # TrainConfig overrides for every trial
    max_epochs = 100

    [[grid]]                      # each group is a product: models x alphas x folds
    id = "mixture"
    models = ["bitnet,q4,q8"]     # one quantizer = a single model, several = a mixture
    alphas = [0.0, 0.2, 0.3]      # curiosity strength; > 0 for mixtures only

    [[grid]]
    id = "bits"
    bits = [1, 2, 4]              # shorthand for models = ["q1", "q2", "q4"]

The built-in specs live in ``sweeps/specs/`` and are listed in :data:`SPECS`. The command
line's choices (``--dataset``, ``--folds``, ``--hparams``...) apply to any spec through
:class:`~qmoe.sweeps.overrides.Overrides`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from qmoe.errors import ConfigError, UnknownNameError
from qmoe.layout import IN_SWEEP, ISOLATED
from qmoe.quant_names import BUILTIN_QUANTIZERS, bitlinear_name
from qmoe.registry import Registry
from qmoe.spec import CURIOSITIES, DEFAULT_CURIOSITY, PROTOCOLS, TrainConfig, check_alpha

from qmoe.sweeps.parse import check_latency_mode, check_replicates, parse_folds, read_toml

SPEC_DIR = Path(__file__).parent / "specs"

#: Built-in sweep specs by name -> path of their TOML file.
SPECS: Registry[Path] = Registry("sweep")
for _path in sorted(SPEC_DIR.glob("*.toml")):
    SPECS.add(_path.stem, _path)

_TOP_KEYS = ("description", "datasets", "folds", "seed", "seeds", "repeats", "curiosity", "protocol",
             "latency_runs", "measure_energy", "skip_unprepared", "save_models", "latency", "hparams", "grid")
_GRID_KEYS = ("id", "models", "bits", "alphas")


def known_quantizers() -> tuple[str, ...]:
    """The registered quantizer names (imports ``qmoe.quant``, hence torch: ~1-2 s)."""
    from qmoe.quant import list_quantizers

    return tuple(list_quantizers())


def is_quantizer(name: str) -> bool:
    """Whether ``name`` is a registered quantizer; a built-in name is known without torch
    (a sweep command's checks then leave its first seconds to Ray's start)."""
    return name in BUILTIN_QUANTIZERS or name in known_quantizers()


def check_experts(experts: tuple[str, ...], where: str) -> None:
    """Raise UnknownNameError (listing the known names) for an unknown quantizer."""
    for name in experts:
        if not is_quantizer(name):
            raise UnknownNameError(f"{where}: unknown quantizer {name!r}; known: {', '.join(known_quantizers())}")


@dataclass(frozen=True, kw_only=True)
class GridGroup:
    """One product of the grid: every model with every alpha (on every fold)."""

    models: tuple[tuple[str, ...], ...]  # each model = its experts; one expert = a single model
    alphas: tuple[float, ...] = (0.0,)  # curiosity strengths; > 0 only for mixtures
    id: str = ""  # lets the built-in commands find the group their flags replace

    def check(self, where: str) -> None:
        """Validate; ``where`` names the spec and group in messages."""
        if not self.models:
            raise ConfigError(f"{where}: 'models' is empty: list at least one model, e.g. [\"q4\"]")
        if not self.alphas:
            raise ConfigError(f"{where}: 'alphas' is empty: list at least one, e.g. [0.0, 0.3]")
        for experts in self.models:
            if not experts or any(not e for e in experts):
                raise ConfigError(f"{where}: empty model name: write e.g. \"q4\" or \"bitnet,q4,q8\"")
            if len(set(experts)) != len(experts):
                raise ConfigError(f"{where}: model {','.join(experts)!r} repeats an expert")
            check_experts(experts, where)
        for alpha in self.alphas:
            check_alpha(alpha, where)
        singles = [e[0] for e in self.models if len(e) == 1]
        if singles and any(a > 0 for a in self.alphas):
            raise ConfigError(
                f"{where}: alpha > 0 applies to mixtures only, but {singles[0]!r} is a single model: "
                "put single models in their own [[grid]] with alphas = [0.0]")


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    """A validated sweep: what to run (datasets x grid x folds) and the fixed settings."""

    kind: str  # the built-in name or the file's stem; prefixes default sweep names
    grid: tuple[GridGroup, ...]
    description: str = ""
    datasets: tuple[str, ...] = ("synth",)
    data: Path | None = None  # a ready embedding table instead of named datasets
    folds: tuple[int, ...] | None = None  # None: every fold of each dataset
    seed: int = 0
    seeds: int | tuple[int, ...] = 1  # training seeds: a count (seed, seed+1, ...) or the seeds
    repeats: int | tuple[int, ...] = 0  # split seeds: a count (from seed; 0 = the table's folds) or the seeds
    curiosity: tuple[str, ...] = (DEFAULT_CURIOSITY,)  # variants run at every alpha > 0
    protocol: str = "clean"
    hparams: Mapping[str, Any] = field(default_factory=dict)  # TrainConfig overrides
    hparams_source: str = "default"  # recorded in every row: where the overrides came from
    latency_runs: int = 200
    measure_energy: bool = True
    skip_unprepared: bool = False  # leave out named datasets that are not prepared
    save_models: bool = False  # keep each trial's trained model (models/<trial_key>/); not in trial keys
    latency: str = IN_SWEEP  # in-sweep | isolated (implies save_models)
    source: str = "<spec>"  # file (or command) the spec came from, for messages

    def __post_init__(self) -> None:
        object.__setattr__(self, "hparams", dict(self.hparams))
        where = self.source
        if not self.grid:
            raise ConfigError(f"{where}: no [[grid]] groups: add one with models (and alphas)")
        for i, group in enumerate(self.grid, 1):
            group.check(f"{where} [[grid]] {group.id or i}")
        if self.data is None and not self.datasets:
            raise ConfigError(f"{where}: 'datasets' is empty: name at least one, e.g. [\"synth\"]")
        if self.folds is not None and not self.folds:
            raise ConfigError(f"{where}: 'folds' is empty: write \"all\" or a list such as [1, 2]")
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"{where}: protocol {self.protocol!r} is unknown; known: {', '.join(PROTOCOLS)}")
        object.__setattr__(self, "curiosity", tuple(dict.fromkeys(self.curiosity)))
        unknown = [c for c in self.curiosity if c not in CURIOSITIES]
        if not self.curiosity or unknown:
            raise ConfigError(f"{where}: curiosity {(unknown or [''])[0]!r} is unknown; known: {', '.join(CURIOSITIES)}")
        check_replicates(self.seeds, f"{where}: seeds (--seeds)", minimum=1)
        check_replicates(self.repeats, f"{where}: repeats (--repeats)", minimum=0)
        if self.latency_runs < 1:
            raise ConfigError(f"{where}: latency_runs must be at least 1")
        check_latency_mode(self.latency, f"{where}: latency (--latency)")
        for mixture in (False, True):  # unknown or invalid hyper-parameters fail here, not in a worker
            try:
                TrainConfig.defaults(mixture).replace(**self.hparams)
            except (ConfigError, TypeError, ValueError) as err:
                raise ConfigError(f"{where} [hparams]: {err}") from None

    @property
    def keeps_models(self) -> bool:
        """Whether each trial's model is saved: asked for, or needed by ``latency = isolated``."""
        return self.save_models or self.latency == ISOLATED

    @property
    def seed_values(self) -> tuple[int, ...]:
        """The training seeds: ``seeds`` as given, or that many from :attr:`seed` on."""
        return self.seeds if isinstance(self.seeds, tuple) else tuple(range(self.seed, self.seed + self.seeds))

    @property
    def split_seed_values(self) -> tuple[int | None, ...]:
        """The split seeds of repeated k-fold; ``(None,)`` = the tables' own folds."""
        if isinstance(self.repeats, tuple):
            return self.repeats
        return tuple(range(self.seed, self.seed + self.repeats)) if self.repeats else (None,)

    def train_config(self, is_mixture: bool) -> TrainConfig:
        """The training settings of a trial: the paper's defaults plus :attr:`hparams`."""
        return TrainConfig.defaults(is_mixture).replace(**self.hparams)

    def group(self, group_id: str) -> GridGroup:
        """The grid group with this id (ConfigError if the spec has none)."""
        for group in self.grid:
            if group.id == group_id:
                return group
        raise ConfigError(f"{self.source}: no [[grid]] group with id = {group_id!r}")

    def replace_group(self, group_id: str, **changes: Any) -> SweepSpec:
        """A copy with one grid group changed (validated again)."""
        grid = tuple(dataclasses.replace(g, **changes) if g.id == group_id else g for g in self.grid)
        self.group(group_id)
        return dataclasses.replace(self, grid=grid)

    def replace(self, **changes: Any) -> SweepSpec:
        """A copy with fixed settings changed; ``None`` values leave a setting as it is."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able form (for the sweep's manifest)."""
        return {
            "kind": self.kind, "description": self.description, "datasets": list(self.datasets),
            "data": str(self.data) if self.data else None,
            "folds": list(self.folds) if self.folds is not None else "all", "seed": self.seed,
            "seeds": list(self.seed_values), "split_seeds": list(self.split_seed_values),
            "curiosity": list(self.curiosity), "protocol": self.protocol, "hparams": dict(self.hparams),
            "hparams_source": self.hparams_source, "latency_runs": self.latency_runs,
            "measure_energy": self.measure_energy, "skip_unprepared": self.skip_unprepared,
            "save_models": self.keeps_models, "latency": self.latency, "source": self.source,
            "grid": [{"id": g.id, "models": [",".join(m) for m in g.models], "alphas": list(g.alphas)}
                     for g in self.grid],
        }


# -- reading TOML ------------------------------------------------------------------------

def _check_keys(table: Mapping[str, Any], allowed: tuple[str, ...], where: str) -> None:
    for key in table:
        if key not in allowed:
            raise ConfigError(f"{where}: unknown key {key!r}; known: {', '.join(allowed)}")


def _list(value: Any, where: str, key: str) -> list[Any]:
    if not isinstance(value, list):
        raise ConfigError(f"{where}: {key!r} must be a list, e.g. {key} = [...]")
    if not value:
        raise ConfigError(f"{where}: {key!r} is empty: list at least one value")
    return value


def _number(value: Any, where: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{where}: {key!r} must hold numbers, got {value!r}")
    return float(value)


def _model(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return tuple(p.strip() for p in value.split(","))
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(v.strip() for v in value)
    raise ConfigError(f"{where}: a model is a string such as \"q4\" or \"bitnet,q4,q8\", got {value!r}")


def _group(raw: Any, where: str) -> GridGroup:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a table ([[grid]] with models = [...])")
    _check_keys(raw, _GRID_KEYS, where)
    models = [_model(m, where) for m in _list(raw["models"], where, "models")] if "models" in raw else []
    for bits in _list(raw["bits"], where, "bits") if "bits" in raw else []:
        if isinstance(bits, bool) or not isinstance(bits, int):
            raise ConfigError(f"{where}: 'bits' must hold whole numbers such as 4, got {bits!r}")
        models.append((bitlinear_name(bits),))
    if "models" not in raw and "bits" not in raw:
        raise ConfigError(f"{where}: give 'models' (e.g. [\"q4\", \"bitnet,q4,q8\"]) or 'bits' (e.g. [1, 4])")
    alphas = tuple(_number(a, where, "alphas") for a in _list(raw["alphas"], where, "alphas")) \
        if "alphas" in raw else (0.0,)
    group_id = raw.get("id", "")
    if not isinstance(group_id, str):
        raise ConfigError(f"{where}: 'id' must be a string")
    return GridGroup(models=tuple(dict.fromkeys(models)), alphas=tuple(dict.fromkeys(alphas)), id=group_id)


def _folds(value: Any, where: str) -> tuple[int, ...] | None:
    if value == "all":
        return None
    if isinstance(value, str):
        return parse_folds(value, flag=f"{where}: 'folds'")
    if isinstance(value, list) and value and all(isinstance(f, int) and not isinstance(f, bool) and f >= 1
                                                  for f in value):
        return tuple(sorted(set(value)))
    raise ConfigError(f"{where}: 'folds' must be \"all\", a list of fold numbers, or a string such as \"1,3-5\"")


def spec_from_dict(raw: Mapping[str, Any], *, kind: str, source: str) -> SweepSpec:
    """Validate a parsed TOML document into a :class:`SweepSpec`.

    Raises:
        ConfigError: unknown keys, empty axes, wrong types or bad values, naming file and key.
    """
    _check_keys(raw, _TOP_KEYS, source)
    if "grid" not in raw:
        raise ConfigError(f"{source}: no [[grid]] groups: add one with models (and alphas)")
    grid_raw = raw["grid"]
    if not isinstance(grid_raw, list):
        raise ConfigError(f"{source}: 'grid' must be an array of tables: write [[grid]] sections")
    grid = tuple(_group(g, f"{source} [[grid]] {i}") for i, g in enumerate(_list(grid_raw, source, "grid"), 1))
    kwargs: dict[str, Any] = {}
    if "datasets" in raw:
        datasets = _list(raw["datasets"], source, "datasets")
        if not all(isinstance(d, str) and d for d in datasets):
            raise ConfigError(f"{source}: 'datasets' must hold dataset names such as \"synth\"")
        kwargs["datasets"] = tuple(dict.fromkeys(datasets))
    if "folds" in raw:
        kwargs["folds"] = _folds(raw["folds"], source)
    for key, kind_ in (("description", str), ("protocol", str), ("seed", int), ("latency_runs", int),
                       ("measure_energy", bool), ("skip_unprepared", bool), ("save_models", bool),
                       ("latency", str)):
        if key in raw:
            value = raw[key]
            if not isinstance(value, kind_) or (kind_ is int and isinstance(value, bool)):
                raise ConfigError(f"{source}: {key!r} must be a {kind_.__name__}, got {value!r}")
            kwargs[key] = value
    for key in ("seeds", "repeats"):
        if key in raw:
            kwargs[key] = tuple(raw[key]) if isinstance(raw[key], list) else raw[key]
    if "curiosity" in raw:
        value = raw["curiosity"]
        kwargs["curiosity"] = (value,) if isinstance(value, str) else tuple(_list(value, source, "curiosity"))
    if "hparams" in raw:
        if not isinstance(raw["hparams"], dict):
            raise ConfigError(f"{source}: 'hparams' must be a table: write [hparams]")
        kwargs["hparams"] = raw["hparams"]
        kwargs["hparams_source"] = source
    return SweepSpec(kind=kind, grid=grid, source=source, **kwargs)


def load_spec(path: str | Path) -> SweepSpec:
    """Read and validate a spec file (the kind is the file's stem)."""
    path = Path(path)
    return spec_from_dict(read_toml(path), kind=path.stem, source=str(path))


def builtin_spec(name: str) -> SweepSpec:
    """A built-in spec by name (UnknownNameError lists the built-ins)."""
    path = SPECS.get(name)
    return spec_from_dict(read_toml(path), kind=name, source=f"sweeps/specs/{path.name}")
