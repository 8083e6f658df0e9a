"""The drivers compiled ahead of time: deployed models run with neither numba nor LLVM loaded.

The just-in-time backend (:func:`qmoe.native.kernels.load`) brings numba and LLVM into the
process, ~100 MB of shared-library and compiler memory before any model loads, even when every
driver comes from numba's disk cache. Here the same drivers (:mod:`.kernels.drivers`, the same
source, so the same outputs bit for bit) are compiled once per machine by numba's ahead-of-time
compiler, in a child process (:mod:`.kernels.aot_build`), into a CPython extension module that
needs only numpy; later processes load that module and nothing else.

The module is compiled for an x86-64 micro-architecture level, not for the host's CPU name:

============  =========================================================  =====================
level         requires (``/proc/cpuinfo`` flags)                         kernel paths
============  =========================================================  =====================
x86-64-v4     x86-64-v3 and avx512f, avx512bw, avx512cd, avx512dq,       AVX-512 BW and AVX2
              avx512vl
x86-64-v3     x86-64-v2 and avx, avx2, bmi1, bmi2, f16c, fma, abm         AVX2
              (lzcnt), movbe, xsave
x86-64        (any x86-64)                                               portable
============  =========================================================  =====================

(x86-64-v2: cx16, lahf_lm, popcnt, sse4_1, sse4_2, ssse3.) :func:`host_levels` reads the flags
the kernel reports; the best level is used. Elsewhere (another OS or architecture) there is no
ahead-of-time backend and :class:`AotUnavailable` says so; callers fall back to numba.

Built modules live in ``$QMOE_CACHE/kernels/LEVEL-KEY/`` (default ``~/.cache/qmoe``), where KEY
is a digest of the drivers' sources, the numba version and the Python ABI: any change builds a
new module. A build writes into a private temporary folder and renames the finished file into
place, so a killed build leaves nothing that is ever loaded.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import platform
import shutil
import subprocess
import sys
import sysconfig
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from qmoe.cache_root import default_cache_dir
from qmoe.errors import QmoeError
from qmoe.native.kernels import Backend
from qmoe.native.kernels.sources import sources_sha256

_V2 = ("cx16", "lahf_lm", "popcnt", "sse4_1", "sse4_2", "ssse3")
_V3 = _V2 + ("avx", "avx2", "bmi1", "bmi2", "f16c", "fma", "abm", "movbe", "xsave")
_V4 = _V3 + ("avx512f", "avx512bw", "avx512cd", "avx512dq", "avx512vl")
#: Seconds a build may take before it is abandoned (a cold build takes ~20-60 s).
BUILD_TIMEOUT_S = 900


@dataclass(frozen=True)
class Level:
    """An x86-64 micro-architecture level the drivers are compiled for."""

    name: str
    flags: tuple[str, ...]  # /proc/cpuinfo flags a CPU needs to run it
    avx2: bool
    vpermw: bool

    @property
    def module(self) -> str:
        return "qmoe_kernels_" + self.name.replace("-", "_")

    @property
    def numba_features(self) -> str:
        """``NUMBA_CPU_FEATURES`` that makes :mod:`qmoe.native.target` pick this level's paths."""
        return ",".join(f for f, on in (("+avx2", self.avx2), ("+avx512bw", self.vpermw)) if on)


#: Best first.
LEVELS = (Level("x86-64-v4", _V4, True, True), Level("x86-64-v3", _V3, True, False),
          Level("x86-64", (), False, False))


class AotUnavailable(QmoeError):
    """No ahead-of-time backend here; the message says why (one line)."""


def host_levels(cpuinfo: str | None = None) -> tuple[Level, ...]:
    """The levels this CPU runs, best first (from ``cpuinfo``, default ``/proc/cpuinfo``);
    empty where the machine is not x86-64 Linux."""
    if cpuinfo is None:
        if sys.platform != "linux" or platform.machine() not in ("x86_64", "AMD64"):
            return ()
        try:
            cpuinfo = Path("/proc/cpuinfo").read_text()
        except OSError:
            return ()
    flags: set[str] | None = None
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags = set(value.split()) if flags is None else flags & set(value.split())
    if flags is None:
        return ()
    return tuple(level for level in LEVELS if flags.issuperset(level.flags))


def c_compiler() -> str | None:
    """The C compiler numba's ahead-of-time build will call (``$CC``, else Python's own), if
    it is installed; None if not (the build needs one for numba's small C runtime helpers)."""
    command = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shutil.which(command.split()[0]) if command.split() else None


def level_named(name: str) -> Level:
    for level in LEVELS:
        if level.name == name:
            return level
    raise AotUnavailable(f"unknown level {name!r}; use one of {', '.join(lv.name for lv in LEVELS)}")


def module_path(level: Level, root: Path | None = None) -> Path:
    """Where the module of ``level`` for these sources, this numba and this Python lives."""
    suffix = sysconfig.get_config_var("EXT_SUFFIX") or ".so"
    key = hashlib.sha256("\0".join((
        sources_sha256(("kernels/drivers.py", "kernels/aot_build.py")), metadata.version("numba"),
        suffix, platform.machine())).encode()).hexdigest()[:16]
    root = default_cache_dir() if root is None else root
    return root / "kernels" / f"{level.name}-{key}" / (level.module + suffix)


@lru_cache(maxsize=None)
def backend(level: str | None = None, *, build: bool = True,
            announce: Callable[[str], None] | None = None) -> Backend:
    """The ahead-of-time backend for ``level`` (default: the best this CPU runs), compiled
    first if it is not in the cache yet and ``build`` (``announce`` is told before a build).

    Raises:
        AotUnavailable: no level here, the CPU cannot run ``level``, no C compiler to build
            with, or the build failed.
    """
    levels = host_levels()
    if not levels:
        raise AotUnavailable("ahead-of-time kernels are built for x86-64 Linux only")
    chosen = levels[0] if level is None else level_named(level)
    if chosen not in levels:
        raise AotUnavailable(f"this CPU cannot run {chosen.name} code (it runs {levels[0].name})")
    path = module_path(chosen)
    if not path.exists():
        if not build:
            raise AotUnavailable(f"the kernels for {chosen.name} are not built yet ({path})")
        if c_compiler() is None:
            raise AotUnavailable("no C compiler to build them with (install gcc, or set CC)")
        if announce is not None:
            announce(f"compiling the kernels for {chosen.name} once into {path.parent} (~20-60 s)")
        _build(chosen, path)
    module = _load(chosen, path)
    return Backend(name=f"ahead-of-time for {chosen.name}", avx2=chosen.avx2, vpermw=chosen.vpermw,
                   drivers=module)


def _build(level: Level, path: Path) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=path.parent))
    except OSError as err:
        raise AotUnavailable(f"cannot write {path.parent} ({err.strerror}); set QMOE_CACHE to a "
                             "writable folder") from None
    try:
        env = {**os.environ, "NUMBA_CPU_NAME": level.name, "NUMBA_CPU_FEATURES": level.numba_features}
        try:
            proc = subprocess.run(
                [sys.executable, "-m", "qmoe.native.kernels.aot_build", level.name, level.module, str(tmp)],
                env=env, capture_output=True, text=True, timeout=BUILD_TIMEOUT_S, check=False)
        except subprocess.TimeoutExpired:
            raise AotUnavailable(f"compiling the kernels for {level.name} took over "
                                 f"{BUILD_TIMEOUT_S} s; gave up") from None
        built = tmp / path.name
        if proc.returncode != 0 or not built.exists():
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            raise AotUnavailable(f"compiling the kernels for {level.name} failed: "
                                 f"{lines[-1].strip() if lines else f'exit code {proc.returncode}'}")
        os.replace(built, path)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _load(level: Level, path: Path) -> object:
    spec = importlib.util.spec_from_file_location(level.module, path)
    try:
        if spec is None or spec.loader is None:
            raise ImportError("not an extension module")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        paths = module.paths()
    except (ImportError, AttributeError) as err:
        raise AotUnavailable(f"{path} cannot be loaded ({err}); delete it to rebuild") from None
    if paths != int(level.avx2) | int(level.vpermw) << 1:
        raise AotUnavailable(f"{path} was compiled with other kernel paths ({paths}); delete it to rebuild")
    return module
