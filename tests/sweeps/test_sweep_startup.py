"""What the time to the first trial is measured from and to, and how an embedded Ray is started."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import psutil
import pytest

from qmoe.errors import ConfigError
from qmoe.sweeps import RunOptions, alpha_spec, plan_sweep, run_sweep
from qmoe.sweeps import cluster
from qmoe.sweeps.runner import _first_start, _process_start
from qmoe.sweeps.store import SweepStore

ROOT = Path(__file__).resolve().parents[2]


def test_process_start_is_before_the_first_statement_and_not_before_psutils() -> None:
    # psutil adds the start tick to a boot time rounded down to the second: it can only be early.
    code = ("import time; t = time.time()\nimport psutil\nfrom qmoe.sweeps.runner import _process_start\n"
            "print(psutil.Process().create_time(), _process_start(), t)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    coarse, precise, first_statement = map(float, out.stdout.split())
    assert coarse - 0.02 <= precise <= first_statement


def test_process_start_falls_back_to_psutil(monkeypatch) -> None:
    def no_clock_ticks(name):
        raise ValueError(name)

    monkeypatch.setattr("qmoe.sweeps.runner.os.sysconf", no_clock_ticks)
    assert _process_start() == psutil.Process().create_time()
    assert _process_start() <= time.time()


def test_first_start_is_the_earliest_worker_start_time() -> None:
    rows = pd.DataFrame({"started_at": ["2026-01-01T00:00:02.500+00:00", "2026-01-01T00:00:01.250+00:00", ""]})
    assert _first_start(rows) == pd.Timestamp("2026-01-01T00:00:01.250Z").timestamp()
    assert _first_start(rows.iloc[2:]) is None  # no row with a start time
    assert _first_start(rows.iloc[:0]) is None


class FakeRay:
    """Stands in for the ``ray`` module: records how ``ray.init`` was called."""

    def __init__(self) -> None:
        self.init_kwargs: dict | None = None
        self.shut = False

    def is_initialized(self) -> bool:
        return False

    def init(self, **kwargs) -> None:
        self.init_kwargs = kwargs

    def nodes(self) -> list[dict]:
        return [{"Alive": True}]

    def cluster_resources(self) -> dict:
        return {"CPU": 2.0}

    def shutdown(self) -> None:
        self.shut = True


def test_embedded_ray_starts_lean_and_a_cluster_keeps_its_settings(monkeypatch) -> None:
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    with cluster.ray_session(None, env={"A": "1"}) as info:
        assert info.embedded and info.cpus == 2.0
    assert fake.shut
    assert fake.init_kwargs["_system_config"] == cluster.EMBEDDED_SYSTEM_CONFIG
    assert not cluster.EMBEDDED_SYSTEM_CONFIG["enable_worker_prestart"]
    assert fake.init_kwargs["runtime_env"] == {"env_vars": {"A": "1"}} and not fake.init_kwargs["include_dashboard"]
    monkeypatch.setattr(cluster, "check_reachable", lambda address: None)
    with cluster.ray_session("10.0.0.1:6379", env={"A": "1"}):
        pass
    assert "_system_config" not in fake.init_kwargs  # only a Ray this command starts
    assert fake.init_kwargs["address"] == "10.0.0.1:6379"


@pytest.mark.ray
def test_a_trial_function_that_does_not_load_fails_before_anything_is_written(ray_cluster, tmp_path,
                                                                               resolver) -> None:
    plan = plan_sweep(alpha_spec((0.2,)), resolve=resolver)
    for ref in ("tests.sweeps.no_such_module:trial", "tests.sweeps.fakes:no_such_function", "no-colon"):
        with pytest.raises(ConfigError, match="trial function"):
            run_sweep(plan, name="s", options=RunOptions(storage=tmp_path, trial_fn=ref, quiet=True))
        SweepStore(tmp_path, "s").check_new()  # the sweep folder was not created


class SlowFakeRay(FakeRay):
    """A FakeRay whose init takes a while and records the thread it ran in."""

    def __init__(self, fail: bool = False) -> None:
        super().__init__()
        self.fail, self.thread, self.shutdowns = fail, None, 0
        self.up = False

    def is_initialized(self) -> bool:
        return self.up

    def init(self, **kwargs) -> None:
        import threading

        time.sleep(0.2)
        self.thread = threading.current_thread()
        if self.fail:
            raise RuntimeError("raylet did not start")
        self.init_kwargs, self.up = kwargs, True

    def shutdown(self) -> None:
        self.shutdowns += 1
        self.up = False


def test_early_ray_starts_in_a_thread_that_lives_until_the_session_taking_it_over_ends(monkeypatch) -> None:
    fake = SlowFakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    with cluster.early_ray(None, env={"A": "1"}):
        with cluster.ray_session(None, env={"A": "1"}) as info:
            assert info.embedded and fake.up
            # Ray's processes die with the thread that started them: it must still be alive
            assert fake.thread is not None and fake.thread.is_alive()
            assert fake.init_kwargs["_system_config"] == cluster.EMBEDDED_SYSTEM_CONFIG
            assert fake.init_kwargs["runtime_env"] == {"env_vars": {"A": "1"}}
        assert fake.shutdowns == 1 and not fake.thread.is_alive()  # stopped at the session's end
    assert fake.shutdowns == 1 and cluster._early is None


def test_early_ray_is_shut_down_when_the_command_fails_before_the_session(monkeypatch) -> None:
    fake = SlowFakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    with pytest.raises(ConfigError), cluster.early_ray(None, env={}):
        raise ConfigError("sweep name in use")
    assert fake.shutdowns == 1 and not fake.thread.is_alive() and cluster._early is None


def test_early_ray_does_nothing_for_a_dry_run_or_a_cluster(monkeypatch) -> None:
    fake = SlowFakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    with cluster.early_ray(None, env={}, enabled=False), cluster.early_ray("auto", env={}):
        assert cluster._early is None
    assert fake.init_kwargs is None and fake.shutdowns == 0


def test_a_failed_early_start_is_raised_by_the_session(monkeypatch) -> None:
    fake = SlowFakeRay(fail=True)
    monkeypatch.setitem(sys.modules, "ray", fake)
    with cluster.early_ray(None, env={}):
        with pytest.raises(RuntimeError, match="raylet"), cluster.ray_session(None, env={}):
            pass
    assert fake.shutdowns == 0 and cluster._early is None


def test_a_sweep_command_plans_its_sweep_without_torch(tmp_path) -> None:
    # The driver never runs a trial: checking the spec's quantizer names, loading the synth
    # table and checking the default trial function must leave torch (and sklearn) unloaded,
    # so that their ~2 s of CPU and ~600 MB do not compete with Ray's start.
    code = textwrap.dedent(f"""
        import sys
        from qmoe.sweeps import alpha_spec, bits_spec, paper_spec, plan_sweep, RunOptions
        from qmoe.sweeps.overrides import apply_overrides
        from qmoe.data.datasets import resolve_table
        bits_spec((1, 4, 16)); alpha_spec((0.2,), ("bitnet", "q4", "ptq8")); paper_spec()
        plan = plan_sweep(apply_overrides(bits_spec((4,)), folds=(1,)))
        RunOptions(storage={str(tmp_path)!r}).resolved_trial_fn()
        print(len(plan.trials), sorted(m for m in ("torch", "sklearn", "scipy", "numba") if m in sys.modules))
    """)
    env = dict(os.environ, QMOE_CACHE=str(tmp_path / "cache"))
    env.pop("QMOE_TRIAL_FN", None)
    subprocess.run([sys.executable, "-c", "from qmoe.data.datasets import resolve_table; resolve_table('synth')"],
                   cwd=ROOT, env=env, check=True, capture_output=True)  # the table is built (with torch) first
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=env, check=True)
    assert out.stdout.split(maxsplit=1) == ["4", "[]\n"]


def test_the_default_trial_function_is_looked_up_not_imported(monkeypatch) -> None:
    from qmoe.sweeps import trial_fn

    imported = []
    monkeypatch.setattr(trial_fn, "resolve_trial_fn", lambda ref: imported.append(ref))
    trial_fn.check_trial_fn(trial_fn.DEFAULT_TRIAL_FN)
    assert imported == []
    trial_fn.check_trial_fn("tests.sweeps.fakes:fast_trial")
    assert imported == ["tests.sweeps.fakes:fast_trial"]  # any other reference is loaded
    monkeypatch.setattr(trial_fn.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ConfigError, match="'qmoe.trial:run_trial' cannot be loaded: its module is not installed"):
        trial_fn.check_trial_fn(trial_fn.DEFAULT_TRIAL_FN)
