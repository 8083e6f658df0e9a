"""Fixtures of the analysis tests: results tables written to a temporary sweep folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from analysis_fakes import frame, paper_rows, write_routing


@pytest.fixture
def write_table(tmp_path: Path) -> Callable[..., Path]:
    """Write rows as ``tmp/<name>/results.parquet`` (with routing files if asked); returns the path."""
    def write(rows: list[dict], *, name: str = "sweep", routing: bool = False) -> Path:
        folder = tmp_path / name
        folder.mkdir(parents=True, exist_ok=True)
        frame(rows).to_parquet(folder / "results.parquet")
        if routing:
            write_routing(folder / "routing", rows)
        return folder / "results.parquet"
    return write


@pytest.fixture
def paper_table(write_table) -> Path:
    """A full, fixed table: 7 single models + one mixture at 4 alphas, 5 folds, routing files."""
    return write_table(paper_rows(), routing=True)
