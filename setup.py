"""Which packages the ``qmoe`` distribution installs (the rest of the metadata is in pyproject.toml).

One import name, ``qmoe``: the science core from ``qmoe/``, and the orchestration, analysis
and command-line folders of the repository's top level installed *inside* it, as
``qmoe.sweeps`` (``sweeps/``), ``qmoe.analysis`` (``analysis/``) and ``qmoe.cli`` (``cli/``).
So nothing qmoe installs can collide with another distribution's ``cli``, ``sweeps`` or
``analysis``, and ``tests/`` is not installed at all. New sub-packages of these folders are
found here without listing them.
"""

from setuptools import find_packages, setup

#: Top-level folder -> the name it is installed (and imported) under.
FOLDERS = {"sweeps": "qmoe.sweeps", "analysis": "qmoe.analysis", "cli": "qmoe.cli"}


def packages() -> tuple[list[str], dict[str, str]]:
    """Every package to install, and where the remapped ones live in the repository."""
    found = find_packages(include=["qmoe", "qmoe.*"])
    package_dir = {}
    for folder, name in FOLDERS.items():
        package_dir[name] = folder
        found += [name] + [f"{name}.{sub}" for sub in find_packages(where=folder)]
    return sorted(found), package_dir


if __name__ == "__main__":  # setuptools runs this file as __main__; tests import packages()
    _packages, _package_dir = packages()
    setup(packages=_packages, package_dir=_package_dir)
