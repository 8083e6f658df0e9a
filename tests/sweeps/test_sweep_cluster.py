"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``).

A worker node killed mid-sweep: tests/faults/test_faults_node_kill.py.
"""

from __future__ import annotations

import subprocess
import sys

import pandas as pd
import pytest

from tests.ray_nodes import local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.ray]


@pytest.fixture
def two_nodes():
    """A head and a worker node, one CPU each; stopped (only these) afterwards (tests/ray_nodes.py)."""
    with local_cluster((1, 1)) as cluster:
        yield cluster


def test_sweep_on_two_nodes(two_nodes, synth_table, tmp_path) -> None:
    address = two_nodes.address
    env = {**two_nodes.env, "QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "1.5"}
    two_nodes.wait_for_nodes(2)  # the worker node joins a few seconds after the head
    proc = subprocess.run([sys.executable, "-m", "qmoe.cli.main", "sweep", "alpha", "--values", "0.3", "--folds", "1-4",
                           "--address", address, "--storage", str(tmp_path), "--name", "two"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(tmp_path / "two" / "results.parquet")
    assert len(df) == 8 and (df["status"] == "ok").all()
    assert df["node"].nunique() == 2, df["node"].value_counts()  # both nodes ran trials
