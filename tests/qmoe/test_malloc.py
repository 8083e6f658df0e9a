"""qmoe.malloc: the glibc settings are applied once and really keep freed blocks for reuse."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from qmoe.malloc import MALLOC_ENV, keep_freed_memory

# Allocate a 40 MB block; print whether glibc served it from the heap (brk) or a fresh mmap.
_PROBE = """
import sys
import numpy as np
from qmoe.malloc import keep_freed_memory
if sys.argv[1] == "on":
    assert keep_freed_memory()
a = np.ones(5 << 20)  # 40 MB: above the largest mmap threshold glibc adapts to (32 MB)
heap = [l.split()[0] for l in open("/proc/self/maps") if l.rstrip().endswith("[heap]")]
lo, hi = (int(v, 16) for v in heap[0].split("-"))
print(lo <= a.ctypes.data < hi)
"""


def _from_heap(mode: str) -> bool:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")}
    out = subprocess.run([sys.executable, "-c", _PROBE, mode], env=env, capture_output=True,
                         text=True, check=True)
    return out.stdout.strip() == "True"


def test_keep_freed_memory_is_idempotent() -> None:
    first = keep_freed_memory()
    assert isinstance(first, bool)
    assert keep_freed_memory() is first


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc mallopt")
def test_settings_keep_large_blocks_in_the_heap() -> None:
    # default glibc: a 40 MB block is its own mmap, returned to the OS (and faulted in again)
    # at every free; with the settings it comes from the heap, which keeps freed memory
    assert not _from_heap("off")
    assert _from_heap("on")


def test_env_matches_the_makefile() -> None:
    makefile = open(os.path.join(os.path.dirname(__file__), "..", "..", "Makefile")).read()
    for key, value in MALLOC_ENV.items():
        assert f"export {key} ?= {value}" in makefile
