"""Paths, names and spec values never reach a shell; a sweep name cannot escape its storage.

No code of qmoe, sweeps, cli or analysis runs a shell (``shell=True``, ``os.system``,
``os.popen``, ``subprocess.getoutput``...): subprocesses get argument lists. Sweep names are
one path component (tests/sweeps/test_sweep_store.py::test_names_cannot_escape, and every
command in tests/cli/test_cli_bad_inputs.py), and storage paths full of shell syntax work as
plain folder names.
"""

from __future__ import annotations

import ast
import functools
from pathlib import Path

import pytest

from qmoe.sweeps import RunOptions, alpha_spec, plan_sweep, run_sweep
from qmoe.sweeps.overrides import apply_overrides
from tests.sweeps.fakes import fast_trial

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("qmoe", "sweeps", "cli", "analysis")
SHELL_CALLS = {("os", "system"), ("os", "popen"), ("os", "execlp"), ("subprocess", "getoutput"),
               ("subprocess", "getstatusoutput"), ("pty", "spawn")}
SUBPROCESS = {"run", "Popen", "call", "check_call", "check_output"}


def sources() -> list[Path]:
    return [p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))]


def shell_uses(path: Path) -> list[tuple[int, str]]:
    """Calls in ``path`` that would hand a string to a shell, as ``(line, code)``."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        name = (func.value.id, func.attr) if isinstance(func, ast.Attribute) and isinstance(func.value, ast.Name) else None
        bad = name in SHELL_CALLS
        bad |= any(k.arg == "shell" and not (isinstance(k.value, ast.Constant) and k.value.value is False)
                   for k in node.keywords)
        # a command given as one string (an f-string or a literal) instead of an argument list
        bad |= bool(name and name[0] == "subprocess" and name[1] in SUBPROCESS and node.args
                    and isinstance(node.args[0], (ast.JoinedStr, ast.Constant, ast.BinOp)))
        if bad:
            found.append((node.lineno, ast.unparse(node)[:120]))
    return found


def test_no_shell_anywhere() -> None:
    files = sources()
    assert len(files) > 40  # the scan sees the code
    uses = [f"{p.relative_to(ROOT)}:{line}: {code}" for p in files for line, code in shell_uses(p)]
    assert not uses, "\n".join(uses)
    text = "\n".join(p.read_text() for p in files)  # and the plain grep, for anything AST misses
    for needle in ("shell=True", "os.system(", "os.popen(", "getoutput("):
        assert needle not in text, needle


def test_the_scan_catches_shell_calls(tmp_path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import os, subprocess\nos.system('ls ' + x)\nsubprocess.run(f'ls {x}', shell=True)\n"
                   "subprocess.run(['ls', x], shell=flag)\nsubprocess.check_output('ls')\n"
                   "subprocess.run(['ls', x])\n")
    assert [line for line, _ in shell_uses(bad)] == [2, 3, 4, 5]


@pytest.mark.ray
def test_storage_paths_with_shell_syntax_are_plain_folders(ray_cluster, tmp_path, resolver, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    plan = plan_sweep(apply_overrides(alpha_spec((0.3,), baseline=False), folds=(1,)), resolve=resolver)
    fn = functools.partial(fast_trial, seconds=0.01)
    for weird in ("a b;$(touch PWNED)`touch PWNED`", "100%20#x?q=1:é"):
        out = run_sweep(plan, name="s", options=RunOptions(storage=tmp_path / weird, trial_fn=fn, quiet=True))
        assert out.ok == 1 and out.path == tmp_path / weird / "s"
        assert (tmp_path / weird / "s" / "results.parquet").is_file()
    assert not list(tmp_path.rglob("PWNED*"))
