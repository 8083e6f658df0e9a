"""``qmoe sweep alpha|bits|moe|paper|run``, ``qmoe resume`` and ``qmoe status``.

Each ``qmoe sweep`` command turns its own flags into a sweep spec with one library call and
hands it to :func:`_launch`; the options every sweep shares are :class:`~qmoe.cli.options.SweepArgs`.
The sweep machinery (pandas, Ray) is imported by the commands that run, not when the CLI starts.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Optional

import typer
from rich import box
from rich.table import Table

from qmoe.cli import options as opt
from qmoe.cli.console import continue_hint, fmt, stderr, stdout
from qmoe.cli.options import RunArgs, SweepArgs, with_args
from qmoe.sweeps.builtin import alpha_spec, bits_spec, moe_spec, paper_spec
from qmoe.sweeps.grid import SweepSpec, load_spec
from qmoe.sweeps.parse import parse_floats, parse_ints, parse_names

sweep_app = typer.Typer(help="Run a grid of trials as a Ray Tune sweep (results in STORAGE/NAME).",
                        no_args_is_help=True)

Values = Annotated[Optional[str], typer.Option("--values", help="Comma-separated values, e.g. 0.02,0.2,0.3.")]


def _launch(spec: SweepSpec, args: SweepArgs) -> None:
    """Plan ``spec`` with the shared options, then print the trials (``--dry-run``) or run them.

    The command's flags, the sweep's name and its storage are checked before Ray starts, so
    that such a mistake is refused at once rather than after an embedded Ray came up and went
    down again (~5 s). Ray then starts while the tables load and the grid is planned.
    """
    from qmoe.sweeps.cluster import early_ray, worker_env
    from qmoe.sweeps.plan import check_command

    options = args.run_options()
    spec, name = check_command(spec, args.overrides(), name=args.name, storage=args.storage, dry_run=args.dry_run)
    with early_ray(options.address, env=worker_env(options.cpus_per_trial), verbose=options.verbose,
                   enabled=not args.dry_run):
        from qmoe.sweeps.plan import plan_sweep
        from qmoe.sweeps.runner import run_sweep

        plan = plan_sweep(spec)
        for dataset, why in plan.skipped.items():
            stderr.print(f"note: leaving out {dataset}: {why}")
        if args.dry_run:
            stdout.print(_trials_table(plan.trials, title=f"{plan.spec.kind}: {plan.spec.description}"))
            print(f"{len(plan.trials)} trials")
            return
        with continue_hint(f"qmoe resume {name}"):
            outcome = run_sweep(plan, name=name, options=options)
    _report(outcome)


@sweep_app.command("alpha")
@with_args(SweepArgs)
def alpha(values: Values = None,
          experts: Annotated[Optional[str], typer.Option("--experts", help="The mixture's quantizers; default bitnet,q4,q8.")] = None,
          no_baseline: Annotated[bool, typer.Option("--no-baseline", help="Leave out alpha = 0 (plain routing).")] = False,
          *, args: SweepArgs) -> None:
    """Curiosity strength alpha of one mixture (default 0.02,0.2,0.3 plus the alpha = 0 baseline)."""
    alphas = parse_floats(values) if values is not None else None
    names = parse_names(experts, flag="--experts", example="bitnet,q4,q8") if experts is not None else None
    _launch(alpha_spec(alphas, names, baseline=not no_baseline), args)


@sweep_app.command("bits")
@with_args(SweepArgs)
def bits(values: Values = None, *, args: SweepArgs) -> None:
    """Single models at each bit-width (default 1,2,4,8,16) plus fp32, bitnet and ptq8 references."""
    widths = parse_ints(values, example="1,2,4,8,16") if values is not None else None
    _launch(bits_spec(widths), args)


@sweep_app.command("moe")
@with_args(SweepArgs)
def moe(values: Values = None, *, args: SweepArgs) -> None:
    """The paper's mixtures, each with plain routing and curiosity routing (--values: alphas, default 0.3)."""
    alphas = parse_floats(values, example="0.2,0.3") if values is not None else None
    _launch(moe_spec(alphas), args)


@sweep_app.command("paper")
@with_args(SweepArgs)
def paper(*, args: SweepArgs) -> None:
    """The whole Table 1 grid on every prepared dataset (esc50, quinn, urbansound8k), all folds."""
    _launch(paper_spec(), args)


@sweep_app.command("run")
@with_args(SweepArgs)
def run(spec_file: Annotated[Path, typer.Argument(help="A sweep spec (TOML); see sweeps/specs/ for examples.")],
        *, args: SweepArgs) -> None:
    """Any grid written as a spec file."""
    _launch(load_spec(spec_file), args)


@with_args(RunArgs)
def resume(name: Annotated[str, typer.Argument(help="The sweep to finish.")], *, args: RunArgs) -> None:
    """Finish a sweep: run its errored and unfinished trials; finished ones are never re-run."""
    from qmoe.sweeps.cluster import early_ray, worker_env
    from qmoe.sweeps.store import SweepStore

    options = args.run_options()
    # With a trial left to run, an embedded Ray starts while the trial function and the
    # tables load (a missing sweep or a damaged table fails here, as the resume would).
    store = SweepStore(options.storage, name)
    left = not store.is_locked() and bool(store.unfinished())
    with early_ray(options.address, env=worker_env(options.cpus_per_trial), verbose=options.verbose,
                   enabled=left):
        from qmoe.sweeps.runner import resume_sweep

        outcome = resume_sweep(name, options=options)
    if outcome.ran == 0 and outcome.isolated is None:
        stderr.print(f"sweep {name}: nothing to do, all {outcome.total} trials have an ok row")
    _report(outcome)


def status(name: Annotated[str, typer.Argument(help="The sweep to describe.")],
           storage: opt.Storage = opt.DEFAULT_STORAGE,
           address: Annotated[Optional[str], typer.Option("--address", help="Accepted for symmetry with sweep/resume; status reads the results table only.")] = None) -> None:
    """Counts of a sweep's trials by state, each error, and the per-model summary."""
    import pandas as pd

    from qmoe.sweeps.status import sweep_status

    del address  # the results table is on the storage: no Ray needed
    st = sweep_status(name, storage)
    counts = Table(title=f"sweep {st.name} ({st.kind}) — {st.path}")
    for col in ("trials", "ok", "error", "pending", "running now"):
        counts.add_column(col)
    counts.add_row(str(st.total), str(st.ok), str(st.error), str(st.pending), "yes" if st.running else "no")
    stdout.print(counts)
    if len(st.errors):
        errors = Table(title="errored trials (re-run by qmoe resume)")
        for col in ("trial_key", "model", "dataset", "fold", "alpha", "error"):
            errors.add_column(col, overflow="fold")
        for r in st.errors.itertuples():
            errors.add_row(r.trial_key, r.paper_name, r.dataset, str(r.fold), fmt(r.alpha), r.error)
        stdout.print(errors)
    if len(st.by_replicate):
        replicates = Table(title="by replicate (training seed, split seed)", box=box.SIMPLE_HEAD, pad_edge=False)
        for col in ("seed", "split seed", "trials", "ok", "error", "pending"):
            replicates.add_column(col)
        for r in st.by_replicate.itertuples():
            split = "-" if pd.isna(r.split_seed) else str(int(r.split_seed))
            replicates.add_row(str(r.seed), split, str(r.trials), str(r.ok), str(r.error), str(r.pending))
        stdout.print(replicates)
    if st.ok:
        stdout.print(_summary_table(st.results))


# -- rendering -------------------------------------------------------------------------------

def _trials_table(trials: Any, title: str) -> Table:
    from qmoe.spec import paper_name

    table = Table(title=title)
    seeds = len({t.seed for t in trials}) > 1
    splits = any(t.split_seed is not None for t in trials)
    variants = any(t.curiosity != "kl" for t in trials)
    columns = ["#", "trial_key", "dataset", "fold", "model", "experts", "alpha"]
    columns += ["curiosity"] * variants + ["seed"] * seeds + ["split seed"] * splits
    for col in columns:
        table.add_column(col)
    for i, t in enumerate(trials, 1):
        extra = [t.curiosity] * variants + [str(t.seed)] * seeds + [str(t.split_seed)] * splits
        table.add_row(str(i), t.trial_key, t.dataset, str(t.fold), paper_name(t.experts, t.alpha),
                      t.model, fmt(t.alpha), *extra)
    return table


def _summary_table(results: Any) -> Table:
    import pandas as pd

    from qmoe.sweeps.status import summary_by_config

    summary = summary_by_config(results)
    seeds = bool(len(summary)) and bool(summary["seeds"].fillna(1).max() > 1)
    variants = bool(summary["curiosity"].nunique() > 1)
    title = "summary: macro-F1 mean ± std over the folds that finished" + (" (each fold: the mean of its seeds)"
                                                                             if seeds else "")
    table = Table(title=title, box=box.SIMPLE_HEAD, pad_edge=False)
    columns = ["dataset", "model", "α"] + ["curiosity"] * variants + ["trials"] + ["seeds"] * seeds
    for col in columns + ["macro-F1", "p50 µs", "KB"]:
        table.add_column(col, no_wrap=True)
    for r in summary.itertuples():
        f1 = "-" if pd.isna(r.f1_macro_mean) else f"{r.f1_macro_mean:.3f} ± {r.f1_macro_std:.3f}"
        trials = f"{r.trials_ok}" + (f" +{r.trials_error} err" if r.trials_error else "")
        extra = [r.curiosity] * variants + [trials] + [fmt(r.seeds)] * seeds
        table.add_row(r.dataset, r.paper_name, fmt(r.alpha), *extra, f1, fmt(r.latency_p50_us), fmt(r.size_kb))
    return table


def _report(outcome: Any) -> None:
    """The summary table on stdout; timings and what is left to do on stderr."""
    from qmoe.layout import RESULTS

    stdout.print(_summary_table(outcome.results))
    line = f"sweep {outcome.name}: {outcome.ok} ok, {outcome.errors} errors, {outcome.pending} pending"
    if outcome.ran:
        line += f"; ran {outcome.ran} trials in {outcome.wall_seconds:.1f} s"
        if outcome.first_trial_seconds is not None:
            line += f", first trial running {outcome.first_trial_seconds:.1f} s after the command started"
        if outcome.efficiency is not None:
            line += (f", efficiency {outcome.efficiency:.2f} on {outcome.slots} slots"
                     f" ({outcome.nodes} node{'s' if outcome.nodes != 1 else ''})")
    stderr.print(line)
    if outcome.isolated is not None:
        stderr.print(_isolated_line(outcome.isolated))
    stderr.print(f"results: {outcome.path / RESULTS}")
    if outcome.errors or outcome.pending:
        what = "the errors" if outcome.errors else "what is pending"
        stderr.print(f"see 'qmoe status {outcome.name}' for {what}; 'qmoe resume {outcome.name}' "
                     "re-runs the trials without an ok row")
        raise typer.Exit(1)


def _isolated_line(iso: Any) -> str:
    """One line on the isolated latency phase (:class:`qmoe.sweeps.isolated.Isolated`)."""
    core = f" on core {iso.cpu}" if iso.cpu is not None else ""
    line = f"isolated latency: timed {iso.timed} saved model(s) alone{core} in {iso.seconds:.1f} s"
    line += f" ({iso.already} timed before)" if iso.already else ""
    if iso.missing:
        line += f"; {len(iso.missing)} without a saved model keep their in-sweep latency"
    if iso.failed:
        key, why = next(iter(iso.failed.items()))
        line += f"; {len(iso.failed)} could not be timed (first: {key}: {why}), 'qmoe resume' tries again"
    return line
