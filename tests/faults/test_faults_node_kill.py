"""Fault 3: a worker node of a real two-node local Ray cluster dies mid-sweep.

The node is a ``ray start`` process tree (raylet, agents, workers) SIGKILLed at once while it
runs a trial. Ray retries that trial on the remaining node; the sweep completes with every
trial in the table exactly once. (A healthy two-node sweep: tests/sweeps/test_sweep_cluster.py.)
"""

from __future__ import annotations

from collections import Counter

import pytest

from tests.faults.fault_fns import read_log
from tests.faults.procs import qmoe, rows, stop, wait_for
from tests.ray_nodes import local_cluster

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def test_worker_node_killed_mid_sweep(synth_table, tmp_path) -> None:
    log, storage = tmp_path / "log", tmp_path / "runs"
    results = storage / "nodes" / "results.parquet"
    with local_cluster((1, 1)) as cluster:
        cluster.wait_for_nodes(2)
        env = {**cluster.env, "QMOE_TRIAL_FN": "tests.faults.fault_fns:fault_trial", "QMOE_FAULT_SECONDS": "2.0",
               "QMOE_FAULT_LOG": str(log)}
        driver = qmoe("sweep", "alpha", "--values", "0.3", "--folds", "1-4", "--address", cluster.address,
                      "--storage", str(storage), "--name", "nodes", "--quiet", env=env)  # 8 trials
        try:
            def running_on_worker() -> set[str]:
                events, worker_pids = read_log(log), cluster.node_pids(1)  # workers come and go
                done = {k for k, e, _, _ in events if e == "ok"}
                return {k for k, e, _, pid in events if e == "start" and pid in worker_pids and k not in done}

            # mid-sweep: a row is in, and the worker node is busy with a trial
            wait_for(lambda: len(rows(results)) >= 1 and bool(running_on_worker()), timeout=300,
                     what="a trial running on the worker node after the first row", alive=driver, poll=0.05)
            victims = running_on_worker()
            dead_node = next(n for k, e, n, _ in read_log(log) if k in victims and e == "start")
            cluster.kill_node(1)
            out, err = driver.communicate(timeout=600)
        finally:
            stop(driver)
        assert driver.returncode == 0, err
        assert cluster.alive_nodes() == 1
    df = rows(results)
    assert len(df) == 8 and df["trial_key"].is_unique and (df["status"] == "ok").all()
    # the victims finished on the remaining node, after starting a second time
    final_node = df.set_index("trial_key")["node"]
    assert all(not final_node[k].endswith("/" + dead_node[:8]) for k in victims), (victims, final_node)
    starts = Counter(k for k, e, _, _ in read_log(log) if e == "start")
    assert all(starts[k] >= 2 for k in victims)
    assert set(df["trial_key"]) == set(starts)  # every trial that ever started has its one row
