"""The console: results on stdout, progress and notes on stderr (rich), and small rendering helpers."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Iterator, Mapping
from typing import Any

from rich.console import Console
from rich.table import Table

stdout = Console(highlight=False, soft_wrap=True)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def fmt(value: Any) -> str:
    """A cell: floats with 4 significant digits, None/NaN as '-'."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def record_table(row: Mapping[str, Any], title: str | None = None) -> Table:
    """Two columns (field, value); the JSON routing column becomes one line per expert."""
    table = Table(title=title, show_header=True, header_style="bold")
    table.add_column("field")
    table.add_column("value", overflow="fold")
    for key, value in row.items():
        if key == "routing" and value:
            for expert, stats in json.loads(value).items():
                cells = ", ".join(f"{k}={fmt(v)}" for k, v in stats.items())
                table.add_row(f"routing[{expert}]", cells)
        elif key != "hparams":
            table.add_row(key, fmt(value))
    return table


@contextlib.contextmanager
def continue_hint(command: str) -> Iterator[None]:
    """On Ctrl-C in the block, say on stderr how to continue (``command``), then let it end the command."""
    try:
        yield
    except KeyboardInterrupt:
        stderr.print(f"interrupted: finished trials are saved; continue with '{command}'")
        raise
