"""SIGKILL the driver of ``qmoe sweep`` mid-sweep, then ``qmoe resume``: nothing lost or re-run."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.ray


def qmoe(*args: str, env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "cli.main", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def rows(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except (FileNotFoundError, OSError):
        return pd.DataFrame(columns=["trial_key", "status", "started_at"])


def test_sigkill_mid_sweep_then_resume(ray_cluster, synth_table, tmp_path) -> None:
    log = tmp_path / "trials.log"
    env = {**os.environ, "QMOE_TRIAL_FN": "tests.sweeps.fakes:fast_trial", "QMOE_FAKE_SECONDS": "1.0",
           "QMOE_FAKE_LOG": str(log)}
    common = ["--storage", str(tmp_path / "runs"), "--address", ray_cluster]
    results = tmp_path / "runs" / "killed" / "results.parquet"
    driver = qmoe("sweep", "alpha", "--values", "0.3", "--name", "killed", *common, env=env)  # 2 x 5 = 10
    try:
        deadline = time.time() + 120
        while len(rows(results)) < 3:
            assert driver.poll() is None, driver.communicate()
            assert time.time() < deadline, "no rows within 120 s"
            time.sleep(0.2)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
    finally:
        if driver.poll() is None:
            driver.kill()
    before = rows(results)
    assert 3 <= len(before) < 10 and (before["status"] == "ok").all()
    time.sleep(1.0)  # let the killed job's workers wind down before counting what ran

    runs_before = Counter(line.split()[0] for line in log.read_text().splitlines() if line.endswith("start"))
    resume = qmoe("resume", "killed", *common, env=env)
    out, err = resume.communicate(timeout=300)
    assert resume.returncode == 0, err
    after = rows(results)
    assert len(after) == 10 and after["trial_key"].is_unique and (after["status"] == "ok").all()
    # finished trials were not re-run: same start time, started exactly once over both commands
    merged = before.set_index("trial_key")["started_at"]
    assert (after.set_index("trial_key").loc[merged.index, "started_at"] == merged).all()
    starts = Counter(line.split()[0] for line in log.read_text().splitlines() if line.endswith("start"))
    assert all(starts[k] == 1 for k in merged.index)
    assert sum(starts.values()) - sum(runs_before.values()) == 10 - len(before)
    assert "10 ok, 0 errors, 0 pending" in err
