"""What ``pip install .`` installs: one import name, ``qmoe``, never ``tests`` nor a generic
top-level ``cli``, ``sweeps`` or ``analysis`` that another distribution could also own.

The slow test installs qmoe for real (no network: ``--no-deps --no-build-isolation --no-index``)
into a fresh virtual environment that already holds another distribution's ``cli``, ``sweeps``
and ``analysis`` packages, and runs the ``qmoe`` console script there.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
import sysconfig
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
GENERIC = ("cli", "sweeps", "analysis")


def setup_packages() -> tuple[list[str], dict[str, str]]:
    spec = importlib.util.spec_from_file_location("qmoe_setup", ROOT / "setup.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # __name__ is not __main__: setup() is not called
    return module.packages()


def test_every_package_folder_is_installed_under_qmoe() -> None:
    packages, package_dir = setup_packages()
    assert all(p == "qmoe" or p.startswith("qmoe.") for p in packages), packages
    folders = {}
    for folder in ("qmoe", *GENERIC):
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT)
            name = ".".join(rel.parts) if folder == "qmoe" else ".".join(("qmoe", *rel.parts))
            folders[name] = rel
    assert set(folders) == set(packages)  # nothing left out, nothing else (no tests)
    assert package_dir == {f"qmoe.{g}": g for g in GENERIC}


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, capture_output=True, text=True, timeout=600, **kw)


def _other_distribution(where: Path) -> Path:
    """A distribution ``othergeneric`` owning top-level ``cli``, ``sweeps`` and ``analysis``."""
    for name in GENERIC:
        (where / name).mkdir(parents=True)
        (where / name / "__init__.py").write_text(f'WHO = "other {name}"\n')
    (where / "pyproject.toml").write_text(textwrap.dedent("""\
        [build-system]
        requires = ["setuptools>=68"]
        build-backend = "setuptools.build_meta"

        [project]
        name = "othergeneric"
        version = "1.0"

        [tool.setuptools]
        packages = ["cli", "sweeps", "analysis"]
        """))
    return where


@pytest.mark.slow
def test_pip_install_next_to_another_cli_package(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    assert _run([sys.executable, "-m", "venv", "--without-pip", str(venv)]).returncode == 0
    python = venv / "bin" / "python"
    site = Path(_run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # The dependencies (torch, ray, setuptools, ...) come from this test's environment, after the
    # new environment's own site-packages; its .pth files (our editable install) are not read.
    (site / "zz_deps.pth").write_text(sysconfig.get_path("purelib") + "\n")
    source = tmp_path / "src"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("qmoe", *GENERIC):
        shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    for name in ("setup.py", "pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # no repository folders on the path
    pip = [sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps", "--no-build-isolation",
           "--no-index", "--quiet", "--disable-pip-version-check"]
    for project in (_other_distribution(tmp_path / "other"), source):
        proc = _run([*pip, str(project)], env=env, cwd=tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]

    installed = {line.split(",")[0].split("/")[0]
                 for line in next(site.glob("qmoe-*.dist-info")).joinpath("RECORD").read_text().splitlines()}
    assert {n for n in installed if not n.endswith(".dist-info") and n != ".."} == {"qmoe"}
    assert (site / "qmoe" / "sweeps" / "specs" / "alpha.toml").is_file()
    assert (site / "qmoe" / "sweeps" / "bench" / "table1.toml").is_file()

    other = _run([str(python), "-c", "import cli, sweeps, analysis; print(cli.WHO, sweeps.WHO, analysis.WHO)"],
                 env=env, cwd=tmp_path)
    assert other.stdout.split() == ["other", "cli", "other", "sweeps", "other", "analysis"], other.stderr
    qmoe = venv / "bin" / "qmoe"
    help_ = _run([str(qmoe), "--help"], env=env, cwd=tmp_path)
    assert help_.returncode == 0 and "sweep" in help_.stdout and "tune" in help_.stdout, help_.stderr
    dry = _run([str(qmoe), "sweep", "alpha", "--values", "0.3", "--folds", "1", "--dry-run",
                "--storage", str(tmp_path / "runs")], env=env, cwd=tmp_path)
    assert dry.returncode == 0 and dry.stdout.strip().endswith("2 trials"), dry.stderr[-3000:]
    missing = _run([str(qmoe), "status", "nope", "--storage", str(tmp_path / "runs")], env=env, cwd=tmp_path)
    assert missing.returncode == 1 and missing.stderr.startswith("qmoe: error: no sweep 'nope'"), missing.stderr
    where = _run([str(python), "-c", "import qmoe.cli.main as m; print(m.__file__)"], env=env, cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the installed copy, not the repository
