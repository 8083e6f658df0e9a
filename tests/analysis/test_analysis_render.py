"""Markdown, the self-contained HTML page, CSV files, and writing them all-or-nothing."""

from __future__ import annotations

import base64
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from analysis_fakes import frame, make_row, paper_rows, write_routing

from qmoe.analysis import render
from qmoe.analysis.render import Format, parse_formats, to_html, to_markdown, write_report
from qmoe.analysis.report import build_report
from qmoe.errors import ConfigError


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    folder = tmp_path_factory.mktemp("sweep")
    rows = paper_rows(("esc50", "quinn")) + [make_row(model="q4", fold=9, status="error", error="boom")]
    frame(rows).to_parquet(folder / "results.parquet")
    write_routing(folder / "routing", rows)
    return build_report(folder / "results.parquet", plots=True)


def test_every_plot_kind_is_drawn(report) -> None:
    keys = [p.key for p in report.plots()]
    assert any(k.startswith("f1-vs-bits") for k in keys) and any(k.startswith("alpha") for k in keys)
    assert any(k.startswith("confidence") for k in keys) and any(k.startswith("latency") for k in keys)
    assert len(set(keys)) == len(keys)
    assert all(p.png.startswith(b"\x89PNG\r\n\x1a\n") for p in report.plots())


def test_markdown_has_every_section_in_order(report) -> None:
    md = to_markdown(report)
    heads = re.findall(r"^## (\d+)\. ", md, flags=re.M)
    assert heads == [str(i) for i in range(11)]
    assert md.startswith("# qmoe report: sweep")
    assert "| esc50 | Q4-Base | 9 | q4-0-esc50-9-clean | boom |" in md.split("## 1.")[0]
    assert "(in the HTML report)" in md and "](plots/" not in md


def test_html_is_self_contained(report) -> None:
    page = to_html(report)
    attrs = re.findall(r"""\b(src|href)\s*=\s*['"]([^'"]*)['"]""", page, flags=re.I)
    assert attrs and all(name.lower() == "src" for name, _ in attrs)  # no links at all
    assert all(value.startswith("data:image/png;base64,") for _, value in attrs)
    assert not re.search(r"<script|<link|@import|url\(", page, flags=re.I)
    assert not any("http" in value for _, value in attrs)
    assert len(attrs) == len(report.plots())
    for _, value in attrs:
        assert base64.b64decode(value.split(",", 1)[1]).startswith(b"\x89PNG")


def _browser() -> str | None:
    return next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)


@pytest.mark.skipif(_browser() is None, reason="no headless Chromium installed")
def test_html_renders_in_headless_chromium(report, tmp_path: Path) -> None:
    page = tmp_path / "report.html"
    page.write_text(to_html(report))
    shot = tmp_path / "shot.png"
    subprocess.run([_browser(), "--headless", "--disable-gpu", "--no-sandbox", f"--screenshot={shot}",
                    "--window-size=1200,3000", page.as_uri()], check=True, timeout=60, capture_output=True)
    assert shot.stat().st_size > 10_000


def test_write_report_writes_md_html_plots_and_a_csv_per_table(report, tmp_path: Path) -> None:
    out = tmp_path / "out"
    written = write_report(report, out, parse_formats(None, out))
    names = {p.relative_to(out).as_posix() for p in written}
    assert {"report.md", "report.html"} <= names
    assert {f"{t.key}.csv" for t in report.tables()} <= names
    md = (out / "report.md").read_text()
    for link in re.findall(r"\]\((plots/[^)]+)\)", md):
        assert (out / link).is_file()
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == len(report.section("summary").tables[0].data)
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]  # no temp folder left


def test_rewriting_replaces_files_and_drops_stale_tables(report, tmp_path: Path) -> None:
    out = tmp_path / "out"
    write_report(report, out, [Format.CSV, Format.HTML])
    (out / "notes.txt").write_text("mine")
    stale = out / "old_table.csv"
    stale.write_text("x")
    manifest = out / render.MANIFEST
    manifest.write_text(manifest.read_text().replace("[", '["old_table.csv",', 1))
    write_report(report, out, [Format.CSV])
    assert not stale.exists() and (out / "notes.txt").exists() and (out / "report.html").exists()


def test_a_failed_write_leaves_nothing_behind(report, tmp_path: Path, monkeypatch) -> None:
    calls = {"n": 0}
    real = Path.write_bytes

    def flaky(self, data):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(28, "No space left on device")
        return real(self, data)

    monkeypatch.setattr(Path, "write_bytes", flaky)
    with pytest.raises(ConfigError, match="No space left"):
        write_report(report, tmp_path / "out", [Format.CSV])
    assert list(tmp_path.iterdir()) == []


def test_out_that_is_a_file(report, tmp_path: Path) -> None:
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(ConfigError, match="is a file"):
        write_report(report, target, [Format.MD])


def test_parse_formats() -> None:
    assert parse_formats(None, None) == (Format.MD,)
    assert parse_formats(None, Path("o")) == (Format.MD, Format.HTML, Format.CSV)
    assert parse_formats("ALL", Path("o")) == (Format.MD, Format.HTML, Format.CSV)
    assert parse_formats("html", None) == (Format.HTML,)
    with pytest.raises(ConfigError, match="give --out DIR"):
        parse_formats("csv", None)
    with pytest.raises(ConfigError, match="--format 'pdf' is unknown"):
        parse_formats("pdf", None)


def test_markdown_table_escapes_pipes() -> None:
    md = render.markdown_table(pd.DataFrame({"a": ["x|y"], "b": ["line\nbreak"]}))
    assert md.splitlines()[2] == "| x\\|y | line break |"


def test_odd_names_reach_every_plot_and_are_escaped_in_md_and_html(tmp_path: Path) -> None:
    # "$x_$" is invalid mathtext (matplotlib would raise from a legend or title), "<b>" is HTML and
    # "|" breaks a markdown table: every figure kind is drawn and both documents show the names as text.
    odd = "$x_$ <b>bold</b> | pipe"
    rows = [r | {"dataset": odd, "trial_key": r["trial_key"] + "-odd",
                 "paper_name": f"{odd} {r['paper_name']}"} for r in paper_rows()]
    folder = tmp_path / "odd"
    folder.mkdir()
    frame(rows).to_parquet(folder / "results.parquet")
    write_routing(folder / "routing", rows)
    report = build_report(folder / "results.parquet", plots=True)
    keys = {p.key.split("-")[0] for p in report.plots()}
    assert {"f1", "alpha", "confidence", "latency", "cd"} <= keys
    out = tmp_path / "out"
    write_report(report, out, parse_formats(None, out))
    md, page = (out / "report.md").read_text(), (out / "report.html").read_text()
    escaped_md = "\\$x_\\$ &lt;b&gt;bold&lt;/b&gt; \\| pipe"
    assert escaped_md in md and "<b>" not in md
    assert "&lt;b&gt;bold&lt;/b&gt; | pipe" in page and "<b>" not in page
    lines, header, checked = md.splitlines(), "", 0
    for i, line in enumerate(lines):  # every table row keeps its header's column count
        if line.startswith("| ") and i + 1 < len(lines) and lines[i + 1].startswith("|---"):
            header = line
        elif line.startswith("| ") and "pipe" in line:
            assert len(re.findall(r"(?<!\\)\|", line)) == len(re.findall(r"(?<!\\)\|", header)), line
            checked += 1
    assert checked > 10
