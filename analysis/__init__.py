"""Results table -> aggregates, statistical tests and the report (DESIGN §9).

The one entry point is :func:`analysis.report.build_report`; :mod:`analysis.render` turns its
result into markdown, HTML or CSV. This package reads the results table only: it never imports
``sweeps``, ``cli`` or ``ray``.
"""
