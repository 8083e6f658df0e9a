"""A :class:`Report` as markdown, one self-contained HTML file, or CSV files; and writing them.

``write_report`` writes every file into a temporary folder next to ``--out`` and then moves it
into place, so an interrupted run never leaves half a report.
"""

from __future__ import annotations

import base64
import contextlib
import html
import json
import os
import shutil
import tempfile
from collections.abc import Iterable
from enum import Enum
from pathlib import Path

import pandas as pd

from qmoe.analysis.document import Report, Section
from qmoe.errors import ConfigError

MANIFEST = ".qmoe-report.json"  # files of the last report written to a folder (stale ones are removed)


class Format(str, Enum):
    """What ``--format`` may ask for."""

    MD = "md"
    HTML = "html"
    CSV = "csv"
    ALL = "all"


def parse_formats(value: str | None, out: Path | None) -> tuple[Format, ...]:
    """``--format`` -> the formats to produce (default: md on stdout, everything with ``--out``).

    Raises:
        ConfigError: an unknown format, or several files asked for without ``--out``.
    """
    if value is None:
        return (Format.MD,) if out is None else (Format.MD, Format.HTML, Format.CSV)
    try:
        fmt = Format(str(value).strip().lower())
    except ValueError:
        raise ConfigError(f"--format {value!r} is unknown; known: {', '.join(f.value for f in Format)}") from None
    if out is None and fmt in (Format.CSV, Format.ALL):
        raise ConfigError(f"--format {fmt.value} writes one file per table: give --out DIR")
    return (Format.MD, Format.HTML, Format.CSV) if fmt is Format.ALL else (fmt,)


# -- markdown ---------------------------------------------------------------------------------
def md_text(value: object) -> str:
    """Text as markdown shows it literally: HTML escaped (as report.html does), backslashes and
    ``$`` (math in many renderers) escaped, so that a name such as ``<b>$x$</b>`` reads as written."""
    return html.escape(str(value), quote=False).replace("\\", "\\\\").replace("$", "\\$")


def _cell(value: object) -> str:
    return " ".join(md_text(value).split()).replace("|", "\\|")


def markdown_table(df: pd.DataFrame) -> str:
    """A GitHub pipe table of a display frame (strings)."""
    if df.empty:
        return "_(no rows)_"
    head = "| " + " | ".join(_cell(c) for c in df.columns) + " |"
    rule = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(_cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, rule, *body])


def _md_section(number: int, s: Section, plot_dir: str | None) -> list[str]:
    out = [f"## {number}. {md_text(s.title)}", ""]
    if s.reason:
        return out + [f"_{md_text(s.reason)}_", ""]
    if s.intro:
        out += [md_text(s.intro), ""]
    for t in s.tables:
        out += [f"**{md_text(t.title)}**", "", markdown_table(t.display), ""]
        out += [f"- {md_text(n)}" for n in t.notes] + ([""] if t.notes else [])
    for p in s.plots:
        title = md_text(p.title).replace("[", "\\[").replace("]", "\\]")  # alt text must not close early
        out += [f"![{title}]({plot_dir}/{p.key}.png)" if plot_dir else f"_plot: {title} (in the HTML report)_", ""]
    if s.notes:
        out += [f"- {md_text(n)}" for n in s.notes] + [""]
    return out


def to_markdown(report: Report, *, plot_dir: str | None = None) -> str:
    """The report as markdown; figures are linked from ``plot_dir`` when given, else only named."""
    lines = [f"# {md_text(report.title)}", ""] + [f"- {md_text(h)}" for h in report.header] + [""]
    for i, s in enumerate(report.sections):
        lines += _md_section(i, s, plot_dir)
    return "\n".join(lines).rstrip() + "\n"


# -- html -------------------------------------------------------------------------------------
CSS = """body{font-family:system-ui,-apple-system,Segoe UI,Helvetica,Arial,sans-serif;margin:2em auto;
max-width:1200px;padding:0 1em;color:#222}table{border-collapse:collapse;margin:.5em 0 1em;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 7px;text-align:left;vertical-align:top}th{background:#f2f2f2}
tr:nth-child(even) td{background:#fafafa}.reason{color:#666;font-style:italic}figure{margin:1em 0}
figcaption{font-size:12px;color:#555}img{max-width:100%;height:auto;border:1px solid #eee}
.header li{font-size:13px}"""


def html_table(df: pd.DataFrame) -> str:
    """An escaped HTML table of a display frame."""
    if df.empty:
        return "<p class='reason'>(no rows)</p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _html_section(number: int, s: Section) -> str:
    parts = [f"<section id='{html.escape(s.key)}'><h2>{number}. {html.escape(s.title)}</h2>"]
    if s.reason:
        return parts[0] + f"<p class='reason'>{html.escape(s.reason)}</p></section>"
    if s.intro:
        parts.append(f"<p>{html.escape(s.intro)}</p>")
    for t in s.tables:
        parts.append(f"<h3>{html.escape(t.title)}</h3>{html_table(t.display)}")
        parts += [f"<p class='reason'>{html.escape(n)}</p>" for n in t.notes]
    for p in s.plots:
        data = base64.b64encode(p.png).decode("ascii")
        parts.append(f"<figure><img alt='{html.escape(p.title)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{html.escape(p.title)}</figcaption></figure>")
    if s.notes:
        parts.append("<ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in s.notes) + "</ul>")
    return "".join(parts) + "</section>"


def to_html(report: Report) -> str:
    """One self-contained HTML page: inline CSS, figures as data URIs, no scripts or links."""
    header = "".join(f"<li>{html.escape(h)}</li>" for h in report.header)
    body = "".join(_html_section(i, s) for i, s in enumerate(report.sections))
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(report.title)}"
            f"</title><style>{CSS}</style></head><body><h1>{html.escape(report.title)}</h1>"
            f"<ul class='header'>{header}</ul>{body}</body></html>\n")


# -- files ------------------------------------------------------------------------------------
def report_files(report: Report, formats: Iterable[Format]) -> dict[str, bytes]:
    """Relative file name -> content for the chosen formats."""
    formats = set(formats)
    files: dict[str, bytes] = {}
    if Format.MD in formats:
        files["report.md"] = to_markdown(report, plot_dir="plots").encode()
        files |= {f"plots/{p.key}.png": p.png for p in report.plots()}
    if Format.HTML in formats:
        files["report.html"] = to_html(report).encode()
    if Format.CSV in formats:
        files |= {f"{t.key}.csv": t.data.to_csv(index=False).encode() for t in report.tables()}
    return files


def write_report(report: Report, out: str | Path, formats: Iterable[Format]) -> list[Path]:
    """Write the report's files under ``out`` all-or-nothing; returns the paths written.

    Raises:
        ConfigError: ``out`` is a file, or cannot be written.
    """
    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {out} is a file: give a folder to write the report into")
    files = report_files(report, formats)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the report folder should not be
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write there ({err.strerror}); choose another folder") from None
    try:
        for rel, data in files.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_bytes(data)
        (tmp / MANIFEST).write_text(json.dumps(sorted(files), indent=1))
        if not out.exists():
            os.replace(tmp, out)  # the whole folder appears at once
        else:
            _replace_into(tmp, out, sorted(files))
    except OSError as err:
        raise ConfigError(f"--out {out}: cannot write the report ({err.strerror}); choose another folder") from None
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(tmp)
    return [out / rel for rel in sorted(files)]


def _kind(rel: str) -> Format:
    return Format.CSV if rel.endswith(".csv") else Format.HTML if rel.endswith(".html") else Format.MD


def _replace_into(tmp: Path, out: Path, names: list[str]) -> None:
    # An existing folder: each file is swapped in by an atomic rename. Files of the formats
    # written now that the last report wrote and this one does not (a table that no longer
    # exists) are removed, so no stale table survives; other formats are left alone.
    old: list[str] = []
    with contextlib.suppress(OSError, ValueError):
        old = [r for r in json.loads((out / MANIFEST).read_text()) if isinstance(r, str)]
    kinds = {_kind(rel) for rel in names}
    for rel in names:
        (out / rel).parent.mkdir(parents=True, exist_ok=True)
        os.replace(tmp / rel, out / rel)
    kept = [rel for rel in old if _kind(rel) not in kinds]
    for rel in set(old) - set(names) - set(kept):
        if ".." not in Path(rel).parts:
            with contextlib.suppress(OSError):
                (out / rel).unlink()
    (tmp / MANIFEST).write_text(json.dumps(sorted(set(names) | set(kept)), indent=1))
    os.replace(tmp / MANIFEST, out / MANIFEST)
