"""Compile the drivers ahead of time into one CPython extension module (numba's ``pycc``).

Run by :mod:`qmoe.native.aot` in a child process, never imported by a model::

    NUMBA_CPU_NAME=LEVEL NUMBA_CPU_FEATURES=PATHS python -m qmoe.native.kernels.aot_build LEVEL MODULE DIR

The environment makes :mod:`qmoe.native.target` pick the level's instruction-set paths while
the kernels' modules are imported (their intrinsics are chosen then); the machine code is then
generated for the CPU model ``LEVEL`` (an x86-64 micro-architecture level, whose features LLVM
knows). The module exports the drivers under their own names with fixed array types, and
``paths()``: the paths compiled in (1 = AVX2, 2 = AVX-512 BW), which the loader checks.
"""

from __future__ import annotations

import os
import sys
import warnings

#: ``name: signature`` of every exported driver (arrays C-contiguous, as the callers make them);
#: not the ``*_at`` ones, which only the torch wrappers of a trial call.
EXPORTS = {
    "scratch_bytes": "i8(i8[::1], i8[::1])",
    "mlp": "void(f4[:, ::1], i8[::1], f4[::1], u1[::1], u1[::1], f4[:, ::1])",
    "mixture": "void(f4[:, ::1], i8[::1], f4[::1], u1[::1], i8[::1], u1[::1], f4[:, ::1])",
}


def main(level: str, module: str, out_dir: str) -> None:
    if os.environ.get("NUMBA_CPU_NAME") != level:
        sys.exit(f"aot_build: run with NUMBA_CPU_NAME={level} (set by qmoe.native.aot)")
    with warnings.catch_warnings():  # pycc is deprecated in numba 0.6x, still the AOT path
        warnings.simplefilter("ignore")
        from numba.pycc import CC

    from qmoe.native.kernels import drivers
    from qmoe.native.target import HAS_AVX2, HAS_VPERMW

    compiled_paths = int(HAS_AVX2) | int(HAS_VPERMW) << 1

    def paths() -> int:
        return compiled_paths

    cc = CC(module)
    cc.output_dir = out_dir
    cc.target_cpu = level
    cc.verbose = False
    for name, signature in EXPORTS.items():
        cc.export(name, signature)(getattr(drivers, name).py_func)
    cc.export("paths", "i8()")(paths)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cc.compile()


if __name__ == "__main__":
    if len(sys.argv) != 4:
        sys.exit("usage: python -m qmoe.native.kernels.aot_build LEVEL MODULE DIR")
    main(*sys.argv[1:])
