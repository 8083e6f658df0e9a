"""``qmoe data``: the built-in table, real datasets turned into tables, and what is prepared."""

from __future__ import annotations

import json
from contextlib import nullcontext
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

from qmoe.cli import options as opt
from qmoe.cli.console import stderr, stdout
from qmoe.errors import ConfigError

data_app = typer.Typer(help="Datasets and embedding tables.", no_args_is_help=True)


@data_app.command("synth")
def synth(
    seed: Annotated[int, typer.Option("--seed", help="Generator seed.")] = 0,
    rebuild: Annotated[bool, typer.Option("--rebuild", help="Build again even if cached.")] = False,
) -> None:
    """Build (or find cached) the built-in synth embedding table and print its path."""
    from qmoe.data.datasets import build_synth_table, synth_table_path
    from qmoe.data.synth import SynthConfig

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


def _folds(ids: list[int]) -> str:
    return f"{ids[0]}-{ids[-1]}" if ids == list(range(ids[0], ids[-1] + 1)) else ",".join(map(str, ids))


def _progress(quiet: bool):
    if quiet or not stderr.is_terminal:  # a transient bar shows nothing in a file or pipe but a blank line
        return nullcontext(None)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeRemainingColumn(), console=stderr, transient=True)


@data_app.command("prepare")
def prepare(
    dataset: Annotated[str, typer.Argument(help="esc50, urbansound8k or quinn.")],
    root: Annotated[Path, typer.Option("--root", help="The dataset folder as downloaded (e.g. ESC-50-master).")],
    backbone: Annotated[str, typer.Option("--backbone", help="melstats, efficientnet_b3 or mobilenetv3_large_100.")] = "melstats",
    weights: Annotated[Optional[Path], typer.Option("--weights", help="Weights of a timm backbone: pretrained (timm's pretrained loading via the Hugging Face cache; downloads only with HF_HUB_OFFLINE=0) or a local file (state dict .pt/.pth or .safetensors).")] = None,
    pretrained: Annotated[bool, typer.Option("--pretrained", help="Same as --weights pretrained.")] = False,
    random_init: Annotated[bool, typer.Option("--random-init", help="Untrained timm network (tests only; recorded in the table).")] = False,
    sample_rate: Annotated[int, typer.Option("--sample-rate", min=1000, help="Hz every clip is resampled to.")] = 16000,
    n_mels: Annotated[int, typer.Option("--n-mels", min=8, help="Mel bands.")] = 128,
    clip_seconds: Annotated[Optional[float], typer.Option("--clip-seconds", help="Pad/cut clips to this length (default: ESC-50 5, UrbanSound8K 4, Quinn the most common duration).")] = None,
    classes: Annotated[Optional[str], typer.Option("--classes", help="Keep these classes (comma-separated names; esc10 for ESC-10).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the table here (default: the cache, where --dataset NAME finds it).")] = None,
    address: opt.Address = None,
    in_process: Annotated[bool, typer.Option("--in-process", help="Embed in this process, without Ray (small folders, debugging).")] = False,
    on_bad_audio: Annotated[str, typer.Option("--on-bad-audio", help="fail: stop on an undecodable file; skip: leave it out and report it.")] = "fail",
    n_folds: Annotated[int, typer.Option("--n-folds", min=2, help="Folds to make for quinn (no official ones).")] = 5,
    fold_seed: Annotated[int, typer.Option("--fold-seed", help="Seed of quinn's folds.")] = 0,
    group_pattern: Annotated[Optional[str], typer.Option("--group-pattern", help="quinn: regex on the file stem whose group 'group' is the recording id (default: strip a trailing _N/-N).")] = None,
    quiet: opt.Quiet = False,
) -> None:
    """Turn a dataset folder into an embedding table (cached by file content and settings)."""
    from qmoe.data.adapters import ADAPTERS
    from qmoe.data.prepare import PrepareConfig, prepare_dataset

    if dataset == "synth":
        raise ConfigError("synth is built in and needs no --root: run `qmoe data synth`")
    ADAPTERS.get(dataset)
    if in_process and address:
        raise ConfigError("--in-process and --address exclude each other; pass one of them")
    if weights is not None and str(weights) == "pretrained":  # a file of that name: --weights ./pretrained
        weights, pretrained = None, True
    config = PrepareConfig(
        backbone=backbone, weights=weights, pretrained=pretrained, random_init=random_init, sample_rate=sample_rate,
        n_mels=n_mels, clip_seconds=clip_seconds,
        classes=tuple(c.strip() for c in classes.split(",")) if classes is not None else None,
        k=n_folds, seed=fold_seed, group_pattern=group_pattern, on_bad_audio=on_bad_audio,
    )
    runner = None
    if not in_process:
        from qmoe.sweeps.embed_actors import ray_runner

        runner = ray_runner(address)  # a bad address fails here, before the cache is written to
    with _progress(quiet) as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if bar is None:
                return
            if stage not in tasks:
                label = "hashing files" if stage == "hash" else f"embedding ({backbone})"
                tasks[stage] = bar.add_task(label, total=total)
            bar.update(tasks[stage], completed=done)

        result = prepare_dataset(dataset, root, config, out=out, runner=runner, progress=progress)
    t = result.table
    if result.skipped:
        first, message = result.skipped[0]
        stderr.print(f"skipped {len(result.skipped)} unreadable file(s) (first: {message}); "
                     "they are listed in the table's metadata")
    stdout.print(f"{result.path}  ({len(t)} clips, {t.n_classes} classes, folds {_folds(t.fold_ids)}, "
                 f"{t.dim}-d {backbone}; embedded {result.embedded}, cached {result.cached}, "
                 f"skipped {len(result.skipped)}; {result.seconds:.1f} s)")


@data_app.command("list")
def list_(json_out: opt.Json = False) -> None:
    """Known datasets, and the embedding tables prepared in the cache."""
    from qmoe.data.datasets import DATASETS, list_prepared, prepared_backbones

    prepared = list_prepared()
    if json_out:
        stdout.print_json(json.dumps({
            "datasets": [{"name": n, "classes": DATASETS.get(n).n_classes, "folds": DATASETS.get(n).folds,
                          "description": DATASETS.get(n).description,
                          "prepared": prepared_backbones(n)} for n in DATASETS],
            "tables": [{"path": str(p.path), "dataset": p.dataset, "backbone": p.backbone, "rows": p.rows,
                        "classes": p.classes, "folds": p.folds, "dim": p.dim, "random_init": p.random_init,
                        "created_at": p.created_at} for p in prepared],
        }))
        return
    known = Table(title="Datasets", header_style="bold")
    for col in ("name", "classes", "folds", "prepared", "description"):
        known.add_column(col)
    for name in DATASETS:
        spec = DATASETS.get(name)
        ready = "built in" if spec.builtin else (", ".join(prepared_backbones(name)) or "-")
        known.add_row(name, str(spec.n_classes), spec.folds, ready, spec.description)
    stdout.print(known)
    if not prepared:
        stdout.print("no prepared tables yet: run `qmoe data prepare NAME --root DIR`")
        return
    tables = Table(title=f"Prepared tables in {prepared[0].path.parent}", header_style="bold")
    for col in ("dataset", "backbone", "rows", "classes", "folds", "dim", "file"):
        tables.add_column(col, overflow="fold")
    for p in prepared:
        note = " (random init)" if p.random_init else ""
        tables.add_row(p.dataset, p.backbone + note, str(p.rows), str(p.classes), _folds(p.folds),
                       str(p.dim), p.path.name)
    stdout.print(tables)
