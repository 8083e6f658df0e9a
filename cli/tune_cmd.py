"""``qmoe tune``: Optuna (TPE) hyper-parameter search in Ray Tune, and ``qmoe tune --resume NAME``."""

from __future__ import annotations

import json
import logging
from typing import Any

import typer
from rich import box
from rich.table import Table

from cli import options as opt
from cli.main import app
from cli.render import fmt, stderr, stdout
from qmoe.errors import ConfigError
from sweeps.parse import parse_folds, parse_names

DEFAULT_TRIALS = 40
SHOWN = 10  # trials listed, best first


@app.command()
def tune(model: opt.Model = None, dataset: opt.OneDataset = None, data: opt.Data = None,
         folds: opt.Folds = None, trials: opt.Trials = None, space: opt.Space = None, seed: opt.TuneSeed = None,
         resume: opt.Resume = None, name: opt.SweepName = None, storage: opt.Storage = opt.DEFAULT_STORAGE,
         address: opt.Address = None, cpus_per_trial: opt.CpusPerTrial = 1,
         max_concurrent: opt.MaxConcurrent = None, max_failures: opt.MaxFailures = 2,
         quiet: opt.Quiet = False) -> None:
    """Search training hyper-parameters on the mean validation macro-F1 of the folds (test folds
    never seen); the best settings go to STORAGE/NAME/best.toml, for 'qmoe sweep ... --hparams'."""
    from sweeps.runner import RunOptions
    from sweeps.space import resolve_space
    from sweeps.tune import TuneSpec, check_trials, default_tune_name, resume_tune, run_tune

    options = RunOptions(storage=storage, address=address, cpus_per_trial=cpus_per_trial,
                         max_concurrent=max_concurrent, max_failures=max_failures, quiet=quiet,
                         verbose=logging.getLogger().getEffectiveLevel() <= logging.INFO)
    if trials is not None:
        check_trials(trials)
    if resume is not None:
        given = [flag for flag, value in (("--model", model), ("--dataset", dataset), ("--data", data),
                                          ("--folds", folds), ("--space", space), ("--seed", seed),
                                          ("--name", name)) if value is not None]
        if given:
            raise ConfigError(f"--resume {resume} continues the run with its own settings: leave out "
                              f"{', '.join(given)} (only --trials and the run options may change)")
        name = resume
        call = lambda: resume_tune(resume, trials=trials, options=options)  # noqa: E731
    else:
        if model is None:
            raise ConfigError("--model is required: the model to tune, e.g. --model q4 (or --resume NAME)")
        experts = parse_names(model, flag="--model", example="bitnet,q4,q8")
        spec = TuneSpec(experts=experts, dataset=dataset or "synth", data=data,
                        folds=parse_folds(folds) if folds is not None else None,
                        trials=DEFAULT_TRIALS if trials is None else trials,
                        space=resolve_space(space, len(experts)), seed=0 if seed is None else seed)
        name = name or default_tune_name(spec.experts)
        call = lambda: run_tune(spec, name=name, options=options)  # noqa: E731
    try:
        outcome = call()
    except KeyboardInterrupt:
        stderr.print(f"interrupted: finished trials are saved; continue with 'qmoe tune --resume {name}'")
        raise
    _report(outcome)


def _short(value: object) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _report(outcome: Any) -> None:
    """The best trials and best-vs-default on stdout; counts, timings and paths on stderr."""
    rows = outcome.rows[outcome.rows["objective"].notna()].sort_values(["objective", "trial"],
                                                                       ascending=[False, True])
    table = Table(title=f"tuning {outcome.name}: trials by mean validation macro-F1 (best {SHOWN})",
                  box=box.SIMPLE_HEAD, pad_edge=False)
    for col in ("trial", "status", "objective", "per fold", "epochs", "settings"):
        table.add_column(col, overflow="fold")
    for r in rows.head(SHOWN).itertuples():
        per_fold = " ".join(f"{v:.3f}" for v in json.loads(r.fold_f1 or "{}").values())
        settings = " ".join(f"{k}={_short(v)}" for k, v in json.loads(r.params or "{}").items())
        label = f"{r.trial}" + (" (default)" if r.is_default else "")
        table.add_row(label, r.status, f"{r.objective:.4f}", per_fold, fmt(r.epochs), settings)
    stdout.print(table)
    if outcome.best is not None:
        line = f"best: trial {outcome.best['trial']}, mean validation macro-F1 {outcome.best['objective']:.4f}"
        if outcome.default is not None:
            line += (f"; default settings (trial {outcome.default['trial']}): {outcome.default['objective']:.4f}"
                     f" ({outcome.best['objective'] - outcome.default['objective']:+.4f})")
        print(line)
    done = f"tune {outcome.name}: {outcome.finished}/{outcome.requested} trials finished"
    if outcome.interrupted:
        done += f"; {outcome.interrupted} trial(s) of the killed run were cut short (not counted)"
    if outcome.ran:
        done += f"; ran {outcome.ran} in {outcome.wall_seconds:.1f} s on {outcome.slots} slot(s)"
    elif outcome.finished >= outcome.requested:
        done += "; nothing left to run"
    stderr.print(done)
    if outcome.best_path is not None:
        stderr.print(f"best settings: {outcome.best_path} (use: qmoe sweep ... --hparams {outcome.best_path})")
    stderr.print(f"tuning table: {outcome.path / 'tuning.parquet'}; report: qmoe report {outcome.name}")
    if outcome.finished < outcome.requested:
        stderr.print(f"{outcome.requested - outcome.finished} trial(s) missing: 'qmoe tune --resume {outcome.name}'")
        raise typer.Exit(1)
