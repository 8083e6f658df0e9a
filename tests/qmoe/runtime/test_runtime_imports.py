"""``qmoe.runtime`` (and the native code it runs) names no heavy package anywhere in its source:
not only at import time, but in every function (a lazy ``import torch`` would count too)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from tests.test_layering import imported_roots

ROOT = Path(__file__).resolve().parents[3]
HEAVY = {"torch", "pandas", "sklearn", "ray", "scipy", "typer", "rich"}


@pytest.mark.parametrize("package", ["qmoe/runtime", "qmoe/native"])
def test_runtime_source_imports_nothing_heavy(package: str) -> None:
    bad = {str(p.relative_to(ROOT)): sorted(imported_roots(p) & HEAVY) for p in sorted((ROOT / package).rglob("*.py"))}
    assert not {k: v for k, v in bad.items() if v}


def test_runtime_imports_within_qmoe_stay_torch_free() -> None:
    """Every ``qmoe.*`` module the runtime names is itself in the torch-free set."""
    allowed = ("qmoe.runtime", "qmoe.native", "qmoe.errors")
    for path in sorted((ROOT / "qmoe" / "runtime").rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 else [])
            for name in names:
                if name.startswith("qmoe.") or name == "qmoe":
                    assert name.startswith(allowed), f"{path.name} imports {name}"
