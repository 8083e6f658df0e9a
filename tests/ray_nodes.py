"""A real multi-node Ray cluster on this machine for tests: ``ray start --head`` + ``ray start --address``.

Each node is a ``ray start --block`` child process; :meth:`LocalCluster.kill_node` SIGKILLs a
node's whole process tree (raylet, agents, its workers) at once, like a machine that dies.
Nothing here runs ``ray stop``, which would kill every Ray on the machine (other tests', too).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psutil


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class LocalCluster:
    address: str  # the head's GCS address, for --address
    env: dict[str, str]  # environment to run drivers with
    temp: str  # Ray's temp dir (its path is in every process's command line)
    nodes: list[subprocess.Popen] = field(default_factory=list)  # [head, worker, ...]

    def node_pids(self, index: int) -> set[int]:
        """Pids of node ``index``'s processes (its ``ray start`` and every descendant)."""
        try:
            root = psutil.Process(self.nodes[index].pid)
            return {root.pid, *(p.pid for p in root.children(recursive=True))}
        except psutil.NoSuchProcess:
            return set()

    def kill_node(self, index: int) -> set[int]:
        """SIGKILL every process of node ``index`` at once; returns their pids."""
        procs = []
        with contextlib.suppress(psutil.NoSuchProcess):
            root = psutil.Process(self.nodes[index].pid)
            procs = [root, *root.children(recursive=True)]
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGKILL)
        psutil.wait_procs(procs, timeout=10)
        return {p.pid for p in procs}

    def alive_nodes(self) -> int:
        """Alive nodes as the cluster sees them (asked from a separate driver process)."""
        probe = subprocess.run([sys.executable, "-c", (
            "import ray, logging; ray.init(address=%r, logging_level=logging.ERROR); "
            "print(sum(1 for n in ray.nodes() if n['Alive']))") % self.address],
            env=self.env, capture_output=True, text=True, timeout=120)
        return int(probe.stdout.strip() or 0)

    def wait_for_nodes(self, n: int, timeout: float = 90) -> None:
        deadline = time.time() + timeout
        while self.alive_nodes() != n:
            assert time.time() < deadline, f"the cluster did not reach {n} alive nodes"
            time.sleep(1)


@contextlib.contextmanager
def local_cluster(cpus: tuple[int, ...] = (1, 1)) -> Iterator[LocalCluster]:
    """A head and ``len(cpus) - 1`` worker nodes with these CPU counts; stopped (only these) after.

    On exit each ``ray start --block`` gets SIGTERM, on which it stops the processes it started;
    anything of this cluster still alive after that (found by its temp dir) is killed, and
    the exit fails if there was any.
    """
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = free_port()
    temp = tempfile.mkdtemp(prefix="qr", dir="/tmp")  # short: Ray's socket paths are length-limited
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_USAGE_STATS_ENABLED": "0"}
    common = ["--block", "--disable-usage-stats", f"--temp-dir={temp}"]
    cluster = LocalCluster(address=f"127.0.0.1:{port}", env=env, temp=temp)
    try:
        cluster.nodes.append(subprocess.Popen(
            [ray_bin, "start", "--head", f"--port={port}", "--include-dashboard=false", f"--num-cpus={cpus[0]}",
             *common], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        deadline = time.time() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                assert time.time() < deadline, "the head node did not start"
                time.sleep(0.5)
        for n in cpus[1:]:
            cluster.nodes.append(subprocess.Popen(
                [ray_bin, "start", f"--address={cluster.address}", f"--num-cpus={n}", *common], env=env,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        yield cluster
    finally:
        for proc in reversed(cluster.nodes):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in cluster.nodes:
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                proc.kill()
        time.sleep(1)
        left = [p for p in psutil.process_iter(["cmdline"]) if any(temp in c for c in p.info["cmdline"] or [])]
        for p in left:  # only processes of this cluster (their command lines name its temp dir)
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        assert not left, f"processes of the test cluster outlived it: {[p.pid for p in left]}"
