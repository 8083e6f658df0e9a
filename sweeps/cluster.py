"""Connecting to Ray: an embedded local Ray, the cluster this machine is part of, or a remote one.

``--address`` takes:

- nothing: start an embedded Ray on this machine for the command's lifetime;
- ``auto``: join the Ray cluster already running on this machine (``ray start --head`` or
  ``ray start --address=HEAD:6379`` was run here); the driver runs here;
- ``HOST:PORT``: the same, with the head node's GCS address given explicitly;
- ``ray://HOST:10001``: Ray Client, for a driver outside the cluster (needs ``ray[client]``).

Reachability is checked before anything is written, so a wrong address fails in seconds
with one line instead of a long Ray timeout.
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
import re
import signal
import socket
import sys
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

from qmoe.errors import ConfigError, one_line
from qmoe.malloc import MALLOC_ENV

#: Environment of every worker of our jobs (runtime_env); glibc reads MALLOC_* at process start.
WORKER_ENV = dict(MALLOC_ENV)
#: Variables of the driver passed on to the workers (settings such as QMOE_CACHE).
FORWARD_PREFIXES = ("QMOE_",)
CONNECT_TIMEOUT_S = 5.0
#: Settings of an embedded Ray (Ray's system config; a cluster keeps its own). The raylet
#: prestarts one idle worker per CPU (at its start and for the first driver) for tasks without
#: a runtime_env, but every task and actor of ours has one (the env vars above, and Tune's for
#: its trainables): those workers would never run anything while they take CPU from the start-up
#: (2 x ~0.7 s of imports on 2 cores). Nothing reads Ray's metrics (the dashboard is off).
EMBEDDED_SYSTEM_CONFIG = {"enable_worker_prestart": False, "prestart_worker_first_driver": False,
                          "enable_metrics_collection": False}


@dataclass(frozen=True)
class ClusterInfo:
    """What the sweep learns of the Ray it runs on."""

    address: str  # as given ("" for the embedded Ray)
    cpus: float  # CPUs in the cluster
    nodes: int  # alive nodes
    embedded: bool  # True when this command started (and will stop) Ray
    client: bool  # True for ray:// (the Tune loop then runs on the head node)


def _host_port(address: str) -> tuple[str, int]:
    match = re.fullmatch(r"(?:ray://)?\[?([^\[\]]+?)\]?:(\d{1,5})", address)
    if not match:
        raise ConfigError(f"--address {address!r} is not valid: use auto, HOST:PORT or ray://HOST:PORT")
    return match.group(1), int(match.group(2))


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """ConfigError unless a TCP connection to the address's host and port opens in ``timeout``."""
    host, port = _host_port(address)
    try:
        with socket.create_connection((host, port), timeout=timeout):
            pass
    except OSError as err:
        raise ConfigError(f"--address {address}: cannot reach a Ray head there ({err.strerror or err}); "
                          "start one with 'ray start --head' or fix the address") from None


def worker_env(threads: int) -> dict[str, str]:
    """Env vars for the workers: malloc tuning, BLAS/OpenMP threads, forwarded QMOE_* settings."""
    env = dict(WORKER_ENV)
    env.update({"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)})
    env.update({k: v for k, v in os.environ.items() if k.startswith(FORWARD_PREFIXES)})
    return env


def validate_address(address: str | None) -> str | None:
    """Normalise ``--address`` ('' and None mean embedded); ConfigError on a malformed one."""
    if address is None or address.strip() == "":
        return None
    address = address.strip()
    if address != "auto":
        _host_port(address)
    return address


class EarlyStart:
    """An embedded Ray started in a background thread while the command goes on planning.

    ``ray.init`` spends its 2-4 s mostly waiting for the processes it starts; a sweep's driver
    meanwhile imports its modules and plans. The thread stays alive until Ray is shut down:
    Ray's processes are bound to the *thread* that started them (``PR_SET_PDEATHSIG``), so
    they would die with a thread that ended after ``ray.init``. The next :func:`ray_session`
    in the process takes the session over (and shuts it down at its end).
    """

    def __init__(self, kwargs: Mapping[str, object]) -> None:
        self._ready = threading.Event()
        self._release = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(dict(kwargs),), name="qmoe-ray-start", daemon=True)
        self._thread.start()

    def _run(self, kwargs: dict) -> None:
        import ray

        try:
            ray.init(**kwargs)
        except BaseException as err:  # noqa: BLE001 - re-raised in the main thread by wait()
            self.error = err
        finally:
            self._ready.set()
        self._release.wait()

    def wait(self) -> None:
        """Block until Ray is up; re-raise what ``ray.init`` raised."""
        self._ready.wait()
        if self.error is not None:
            raise self.error

    def stop(self) -> None:
        """Shut Ray down (if it came up) and let the thread end."""
        import ray

        self._ready.wait()
        try:
            if self.error is None:
                ray.shutdown()
        finally:
            self._release.set()
            self._thread.join(timeout=10)


_early: EarlyStart | None = None


def _embedded_kwargs(env: Mapping[str, str], num_cpus: int | None, verbose: bool) -> dict:
    return dict(num_cpus=num_cpus, include_dashboard=False, _system_config=dict(EMBEDDED_SYSTEM_CONFIG),
                runtime_env={"env_vars": dict(env)}, log_to_driver=verbose,
                logging_level=logging.INFO if verbose else logging.ERROR)


@contextlib.contextmanager
def early_ray(address: str | None, *, env: Mapping[str, str], verbose: bool = False,
              enabled: bool = True) -> Iterator[None]:
    """Start an embedded Ray in the background for the block (:class:`EarlyStart`), for the
    block's :func:`ray_session` to use; Ray is shut down at the end of the block at the latest.

    Nothing happens for a cluster address, when ``enabled`` is False (a dry run), or when Ray
    is already initialised in this process.
    """
    global _early
    import ray

    if not enabled or validate_address(address) is not None or ray.is_initialized() or _early is not None:
        yield
        return
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main and previous is signal.SIG_DFL:
        # what ray.init installs when it runs in the main thread: exit cleanly on SIGTERM
        signal.signal(signal.SIGTERM, _exit_on_sigterm)
    _early = start = EarlyStart(_embedded_kwargs(env, None, verbose))
    try:
        yield
    finally:
        if _early is start:
            _early = None
            start.stop()
        if main and previous is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, previous)


def _exit_on_sigterm(signum: int, frame: object) -> None:
    sys.exit(signum)


@contextlib.contextmanager
def ray_session(address: str | None, *, env: Mapping[str, str], num_cpus: int | None = None,
                verbose: bool = False) -> Iterator[ClusterInfo]:
    """Connect to (or start) Ray for the duration of the block.

    An embedded Ray being started by :func:`early_ray` is waited for and taken over. When Ray
    is otherwise already initialised in this process (tests, notebooks), that session is used
    as it is and left running.

    Raises:
        ConfigError: a malformed or unreachable address, or ``ray://`` without Ray Client.
    """
    global _early
    import ray

    address = validate_address(address)
    if address is None and _early is not None and num_cpus is None:
        start, _early = _early, None
        try:
            start.wait()
            yield _info("", embedded=True)
        finally:
            start.stop()
        return
    if address not in (None, "auto"):
        check_reachable(address)
    if ray.is_initialized():
        yield _info(address or "", embedded=False)
        return
    if address and address.startswith("ray://"):
        if importlib.util.find_spec("grpc") is None:  # Ray Client's transport
            raise ConfigError(f"--address {address} needs Ray Client: pip install 'ray[client]'")
    try:
        if address is None:
            ray.init(**_embedded_kwargs(env, num_cpus, verbose))
        else:
            ray.init(address=address, runtime_env={"env_vars": dict(env)}, log_to_driver=verbose,
                     logging_level=logging.INFO if verbose else logging.ERROR)
    except ConnectionError as err:
        if "Authentication" in type(err.__cause__).__name__ or "InvalidAuthToken" in str(err.__cause__):
            # Ray sends its token to an explicitly named address only when told to.
            raise ConfigError(
                f"--address {address}: the cluster wants its authentication token: set RAY_AUTH_MODE=token "
                "and make the token available (~/.ray/auth_token or RAY_AUTH_TOKEN), as on its nodes") from None
        raise ConfigError(f"--address {address}: no Ray cluster there ({one_line(err, 300)}); start one with "
                          "'ray start --head', or leave out --address for an embedded Ray") from None
    try:
        yield _info(address or "", embedded=address is None)
    finally:
        ray.shutdown()


def _info(address: str, *, embedded: bool) -> ClusterInfo:
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    cpus = float(ray.cluster_resources().get("CPU", 0.0))
    return ClusterInfo(address=address, cpus=cpus, nodes=len(nodes), embedded=embedded,
                       client=address.startswith("ray://"))
