"""Session-wide test settings: offline, no telemetry, a private cache for built tables, one local Ray."""

from __future__ import annotations

import logging
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


@pytest.fixture(scope="session")
def ray_cluster():
    """One local Ray (2 CPUs, small object store) shared by every test that needs Ray.

    Yields its GCS address, so that a subprocess driver can join it with ``--address``
    instead of starting a second Ray on the same 2 cores.
    """
    import ray

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    if not ray.is_initialized():
        ray.init(num_cpus=2, object_store_memory=200 * 1024**2, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.ERROR)
    yield ray.get_runtime_context().gcs_address
    ray.shutdown()
