"""Options shared by several commands, declared once: ``Annotated`` aliases, and the groups of
them that several commands take (:class:`RunArgs`, :class:`SweepArgs`) added by :func:`with_args`.
"""

from __future__ import annotations

import functools
import inspect
import logging
import typing
from collections.abc import Callable
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer

if TYPE_CHECKING:
    from qmoe.sweeps.engine import RunOptions
    from qmoe.sweeps.overrides import Overrides

Dataset = Annotated[str, typer.Option("--dataset", help="Dataset name (synth, esc50, urbansound8k, quinn).")]
Data = Annotated[Optional[Path], typer.Option("--data", help="A ready embedding table (.parquet); overrides --dataset.")]
Seed = Annotated[int, typer.Option("--seed", help="Seed; each trial derives its own from it and its key.")]
Protocol = Annotated[str, typer.Option("--protocol", help="clean: validation from training folds; paper: the published protocol (test fold as validation).")]
Json = Annotated[bool, typer.Option("--json", help="Print the result as one JSON object.")]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress output on stderr.")]
Storage = Annotated[Path, typer.Option("--storage", envvar="QMOE_STORAGE", help="Folder holding the sweeps (env QMOE_STORAGE).")]
DEFAULT_STORAGE = Path("qmoe-runs")

# -- sweeps (qmoe sweep ..., resume, status) ---------------------------------------------------
SweepDataset = Annotated[Optional[str], typer.Option("--dataset", help="Dataset(s), comma-separated (synth, esc50, urbansound8k, quinn); default: the sweep's.")]
Folds = Annotated[Optional[str], typer.Option("--folds", help="Test folds, e.g. 1,3-5; default: every fold of the dataset.")]
SweepName = Annotated[Optional[str], typer.Option("--name", help="Name of the sweep (its folder under --storage); default: KIND-DATE-TIME.")]
Address = Annotated[Optional[str], typer.Option("--address", help="Ray to run on: auto (the cluster this machine joined), HOST:PORT, or ray://HOST:PORT; default: an embedded local Ray.")]
CpusPerTrial = Annotated[int, typer.Option("--cpus-per-trial", min=1, help="CPUs (and torch threads) per trial.")]
MaxConcurrent = Annotated[Optional[int], typer.Option("--max-concurrent", min=1, help="At most this many trials at once; default: as many as the CPUs allow.")]
MaxFailures = Annotated[int, typer.Option("--max-failures", min=0, help="Ray retries of a failing trial before it is recorded as an error.")]
SweepSeed = Annotated[Optional[int], typer.Option("--seed", help="Sweep seed (each trial derives its own); default: the sweep's (0).")]
Seeds = Annotated[Optional[str], typer.Option("--seeds", help="Training seeds per configuration and fold: a count N (the sweep seed and the N-1 next) or a list, e.g. 0,3,7; default 1.")]
Repeats = Annotated[Optional[str], typer.Option("--repeats", help="Repeated k-fold: R seeded fold reassignments (split seeds from the sweep seed) or a list of split seeds; only for datasets without official folds (quinn, synth).")]
Curiosity = Annotated[Optional[str], typer.Option("--curiosity", help="Curiosity variant of the mixtures with alpha > 0: kl (the paper's Eq. 8), entropy, or kl,entropy; default kl.")]
SaveModels = Annotated[bool, typer.Option("--save-models", help="Keep each trial's trained model in STORAGE/NAME/models/TRIAL_KEY/ for qmoe export (2-2.4 MB per synth trial, 4.9-6.1 MB ESC-50-sized); a resume keeps doing so.")]
Latency = Annotated[Optional[str], typer.Option("--latency", help="in-sweep: each trial times its model as it runs (pinned to one core); isolated: after the trials, time each saved model alone in the driver, one at a time (implies --save-models). Default: the spec's (in-sweep).")]
SweepProtocol = Annotated[Optional[str], typer.Option("--protocol", help="clean (validation from training folds) or paper (test fold as validation); default: the sweep's.")]
Hparams = Annotated[Optional[Path], typer.Option("--hparams", help="TOML of training hyper-parameters (TrainConfig fields), e.g. from qmoe tune.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Print the trials and their count; run nothing.")]

# -- tuning (qmoe tune) -------------------------------------------------------------------------
Model = Annotated[Optional[str], typer.Option("--model", help="The model to tune: a quantizer (q4) or a mixture (bitnet,q4,q8).")]
OneDataset = Annotated[Optional[str], typer.Option("--dataset", help="Dataset name (synth, esc50, urbansound8k, quinn); default synth.")]
Trials = Annotated[Optional[int], typer.Option("--trials", help="Trials to finish (the budget); default 40. With --resume: a new budget (default: the run's).")]
Space = Annotated[Optional[str], typer.Option("--space", help="Search space: default, or a SPACE.toml with params, fixed and scheduler tables.")]
TuneSeed = Annotated[Optional[int], typer.Option("--seed", help="Seed of the sampler and of every fold's split and training; default 0.")]
Resume = Annotated[Optional[str], typer.Option("--resume", metavar="NAME", help="Continue tuning run NAME up to its budget (never beyond).")]


def verbose() -> bool:
    """Whether ``qmoe --verbose`` was given (it sets the root logger to INFO)."""
    return logging.getLogger().getEffectiveLevel() <= logging.INFO


@dataclass(frozen=True)
class RunArgs:
    """The options of every command that runs trials on Ray (``qmoe sweep ...``, ``resume``, ``tune``)."""

    storage: Storage = DEFAULT_STORAGE
    address: Address = None
    cpus_per_trial: CpusPerTrial = 1
    max_concurrent: MaxConcurrent = None
    max_failures: MaxFailures = 2
    quiet: Quiet = False

    def run_options(self) -> RunOptions:
        """The library's :class:`~qmoe.sweeps.engine.RunOptions` of these flags."""
        from qmoe.sweeps.engine import RunOptions

        return RunOptions(storage=self.storage, address=self.address, cpus_per_trial=self.cpus_per_trial,
                          max_concurrent=self.max_concurrent, max_failures=self.max_failures, quiet=self.quiet,
                          verbose=verbose())


@dataclass(frozen=True)
class SweepArgs(RunArgs):
    """The options of every ``qmoe sweep`` command: the run options and the spec's overrides."""

    dataset: SweepDataset = None
    data: Data = None
    folds: Folds = None
    name: SweepName = None
    seed: SweepSeed = None
    seeds: Seeds = None
    repeats: Repeats = None
    curiosity: Curiosity = None
    protocol: SweepProtocol = None
    hparams: Hparams = None
    save_models: SaveModels = False
    latency: Latency = None
    dry_run: DryRun = False

    def overrides(self) -> Overrides:
        """The library's :class:`~qmoe.sweeps.overrides.Overrides` of these flags."""
        from qmoe.sweeps.overrides import Overrides

        return Overrides(datasets=self.dataset, data=self.data, folds=self.folds, seed=self.seed,
                         seeds=self.seeds, repeats=self.repeats, curiosity=self.curiosity,
                         protocol=self.protocol, hparams=self.hparams, save_models=self.save_models,
                         latency=self.latency)


def with_args(cls: type) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Add the options of dataclass ``cls`` to a command; it receives them as ``args=cls(...)``."""
    hints = typing.get_type_hints(cls, include_extras=True)  # the Annotated options

    def decorate(fn: Callable[..., Any]) -> Callable[..., Any]:
        shared = [inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=f.default,
                                    annotation=hints[f.name]) for f in fields(cls)]
        own = [p for p in inspect.signature(fn, eval_str=True).parameters.values() if p.name != "args"]

        @functools.wraps(fn)
        def command(**kwargs: Any) -> Any:
            args = cls(**{f.name: kwargs.pop(f.name) for f in fields(cls)})
            return fn(args=args, **kwargs)

        command.__signature__ = inspect.Signature(own + shared)  # type: ignore[attr-defined]
        return command

    return decorate
