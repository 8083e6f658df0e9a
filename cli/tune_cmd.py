"""``qmoe tune``: Optuna (TPE) hyper-parameter search in Ray Tune, and ``qmoe tune --resume NAME``."""

from __future__ import annotations

import json
from typing import Any

import typer
from rich import box
from rich.table import Table

from qmoe.cli import options as opt
from qmoe.cli.console import continue_hint, fmt, stderr, stdout
from qmoe.cli.options import RunArgs, with_args

SHOWN = 10  # trials listed, best first


@with_args(RunArgs)
def tune(model: opt.Model = None, dataset: opt.OneDataset = None, data: opt.Data = None,
         folds: opt.Folds = None, trials: opt.Trials = None, space: opt.Space = None, seed: opt.TuneSeed = None,
         resume: opt.Resume = None, name: opt.SweepName = None, *, args: RunArgs) -> None:
    """Search training hyper-parameters on the mean validation macro-F1 of the folds (test folds
    never seen); the best settings go to STORAGE/NAME/best.toml, for 'qmoe sweep ... --hparams'."""
    from qmoe.sweeps.tune.tune_runner import TuneRequest

    request = TuneRequest(model=model, dataset=dataset, data=data, folds=folds, trials=trials, space=space,
                          seed=seed, resume=resume, name=name)
    with continue_hint(f"qmoe tune --resume {request.name}"):
        outcome = request.run(args.run_options())
    _report(outcome)


def _short(value: object) -> str:
    if isinstance(value, list):
        return "x".join(str(v) for v in value)
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _report(outcome: Any) -> None:
    """The best trials and best-vs-default on stdout; counts, timings and paths on stderr."""
    from qmoe.layout import TUNING

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
    stderr.print(f"tuning table: {outcome.path / TUNING}; report: qmoe report {outcome.name}")
    if outcome.finished < outcome.requested:
        stderr.print(f"{outcome.requested - outcome.finished} trial(s) missing: 'qmoe tune --resume {outcome.name}'")
        raise typer.Exit(1)
