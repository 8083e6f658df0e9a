"""Session-wide test settings: offline, no telemetry, a private cache for built tables."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# One cache per test session so the synth table is built once and never in the home folder.
_CACHE = Path(tempfile.mkdtemp(prefix="qmoe-test-cache-"))
os.environ.setdefault("QMOE_CACHE", str(_CACHE))


@pytest.fixture(scope="session")
def synth_table():
    """The built-in synth embedding table (built once per session)."""
    from qmoe.data.datasets import resolve_table

    return resolve_table("synth", None)
