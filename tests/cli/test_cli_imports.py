"""The CLI starts light: commands import torch, pandas and Ray only when they run.

Each check runs the command in a fresh interpreter and lists the heavy modules it loaded.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("torch", "sklearn", "numba", "ray", "pandas")


def loaded_after(args: list[str], tmp_path: Path) -> tuple[int, set[str]]:
    """(exit code, heavy modules in sys.modules) after ``qmoe ARGS`` in a fresh interpreter."""
    code = ("import json, sys\nfrom qmoe.cli.main import main\n"
            f"code = main({args!r})\n"
            f"print(json.dumps([code, [m for m in {HEAVY!r} if m in sys.modules]]))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PATH": "/usr/bin:/bin", "QMOE_STORAGE": str(tmp_path)}, check=True)
    exit_code, heavy = json.loads(out.stdout.strip().splitlines()[-1])
    return exit_code, set(heavy)


@pytest.mark.parametrize("args", [["--help"], ["sweep", "--help"], ["sweep", "bits", "--help"],
                                  ["data", "--help"], ["tune", "--help"], ["report", "--help"]])
def test_help_imports_nothing_heavy(tmp_path, args) -> None:
    code, heavy = loaded_after(args, tmp_path)
    assert code == 0 and heavy == set()


def test_status_reads_the_table_without_torch_or_ray(tmp_path) -> None:
    code, heavy = loaded_after(["status", "nope"], tmp_path)
    assert code == 1  # no such sweep, reported as one line
    assert not heavy & {"torch", "sklearn", "numba", "ray"}


def test_sweeps_package_is_lazy() -> None:
    code = "import sys; from qmoe import sweeps; from qmoe.sweeps import parse_folds; print('pandas' in sys.modules, 'ray' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, check=True)
    assert out.stdout.split() == ["False", "False"]
    from qmoe import sweeps

    assert set(sweeps.__all__) <= set(dir(sweeps))
    assert all(getattr(sweeps, name) is not None for name in sweeps.__all__)  # every export resolves
    with pytest.raises(AttributeError):
        sweeps.no_such_name  # noqa: B018
