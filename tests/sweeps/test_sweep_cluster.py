"""A real two-node Ray cluster on this machine (``ray start --head`` + ``ray start --address``)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

pytestmark = [pytest.mark.slow, pytest.mark.ray]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def two_nodes():
    """A head and a worker node, one CPU each; stopped (only these) afterwards.

    Not ``ray stop``: that kills every Ray on the machine, the test session's included. Each
    ``ray start --block`` stays our child and, on SIGTERM, stops the processes it started.
    """
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="qr", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--num-cpus=1", "--block", "--disable-usage-stats", f"--temp-dir={temp}"]
    procs: list[subprocess.Popen] = []
    try:
        procs.append(subprocess.Popen([ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false",
                                       *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "the head node did not start"
                time.sleep(0.5)
        address = f"127.0.0.1:{port}"
        procs.append(subprocess.Popen([ray_bin, "start", f"--address={address}", *common], env=env,
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield address, env
    finally:
        for proc in reversed(procs):
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(1)
        left = [p for p in psutil.process_iter(["cmdline"]) if any(temp in c for c in p.info["cmdline"] or [])]
        for p in left:  # only processes of this cluster (their command lines name its temp dir)
            p.kill()
        assert not left, f"processes of the test cluster outlived it: {[p.pid for p in left]}"


def test_sweep_on_two_nodes(two_nodes, synth_table, tmp_path) -> None:
    address, env = two_nodes
    env = {**env, "QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "1.5"}
    deadline = time.time() + 90
    while True:  # the worker node joins a few seconds after the head
        probe = subprocess.run([sys.executable, "-c", (
            "import ray, logging; ray.init(address=%r, logging_level=logging.ERROR); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))") % address], env=env, capture_output=True, text=True)
        if probe.stdout.strip() == "2":
            break
        assert time.time() < deadline, probe.stderr[-2000:]
        time.sleep(1)
    proc = subprocess.run([sys.executable, "-m", "cli.main", "sweep", "alpha", "--values", "0.3", "--folds", "1-4",
                           "--address", address, "--storage", str(tmp_path), "--name", "two"],
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    df = pd.read_parquet(tmp_path / "two" / "results.parquet")
    assert len(df) == 8 and (df["status"] == "ok").all()
    assert df["node"].nunique() == 2, df["node"].value_counts()  # both nodes ran trials
