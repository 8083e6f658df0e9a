"""The report as data: sections of tables, plots and notes, independent of the output format.

Every section is either computed (tables/plots) or carries a one-line ``reason`` saying why the
sweep's data cannot support it; :mod:`analysis.render` turns a :class:`Report` into markdown,
HTML or CSV files.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd


@dataclass(frozen=True, kw_only=True)
class Table:
    """One table: the raw numbers (written as CSV) and the same rows formatted for reading."""

    key: str  # file stem of the CSV, unique in a report, e.g. "summary"
    title: str
    data: pd.DataFrame  # raw values: means, stds, p-values as floats
    display: pd.DataFrame  # formatted strings ("0.819 ± 0.020", "<0.001", "**")
    notes: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class Plot:
    """One PNG figure."""

    key: str  # file stem, unique in a report
    title: str
    png: bytes


@dataclass(frozen=True, kw_only=True)
class Section:
    """A part of the report; ``reason`` is set (one line) when the data cannot support it."""

    key: str
    title: str
    intro: str = ""
    tables: tuple[Table, ...] = ()
    plots: tuple[Plot, ...] = ()
    notes: tuple[str, ...] = ()
    reason: str | None = None

    @classmethod
    def skipped(cls, key: str, title: str, reason: str) -> Section:
        """A section that cannot be computed here, with why."""
        return cls(key=key, title=title, reason=reason)


@dataclass(frozen=True, kw_only=True)
class Report:
    """The whole report of one results table."""

    title: str
    source: Path
    header: tuple[str, ...]  # lines about the table: rows, errors, datasets, protocols
    sections: tuple[Section, ...] = field(default_factory=tuple)

    def tables(self) -> list[Table]:
        """Every table of every section, in order."""
        return [t for s in self.sections for t in s.tables]

    def plots(self) -> list[Plot]:
        """Every plot of every section, in order."""
        return [p for s in self.sections for p in s.plots]

    def section(self, key: str) -> Section:
        """The section with this key (KeyError if absent)."""
        for s in self.sections:
            if s.key == key:
                return s
        raise KeyError(key)
