"""The line naming the latency mode of a report's latency figures (``analysis.fmt.latency_note``)."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from qmoe.analysis.fmt import latency_note
from qmoe.layout import IN_SWEEP, ISOLATED


def _rows(modes: list, p50: list | None = None) -> pd.DataFrame:
    return pd.DataFrame({"latency_p50_us": p50 or [10.0] * len(modes), "latency_mode": modes})


def test_one_mode_is_named_with_its_meaning() -> None:
    line = latency_note(_rows([ISOLATED, ISOLATED]))
    assert line.startswith(f"latency mode: {ISOLATED} (") and "MIXED" not in line


def test_a_mix_of_modes_is_said_loudly_with_its_counts() -> None:
    line = latency_note(_rows([ISOLATED, IN_SWEEP, IN_SWEEP, None]))
    assert line.startswith("latency mode: MIXED (")
    assert f"2 {IN_SWEEP}" in line and f"1 {ISOLATED}" in line and "1 not recorded" in line


def test_rows_without_a_recorded_mode_say_so_without_a_warning() -> None:
    """An older table: no column, or a column that is all missing (float64 NaN)."""
    old = pd.DataFrame({"latency_p50_us": [10.0, 12.0], "latency_mode": [np.nan, np.nan]})
    assert old["latency_mode"].dtype == np.float64
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # pandas warns of text put in a float column (and will raise)
        assert latency_note(old) == "latency mode: not recorded (mode not recorded in the rows)"
        assert latency_note(old.drop(columns="latency_mode")) == latency_note(old)


def test_no_line_without_a_latency_figure() -> None:
    assert latency_note(_rows([IN_SWEEP], p50=[float("nan")])) is None
    assert latency_note(pd.DataFrame({"f1_macro": [0.5]})) is None
    assert latency_note(_rows([])) is None
