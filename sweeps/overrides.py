"""The command line's choices for any sweep spec (``--dataset``, ``--folds``, ``--hparams``...).

:class:`Overrides` holds them as typed and checks them; :func:`apply_overrides` applies them to a
:class:`~qmoe.sweeps.grid.SweepSpec`; :func:`load_hparams` reads a ``--hparams`` file.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qmoe.errors import ConfigError
from qmoe.spec import TrainConfig

from qmoe.sweeps.grid import SweepSpec
from qmoe.sweeps.parse import check_latency_mode, parse_folds, parse_names, parse_seeds, read_toml


def apply_overrides(spec: SweepSpec, *, datasets: tuple[str, ...] | None = None, data: Path | None = None,
                    folds: tuple[int, ...] | None = None, seed: int | None = None,
                    seeds: int | tuple[int, ...] | None = None, repeats: int | tuple[int, ...] | None = None,
                    curiosity: tuple[str, ...] | None = None, protocol: str | None = None,
                    hparams_file: Path | None = None, save_models: bool | None = None,
                    latency: str | None = None) -> SweepSpec:
    """The spec with the command line's choices (``None`` keeps the spec's value).

    Datasets named on the command line are required: an unprepared one is an error rather
    than left out. A ``--hparams`` file's fields override the spec's ``[hparams]``.
    """
    changes: dict[str, Any] = {"folds": folds, "seed": seed, "seeds": seeds, "repeats": repeats,
                               "curiosity": curiosity, "protocol": protocol, "latency": latency,
                               "save_models": save_models or None}  # a flag turns saving on, never off
    if datasets is not None:
        changes.update(datasets=datasets, skip_unprepared=False)
    if data is not None:
        changes.update(data=data, skip_unprepared=False)
    if hparams_file is not None:
        # The resolved path: a row must say where its settings came from whatever the cwd was.
        changes.update(hparams={**spec.hparams, **load_hparams(hparams_file)},
                       hparams_source=str(Path(hparams_file).expanduser().resolve()))
    return spec.replace(**changes)


@dataclass(frozen=True, kw_only=True)
class Overrides:
    """The command line's choices for any sweep, as typed (None keeps the spec's value)."""

    datasets: str | None = None  # --dataset, comma-separated names
    data: Path | None = None  # --data, a ready table
    folds: str | None = None  # --folds, e.g. "1,3-5"
    seed: int | None = None  # --seed
    seeds: str | None = None  # --seeds, a count ("5") or seeds ("0,3,7")
    repeats: str | None = None  # --repeats, a count of split seeds ("3") or the split seeds
    curiosity: str | None = None  # --curiosity, "kl", "entropy" or "kl,entropy"
    protocol: str | None = None  # --protocol
    hparams: Path | None = None  # --hparams, a TOML of TrainConfig fields (e.g. a best.toml)
    save_models: bool = False  # --save-models
    latency: str | None = None  # --latency, in-sweep | isolated

    def apply(self, spec: SweepSpec) -> SweepSpec:
        """``spec`` with these choices (see :func:`apply_overrides`).

        Raises:
            ConfigError: a malformed value (naming its flag) or an invalid result.
        """
        datasets = parse_names(self.datasets, flag="--dataset", example="synth") if self.datasets else None
        repeats = None
        if self.repeats is not None:
            repeats = 0 if self.repeats.strip() == "0" else parse_seeds(self.repeats, flag="--repeats",
                                                                         example="3 or 0,4,9")
        if self.latency is not None:
            check_latency_mode(self.latency, "--latency")
        return apply_overrides(spec, datasets=datasets, data=self.data, save_models=self.save_models,
                               latency=self.latency,
                               folds=parse_folds(self.folds) if self.folds is not None else None,
                               seed=self.seed, protocol=self.protocol, hparams_file=self.hparams,
                               seeds=parse_seeds(self.seeds) if self.seeds is not None else None,
                               repeats=repeats,
                               curiosity=parse_names(self.curiosity, flag="--curiosity", example="kl,entropy")
                               if self.curiosity is not None else None)


def load_hparams(path: str | Path) -> dict[str, Any]:
    """TrainConfig overrides from a TOML file (``--hparams``).

    The file holds TrainConfig fields at the top level, or in an ``[hparams]`` table (other
    top-level tables, e.g. a tuning summary, are then ignored). Unknown fields raise.
    """
    raw = read_toml(Path(path))
    table = raw["hparams"] if isinstance(raw.get("hparams"), dict) else raw
    for mixture in (False, True):
        try:
            TrainConfig.defaults(mixture).replace(**table)
        except (ConfigError, TypeError, ValueError) as err:
            raise ConfigError(f"--hparams {path}: {err}") from None
    return dict(table)
