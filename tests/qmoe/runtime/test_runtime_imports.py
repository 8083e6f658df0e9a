"""``qmoe.runtime`` (and the native code it runs) names no heavy package anywhere in its source:
not only at import time, but in every function (a lazy ``import torch`` would count too)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.test_layering import imported_modules

ROOT = Path(__file__).resolve().parents[3]
HEAVY = {"torch", "pandas", "sklearn", "ray", "scipy", "typer", "rich"}


@pytest.mark.parametrize("package", ["qmoe/runtime", "qmoe/native"])
def test_runtime_source_imports_nothing_heavy(package: str) -> None:
    bad = {str(p.relative_to(ROOT)): sorted({m.split(".")[0] for m in imported_modules(p)} & HEAVY)
           for p in sorted((ROOT / package).rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}


def test_runtime_imports_within_qmoe_stay_torch_free() -> None:
    """Every ``qmoe.*`` module the runtime names is itself in the torch-free set."""
    allowed = ("qmoe.runtime", "qmoe.native", "qmoe.errors")
    for path in sorted((ROOT / "qmoe" / "runtime").rglob("*.py")):
        for name in imported_modules(path):
            if name.startswith("qmoe.") or name == "qmoe":
                assert name.startswith(allowed), f"{path.name} imports {name}"
