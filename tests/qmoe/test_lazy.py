"""qmoe.lazy: names load on first use, are cached, and unknown names raise AttributeError."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from qmoe.lazy import lazy_exports


def test_names_load_on_first_use_and_are_cached() -> None:
    ns: dict = {}
    getattr_, dir_, all_ = lazy_exports("qmoe", {"errors": ("QmoeError",)}, ns)
    assert all_ == ["QmoeError"]
    assert "QmoeError" in dir_() and "QmoeError" not in ns
    from qmoe.errors import QmoeError

    assert getattr_("QmoeError") is QmoeError
    assert ns["QmoeError"] is QmoeError
    with pytest.raises(AttributeError, match="module 'qmoe' has no attribute 'nope'"):
        getattr_("nope")


def test_packages_import_nothing_heavy_until_asked() -> None:
    code = ("import sys, qmoe.sweeps as sweeps, qmoe.data\n"
            "print(sorted(m for m in ('torch', 'ray', 'pandas') if m in sys.modules))\n"
            "sweeps.parse_folds\n"
            "print('qmoe.sweeps.parse' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split("\n")[:2] == ["[]", "True"]
    assert isinstance(sys.modules["qmoe.lazy"], types.ModuleType)
