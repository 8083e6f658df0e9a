"""Fixtures of the sweeps tests: one local Ray for the whole session, fake tables."""

from __future__ import annotations

import logging
import os

import pytest

from tests.sweeps.fakes import FakeTable, fake_resolver


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
def fake_tables() -> dict[str, FakeTable]:
    return {"synth": FakeTable(n_folds=5, source="synth")}


@pytest.fixture
def resolver(fake_tables):
    return fake_resolver(fake_tables)
