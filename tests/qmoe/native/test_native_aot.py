"""The drivers compiled ahead of time: every layout of every level this CPU runs, bit for bit
against numpy and against numba's drivers; a process that loads them loads no numba or LLVM;
a failed build or a damaged module is one line and never half-written.

Built once per test session into the session's ``QMOE_CACHE`` (a cold cache: the real first
use). The best level of this CPU and the portable x86-64 build run by default; the levels in
between are marked slow. ``make test-kernels`` reruns this folder with numba compiling for
other CPUs, but not this file: the ahead-of-time build does not depend on numba's target.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

from qmoe.native import NativeMixture, NativeMLP, aot
from qmoe.native import layout as L
from qmoe.native.layers import layouts
from tests.qmoe.native.native_cases import VALUES, make_mlp, reference
from tests.qmoe.native.test_native_mixture import _mixture

LEVELS = aot.host_levels()
pytestmark = [
    pytest.mark.skipif(not LEVELS, reason="ahead-of-time kernels are built for x86-64 Linux only"),
    pytest.mark.skipif(aot.c_compiler() is None, reason="no C compiler to build them (the fallback is tested "
                       "in tests/qmoe/runtime/test_runtime_model.py)"),
]
#: Built by default: the best level here and the portable one; the others are slow.
DEFAULT = {LEVELS[0].name, "x86-64"} if LEVELS else set()
LEVEL_PARAMS = [pytest.param(lv.name, marks=() if lv.name in DEFAULT else pytest.mark.slow) for lv in LEVELS]


@pytest.fixture(scope="module", params=LEVEL_PARAMS)
def backend(request: pytest.FixtureRequest) -> aot.Backend:
    return aot.backend(request.param)


def _codes(kind: str, backend: aot.Backend) -> list[int]:
    canonical = "int8" if kind == "int4" else kind
    weight = np.zeros((1, 1)) if kind == "int4" else np.full((1, 1), 100)
    return layouts(canonical, weight if canonical == "int8" else None, backend)


def test_host_levels_follow_the_cpuinfo_flags() -> None:
    v3 = "cx16 lahf_lm popcnt sse4_1 sse4_2 ssse3 avx avx2 bmi1 bmi2 f16c fma abm movbe xsave"
    v4 = v3 + " avx512f avx512bw avx512cd avx512dq avx512vl"
    names = lambda text: [lv.name for lv in aot.host_levels(text)]  # noqa: E731
    assert names(f"processor\t: 0\nflags\t\t: fpu {v4}\n") == ["x86-64-v4", "x86-64-v3", "x86-64"]
    assert names(f"flags\t: {v3} avx512f avx512cd\n") == ["x86-64-v3", "x86-64"]  # no BW: not v4
    assert names(f"flags\t: {v3.replace('movbe', '')}\n") == ["x86-64"]
    # every processor must have a flag (a heterogeneous machine runs the common level)
    assert names(f"flags\t: {v4}\n\nflags\t: {v3}\n") == ["x86-64-v3", "x86-64"]
    assert names("model name\t: something else\n") == []


@pytest.mark.parametrize("kind", list(VALUES))
def test_every_layout_equals_numpy_and_numba(backend: aot.Backend, kind: str) -> None:
    for code in _codes(kind, backend):
        layers = make_mlp(kind, (200, 96, 48, 10), seed=3)
        native = NativeMLP(layers, [code] * len(layers), backend=backend)
        assert set(native.layouts) == {L.KIND_NAMES[code]}
        rng = np.random.default_rng(1)
        x = rng.standard_normal((6, 200)).astype(np.float32) * rng.uniform(0.01, 100, (6, 1)).astype(np.float32)
        x[0] = 0.0
        got = native(x)
        assert np.array_equal(got, reference(layers, x)), L.KIND_NAMES[code]
        jit = NativeMLP(layers, [code] * len(layers))
        assert np.array_equal(got.view(np.uint32), jit(x).view(np.uint32)), L.KIND_NAMES[code]


@pytest.mark.parametrize("curiosity", ["kl", "entropy"])
def test_the_mixture_equals_numbas_bit_for_bit(backend: aot.Backend, curiosity: str) -> None:
    jit = _mixture(0.3, top_k=2, curiosity=curiosity)
    mix = NativeMixture([list(e) for e in jit.experts], jit.router, alpha=0.3, top_k=2, curiosity=curiosity,
                        backend=backend)
    x = np.random.default_rng(2).standard_normal((9, jit.in_dim)).astype(np.float32)
    got, want = mix(x), jit(x)
    for field in ("logits", "p", "p_cur", "uncertainty", "kl", "selected"):
        assert np.array_equal(getattr(got, field), getattr(want, field)), field
    assert got.lb_loss == want.lb_loss


def test_a_process_running_them_loads_no_numba_nor_llvm(backend: aot.Backend) -> None:
    level = backend.name.rsplit(" ", 1)[1]
    code = textwrap.dedent(f"""
        import sys
        import numpy as np
        from qmoe.native import NativeMLP, aot
        from tests.qmoe.native.native_cases import make_mlp
        b = aot.backend({level!r}, build=False)
        out = NativeMLP(make_mlp("ternary", (40, 8, 3)), backend=b)(np.ones((2, 40), np.float32))
        assert out.shape == (2, 3) and np.isfinite(out).all()
        print(sorted(m for m in ("numba", "llvmlite", "torch") if m in sys.modules))
    """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "[]"


def test_a_damaged_module_is_refused_in_one_line(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMOE_CACHE", str(tmp_path))
    aot.backend.cache_clear()
    level = aot.level_named("x86-64")
    path = aot.module_path(level)
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not an extension module")
    with pytest.raises(aot.AotUnavailable, match=r"cannot be loaded .*delete it to rebuild") as err:
        aot.backend("x86-64", build=False)
    assert "\n" not in str(err.value)
    path.unlink()
    with pytest.raises(aot.AotUnavailable, match="not built yet"):
        aot.backend("x86-64", build=False)
    aot.backend.cache_clear()


def test_a_failed_build_is_one_line_and_leaves_nothing(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMOE_CACHE", str(tmp_path))
    aot.backend.cache_clear()
    fake = tmp_path / "fake-python"
    fake.write_text("#!/bin/sh\necho 'Traceback (most recent call last):' >&2\necho 'boom: no compiler' >&2\nexit 3\n")
    fake.chmod(0o755)
    monkeypatch.setattr(aot.sys, "executable", str(fake))
    with pytest.raises(aot.AotUnavailable, match=r"compiling the kernels for x86-64 failed: boom: no compiler$"):
        aot.backend("x86-64")
    folder = aot.module_path(aot.level_named("x86-64")).parent
    assert list(folder.iterdir()) == []  # no module, no temporary build folder
    aot.backend.cache_clear()


def test_without_a_c_compiler_nothing_is_attempted(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QMOE_CACHE", str(tmp_path))
    monkeypatch.setenv("CC", "no-such-compiler-here")
    aot.backend.cache_clear()
    with pytest.raises(aot.AotUnavailable, match=r"^no C compiler to build them with \(install gcc, or set CC\)$"):
        aot.backend("x86-64")
    assert not (tmp_path / "kernels").exists()
    aot.backend.cache_clear()


def test_a_level_this_cpu_cannot_run_or_an_unknown_one_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    aot.backend.cache_clear()
    monkeypatch.setattr(aot, "host_levels", lambda cpuinfo=None: (aot.level_named("x86-64"),))
    with pytest.raises(aot.AotUnavailable, match="cannot run x86-64-v3 code"):
        aot.backend("x86-64-v3")
    with pytest.raises(aot.AotUnavailable, match="unknown level 'v9'"):
        aot.backend("v9")
    aot.backend.cache_clear()
