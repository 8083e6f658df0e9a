"""Session-wide test settings: offline, no telemetry, a private cache for built tables, one local Ray;
and the fake tables of the sweeps and fault suites."""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

import pytest

os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
# ``tests`` is not installed (setup.py): processes started by the tests, and the Ray workers
# that load fake trial functions as ``tests.sweeps.fakes:...``, find it through PYTHONPATH.
ROOT = Path(__file__).resolve().parents[1]
os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
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


@pytest.fixture
def fake_tables():
    """A fake synth table (5 folds) for sweeps under real Ray with fake trials (tests/sweeps/fakes.py)."""
    from tests.sweeps.fakes import FakeTable

    return {"synth": FakeTable(n_folds=5, source="synth")}


@pytest.fixture
def resolver(fake_tables):
    """A ``(dataset, data) -> table`` resolver over :func:`fake_tables`."""
    from tests.sweeps.fakes import fake_resolver

    return fake_resolver(fake_tables)
