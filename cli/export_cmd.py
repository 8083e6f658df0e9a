"""``qmoe export`` (a saved trial -> one ``.qmoe`` file) and ``qmoe predict`` (run it, no torch).

``predict`` imports neither torch nor pandas, sklearn or ray: :mod:`qmoe.runtime` runs the
file with numpy and the compiled kernels, and reads the table with pyarrow. Its output goes
to stdout as tab-separated lines (or to ``--out`` as CSV or Parquet); ``--stats`` adds what
the process cost (file size, start-up, load, batch-1 latency, peak RSS) on stderr.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated, Optional

import typer

from qmoe.cli import options as opt


def export(
    source: Annotated[str, typer.Argument(metavar="DIR|TRIAL_KEY", help="A folder of qmoe trial --save DIR, or the key of a trial a sweep saved (STORAGE/*/models/TRIAL_KEY/).")],
    out: Annotated[Path, typer.Option("--out", help="The .qmoe file to write.")] = Path("model.qmoe"),
    storage: opt.Storage = opt.DEFAULT_STORAGE,
) -> None:
    """Write a trained trial's deployed model as one .qmoe file (no pickle), for qmoe predict."""
    from qmoe.cli.console import stderr
    from qmoe.export.lower import export_trial

    result = export_trial(source, out, storage=storage)
    stderr.print(f"exported trial {result.trial_key} ({result.model}) from {result.source}")
    print(f"{result.path}  ({result.size_bytes / 1000:.1f} KB, format {result.format_version}; "
          f"qmoe predict {result.path} --data TABLE.parquet)")


def predict(
    model: Annotated[Path, typer.Argument(metavar="MODEL.qmoe", help="A file written by qmoe export.")],
    data: Annotated[Path, typer.Option("--data", help="An embedding table (.parquet) with clip_id and e0..e{D-1}.")],
    fold: Annotated[Optional[int], typer.Option("--fold", help="Only the rows of this fold (e.g. the trial's test fold).")] = None,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write the predictions here (.csv or .parquet) instead of stdout.")] = None,
    stats: Annotated[bool, typer.Option("--stats", help="Print file size, start-up, load time, batch-1 latency and peak RSS on stderr.")] = False,
    kernels: Annotated[str, typer.Option("--kernels", help="auto: compiled ahead of time (numpy only; built once per machine), else numba's; aot or jit: only that one.")] = "auto",
) -> None:
    """Predict every row of a table with an exported model, without torch."""
    from qmoe.runtime.predict import check_out, predict_file, write_predictions

    if out is not None:
        check_out(out)
    result = predict_file(model, data, folds=None if fold is None else (fold,), stats=stats, kernels=kernels,
                          announce=lambda line: print(f"qmoe predict: {line}", file=sys.stderr))
    if out is not None:
        write_predictions(result.table, out)
        print(f"{out}  ({result.table.num_rows} predictions)")
    else:
        names = result.table.column_names
        cols = [result.table.column(n).to_pylist() for n in names]
        lines = ["\t".join(names)] + ["\t".join(str(c[i]) for c in cols) for i in range(result.table.num_rows)]
        sys.stdout.write("\n".join(lines) + "\n")
    if result.accuracy is not None:
        print(f"accuracy {result.accuracy:.4f} on {result.table.num_rows} labelled rows", file=sys.stderr)
    if result.stats is not None:
        print(result.stats.render(), file=sys.stderr)
