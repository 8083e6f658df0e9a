"""``qmoe data``: the built-in table and (later) prepared real datasets."""

from __future__ import annotations

from typing import Annotated

import typer

from cli.main import app
from cli.render import stderr, stdout
from qmoe.data.datasets import build_synth_table, synth_table_path
from qmoe.data.synth import SynthConfig

data_app = typer.Typer(help="Datasets and embedding tables.", no_args_is_help=True)
app.add_typer(data_app, name="data")


@data_app.command("synth")
def synth(
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even if cached.")] = False,
) -> None:
    """Build (or find cached) the built-in synth embedding table and print its path."""
    cfg = SynthConfig(seed=seed)
    path = synth_table_path(cfg=cfg)
    if rebuild:
        stderr.print(f"rebuilding {cfg.n_clips} synth clips ...")
        table = build_synth_table(path, cfg=cfg)
    else:
        from qmoe.data.table import load_table

        table = load_table(path)
    stdout.print(f"{path}  ({len(table)} clips, {table.n_classes} classes, "
                 f"folds {min(table.fold_ids)}-{max(table.fold_ids)}, {table.dim}-d)")
