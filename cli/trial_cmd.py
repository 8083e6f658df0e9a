"""``qmoe trial``: run one trial (no Ray) and print its record."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from qmoe.cli import options as opt
from qmoe.cli.console import record_table, stderr, stdout
from qmoe.errors import ConfigError


def trial(
    model: Annotated[str, typer.Option("--model", help="A quantizer (q4) or a mixture (bitnet,q4,q8).")] = "q4",
    fold: Annotated[int, typer.Option("--fold", help="The test fold.")] = 1,
    alpha: Annotated[float, typer.Option("--alpha", help="Curiosity strength (mixtures); 0 = plain routing.")] = 0.0,
    curiosity: Annotated[str, typer.Option("--curiosity", help="Curiosity variant (mixtures, alpha > 0): kl (the paper's Eq. 8) or entropy.")] = "kl",
    split_seed: Annotated[Optional[int], typer.Option("--split-seed", min=0, help="Reassign the folds with this seed first (repeated k-fold; datasets without official folds).")] = None,
    dataset: opt.Dataset = "synth",
    data: opt.Data = None,
    protocol: opt.Protocol = "clean",
    seed: opt.Seed = 0,
    energy: Annotated[bool, typer.Option("--energy/--no-energy", help="Measure energy with CodeCarbon.")] = True,
    threads: Annotated[int, typer.Option("--threads", help="Torch threads for training.", min=1)] = 1,
    save: Annotated[Optional[Path], typer.Option("--save", help="Keep the trained model in this folder (for qmoe export); off by default.")] = None,
    as_json: opt.Json = False,
) -> None:
    """Train and measure one model or mixture on one fold; print the results-table row."""
    experts = tuple(m.strip() for m in model.split(","))
    if any(not m for m in experts):
        raise ConfigError(f"--model {model!r} has an empty name: write e.g. q4 or bitnet,q4,q8")
    if energy:
        from qmoe.energy import EnergyMeter

        EnergyMeter.warm_up()  # CodeCarbon's one-time probe runs while torch and the table load

    from qmoe.data.datasets import resolve_table
    from qmoe.spec import TrialSpec
    from qmoe.export.saved import check_save_dir
    from qmoe.trial import check_spec, run_trial
    table = resolve_table(dataset if data is None else None, data)
    spec = TrialSpec(dataset=table.meta.get("dataset", dataset) if data is None else data.stem,
                     fold=fold, experts=experts, alpha=alpha, protocol=protocol, seed=seed,
                     split_seed=split_seed, curiosity=curiosity, measure_energy=energy)
    check_spec(spec, table)  # refuse bad input before any progress output
    if save is not None:
        check_save_dir(save)
    stderr.print(f"training {spec.model} on {table.source}, fold {fold} ...")
    result = run_trial(spec, table, threads=threads, save_dir=save)
    if save is not None:
        size = sum(f.stat().st_size for f in save.iterdir())
        stderr.print(f"saved the trained model in {save} ({size / 1e6:.2f} MB): qmoe export {save} --out model.qmoe")
    if as_json:
        print(result.record.to_json())
    else:
        stdout.print(record_table(result.record.to_row(), title=f"trial {spec.trial_key}"))
