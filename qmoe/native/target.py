"""The CPU the kernels are compiled for, and the instruction-set paths that follows from it.

numba compiles for ``NUMBA_CPU_NAME`` / ``NUMBA_CPU_FEATURES`` where they are set, else for the
host; :func:`target_cpu` reads the same settings the same way, so a layout chosen here always
matches the machine code that runs it (numba's cache is keyed by the same name and features).
The flags below pick, per kernel, the widest path the target has:

==================  ==========================================  ==============================
flag                instructions                                used by
==================  ==========================================  ==============================
:data:`HAS_VNNI`    AVX-512 VNNI ``vpdpbusd``                   int8 dots, several rows at once
:data:`HAS_VPERMW`  AVX-512 BW ``vpermw``                       bit-plane tables, 5 inputs
:data:`HAS_AVX2`    AVX2 ``vpshufb``, ``vpmaddubsw``, ``vpsignb``  bit-plane tables, 4 inputs;
                                                                int8 and int4 dots; int8, int4
                                                                and fp32 dots of several rows
                                                                (16 fp32 outputs a block)
:data:`HAS_AVX512`  AVX-512 F (32 vector registers)             fp32 dots, several rows at once
                                                                (64 outputs a block)
(neither)           portable LLVM IR                            AND + popcount; plain loops
==================  ==========================================  ==============================

This module imports no numba (only llvmlite, and only when numba is installed), so the layout
code can ask for the paths without compiling anything.
"""

from __future__ import annotations

import os
from functools import lru_cache


@lru_cache(maxsize=1)
def target_cpu() -> tuple[str, frozenset[str]]:
    """The CPU name numba compiles for and its enabled features (``"avx2"``, ...).

    An empty ``NUMBA_CPU_FEATURES`` leaves the features to the CPU name, which LLVM knows and
    this function does not: none are reported then, so every kernel takes its portable path
    (correct, only slower). Without numba: ``("", frozenset())``.
    """
    try:
        import llvmlite.binding as llvm
    except ImportError:  # pragma: no cover - numba (and llvmlite) are dependencies
        return "", frozenset()
    name = os.environ.get("NUMBA_CPU_NAME") or llvm.get_host_cpu_name()
    features = os.environ.get("NUMBA_CPU_FEATURES")
    if features is None:
        features = llvm.get_host_cpu_features().flatten()
    return name, frozenset(f[1:] for f in features.split(",") if f.startswith("+"))


#: AVX-512 VNNI: the int8 dots by ``vpdpbusd`` (64 products summed into int32 per instruction).
HAS_VNNI = "avx512vnni" in target_cpu()[1]
#: AVX-512 BW: the 5-input table kernel (``vpermw``, 32 int16 lookups per instruction).
HAS_VPERMW = "avx512bw" in target_cpu()[1]
#: AVX2: the 4-input table kernel (``vpshufb``) and the int8 dots (``vpmaddubsw``).
HAS_AVX2 = "avx2" in target_cpu()[1]
#: AVX-512 F: 32 registers of 16 float32, room for the fp32 batch kernel's 16 accumulators.
HAS_AVX512 = "avx512f" in target_cpu()[1]
