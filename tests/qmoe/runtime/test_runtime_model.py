"""Which kernels a loaded model runs: the ahead-of-time ones by default, numba's where they
cannot be had (saying why), and ``aot`` / ``jit`` on request; unknown choices are one line."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qmoe.errors import ConfigError
from qmoe.native import aot
from qmoe.runtime import load
from qmoe.runtime.format import write_model_file
from tests.qmoe.runtime.test_runtime_format import mixture


@pytest.fixture()
def model_file(tmp_path: Path) -> Path:
    path = tmp_path / "m.qmoe"
    write_model_file(path, mixture())
    return path


def test_auto_falls_back_to_numba_and_says_why(model_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def unavailable(*args: object, **kwargs: object) -> None:
        raise aot.AotUnavailable("no C compiler here")

    monkeypatch.setattr(aot, "backend", unavailable)
    model = load(model_file)
    assert model.kernels.startswith("numba JIT for ") and model.kernels.endswith(
        "(no ahead-of-time kernels: no C compiler here)")
    with pytest.raises(ConfigError, match=r"^--kernels aot: no C compiler here; or use --kernels jit$"):
        load(model_file, kernels="aot")
    x = np.random.default_rng(0).standard_normal((4, model.in_dim))
    assert np.array_equal(model.predict(x).logits, load(model_file, kernels="jit").predict(x).logits)


def test_an_unknown_choice_is_refused(model_file: Path) -> None:
    with pytest.raises(ConfigError, match=r"^--kernels fast: use one of auto, aot, jit$"):
        load(model_file, kernels="fast")


@pytest.mark.slow
@pytest.mark.skipif(not aot.host_levels(), reason="ahead-of-time kernels are built for x86-64 Linux only")
def test_the_first_use_on_a_machine_builds_them_and_says_so(model_file: Path, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMOE_CACHE", str(tmp_path / "cold"))
    aot.backend.cache_clear()
    told: list[str] = []
    model = load(model_file, announce=told.append)
    level = aot.host_levels()[0].name
    assert told == [f"compiling the kernels for {level} once into "
                    f"{aot.module_path(aot.host_levels()[0]).parent} (~20-60 s)"]
    assert model.kernels == f"ahead-of-time for {level}"
    told.clear()
    aot.backend.cache_clear()
    load(model_file, announce=told.append)
    assert told == []  # built once
    aot.backend.cache_clear()
