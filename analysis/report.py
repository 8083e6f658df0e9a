"""``build_report``: a results table (or a sweep name) -> the whole report as data."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from qmoe.analysis.bits import bits_section
from qmoe.analysis.claims import claims_section
from qmoe.analysis.context import DEFAULT_MARGIN, Context, resolve_references
from qmoe.analysis.curiosity import curiosity_section
from qmoe.analysis.decomposition import decomposition_section
from qmoe.analysis.document import Report, Section
from qmoe.analysis.load import Results, load_results, resolve_source
from qmoe.analysis.ranking import ranking_section
from qmoe.analysis.routing import specialisation_section
from qmoe.analysis.significance import significance_section
from qmoe.analysis.stats import Correction
from qmoe.analysis.tables import mixtures_section, sizes_section, summary_section, trials_section
from qmoe.analysis.tuning import tuning_folder, tuning_report
from qmoe.errors import ConfigError

BUILDERS = (summary_section, bits_section, mixtures_section, curiosity_section, decomposition_section,
            significance_section, ranking_section, specialisation_section, sizes_section)


def build_report(source: str | Path, *, storage: str | Path = "qmoe-runs",
                 references: Sequence[str] | None = None, correction: str | Correction = Correction.BONFERRONI,
                 plots: bool = True, seed: int = 0, margin: float = DEFAULT_MARGIN) -> Report:
    """Read a sweep's results table and compute every section of the report.

    Args:
        source: a sweep NAME (looked up under ``storage``), a sweep folder, or a results.parquet;
            or a tuning run (NAME, folder or tuning.parquet), whose report is
            :func:`analysis.tuning.tuning_report`.
        storage: the folder holding the sweeps.
        references: ``--reference`` values: a single model (default fp32) and/or a mixture
            whose plain routing every mixture is compared against (default: each its own).
        correction: multiple-comparison correction, ``bonferroni`` or ``holm``.
        plots: draw the figures (off for plain markdown, which cannot embed them).
        seed: seed of the bootstrap resampling and the generalised-pivot draws.
        margin: equivalence margin in F1 of the "≈" claims (TOST), ``--margin``.

    Returns:
        The report: header lines and sections; a section the data cannot support carries a
        one-line reason instead of tables.

    Raises:
        DataError: no such sweep or file, not a results table, an empty table.
        ConfigError: an unknown reference or correction, a margin that is not a positive number.
    """
    corr = Correction.parse(correction)
    if not (isinstance(margin, (int, float)) and 0 < margin < 1):
        raise ConfigError(f"--margin {margin!r} is not an F1 difference in (0, 1): give e.g. 0.01 (one F1 point)")
    tuning = tuning_folder(source, storage)
    if tuning is not None:  # a qmoe tune run: its own report
        return tuning_report(tuning, plots=plots)
    path = resolve_source(source, storage)
    results = load_results(path)
    single, mixture = resolve_references(results, references)
    ctx = Context(results=results, correction=corr, single_reference=single, mixture_reference=mixture,
                  plots=plots, seed=seed, margin=float(margin))
    name = path.parent.name if path.name == "results.parquet" else path.stem
    title, header = f"qmoe report: {name}", header_lines(results)
    if results.ok.empty:
        nothing = Section.skipped("results", "Results", f"nothing to analyse: none of the {results.n_rows} "
                                  "trial(s) finished; fix the errors above and 'qmoe resume' the sweep")
        return Report(title=title, source=path, header=header, sections=(trials_section(ctx), nothing))
    sections: dict[str, Section] = {}
    for build in BUILDERS:
        section = build(ctx)
        sections[section.key] = section
    ordered = [trials_section(ctx), *sections.values(), claims_section(ctx, sections)]
    return Report(title=title, source=path, header=header, sections=tuple(ordered))


def header_lines(results: Results) -> tuple[str, ...]:
    """What the table holds: rows, finished and errored trials, datasets, folds, protocols."""
    ok, err = results.ok, results.errors
    lines = [f"source: {results.path}",
             f"rows: {results.n_rows} ({len(ok)} finished, {len(err)} errored; errored trials are listed, "
             "never averaged)"]
    if not ok.empty:
        for dataset, g in ok.groupby("dataset"):
            folds = sorted(g["fold"].unique())
            lines.append(f"{dataset}: {g['config'].nunique()} configuration(s), fold(s) "
                         f"{', '.join(map(str, folds))}")
        lines.append(f"protocol(s): {', '.join(results.protocols)}")
        seeds, splits = ok["seed"].nunique(), ok["split_seed"].nunique()
        lines.append(f"replicates: {seeds} seed(s) per fold" + (f", {splits} seeded fold assignments (repeated k-fold)"
                                                                  if splits > 1 else ", one fold assignment")
                     + ("; every test pairs by (fold, seed) and averages the seeds of a fold where folds must be "
                        "independent" if seeds > 1 or splits > 1 else ""))
        methods = sorted(set(ok["energy_method"].dropna().astype(str)))
        if not methods or set(methods) <= {"off"}:
            lines.append("energy: not measured in this sweep (energy figures show '-')")
        else:
            estimate = {"cpu-load", "constant"} & set(methods)
            lines.append(f"energy method(s): {', '.join(methods)}"
                         + (" (estimates from CPU load / a default TDP, not measured power)" if estimate else ""))
    lines += list(results.notes)
    return tuple(lines)
