"""Fixtures of the sweeps tests: fake tables (the session's Ray is in tests/conftest.py)."""

from __future__ import annotations

import pytest

from tests.sweeps.fakes import FakeTable, fake_resolver


@pytest.fixture
def fake_tables() -> dict[str, FakeTable]:
    return {"synth": FakeTable(n_folds=5, source="synth")}


@pytest.fixture
def resolver(fake_tables):
    return fake_resolver(fake_tables)
