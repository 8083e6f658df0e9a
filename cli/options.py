"""Options shared by several commands, declared once as ``Annotated`` aliases."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

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
