"""``qmoe report``: a sweep's results table -> tables, significance tests and plots."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer

from qmoe.cli import options as opt
from qmoe.cli.console import stderr


def report(
    source: Annotated[str, typer.Argument(metavar="NAME|RESULTS_PATH", help="A sweep name under --storage, or a results.parquet.")],
    storage: opt.Storage = opt.DEFAULT_STORAGE,
    out: Annotated[Optional[Path], typer.Option("--out", help="Write report.md, report.html (plots embedded) and one CSV per table here.")] = None,
    fmt: Annotated[Optional[str], typer.Option("--format", help="md | html | csv | all (default: md on stdout, all with --out).")] = None,
    reference: Annotated[Optional[list[str]], typer.Option("--reference", help="Reference model: a single model (default fp32) and/or a mixture whose α=0 all mixtures are compared with.")] = None,
    correction: Annotated[str, typer.Option("--correction", help="Multiple-comparison correction: bonferroni | holm.")] = "bonferroni",
    margin: Annotated[float, typer.Option("--margin", help="Equivalence margin in F1 for '≈' claims (TOST); 0.01 = one F1 point.")] = 0.01,
) -> None:
    """Per-model means ± std over folds, the paper's tables, significance tests, plots and claims."""
    from qmoe.analysis.render import Format, parse_formats, to_html, to_markdown, write_report
    from qmoe.analysis.report import build_report

    formats = parse_formats(fmt, out)
    needs_plots = out is not None or Format.HTML in formats
    result = build_report(source, storage=storage, references=reference, correction=correction, plots=needs_plots,
                          margin=margin)
    if out is None:
        print(to_html(result) if formats == (Format.HTML,) else to_markdown(result), end="")
        return
    written = write_report(result, out, formats)
    stderr.print(f"wrote {len(written)} file(s) to {out}")
    for path in written:
        print(path)
