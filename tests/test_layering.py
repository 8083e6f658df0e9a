"""Imports only go down: cli -> sweeps, analysis -> qmoe (DESIGN §1).

The folders ``sweeps/``, ``analysis/`` and ``cli/`` are installed inside the ``qmoe`` name
(``qmoe.sweeps``, ``qmoe.analysis``, ``qmoe.cli``; see setup.py), so each layer is a folder
of the repository and an import prefix; the science core is ``qmoe`` without those three.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
UPPER = ("qmoe.sweeps", "qmoe.analysis", "qmoe.cli")
#: folder -> import prefixes its modules must not import.
FORBIDDEN = {
    "qmoe": ("ray", "typer", "rich", *UPPER),
    "sweeps": ("qmoe.cli", "qmoe.analysis"),
    "analysis": ("qmoe.sweeps", "qmoe.cli", "ray"),
}
#: The folders' own names are not importable once installed: nothing may import them bare.
BARE = ("sweeps", "analysis", "cli")


def imported_modules(path: Path) -> set[str]:
    """Every module an absolute import in ``path`` names (``from a import b`` names a and a.b)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
    return names


def hits(modules: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_package_imports_only_downwards(package: str) -> None:
    bad = {}
    for path in sorted((ROOT / package).rglob("*.py")):
        found = hits(imported_modules(path), FORBIDDEN[package])
        if found:
            bad[str(path.relative_to(ROOT))] = found
    assert not bad, f"{package} imports upwards or sideways: {bad}"


def test_nothing_imports_the_folders_by_their_bare_names() -> None:
    bad = {}
    for folder in ("qmoe", *BARE, "tests"):
        for path in sorted((ROOT / folder).rglob("*.py")):
            found = hits(imported_modules(path), BARE)
            if found:
                bad[str(path.relative_to(ROOT))] = found
    assert not bad, f"import these as qmoe.sweeps, qmoe.analysis, qmoe.cli: {bad}"


def test_layering_checker_catches_a_bad_import(tmp_path: Path) -> None:
    bad = tmp_path / "m.py"
    bad.write_text("import os\nfrom ray import tune\nfrom qmoe import sweeps\nimport cli.main\n")
    modules = imported_modules(bad)
    assert hits(modules, FORBIDDEN["qmoe"]) == ["qmoe.sweeps", "ray", "ray.tune"]
    assert hits(modules, BARE) == ["cli.main"]


def test_import_qmoe_does_not_load_ray() -> None:
    code = "import sys, qmoe.trial, qmoe.data.datasets; print('ray' in sys.modules, 'typer' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
