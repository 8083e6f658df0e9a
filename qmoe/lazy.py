"""Lazy package exports (PEP 562): ``from pkg import name`` imports only the module defining it."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Mapping
from typing import Any


def lazy_exports(package: str, modules: Mapping[str, Iterable[str]], namespace: dict[str, Any]
                 ) -> tuple[Callable[[str], Any], Callable[[], list[str]], list[str]]:
    """The module-level ``__getattr__``, ``__dir__`` and ``__all__`` of a package with lazy exports.

    Args:
        package: the package's name, e.g. ``"qmoe.sweeps"``.
        modules: submodule -> the names it exports (``{"runner": ("run_sweep", "resume_sweep")}``).
        namespace: the package's ``globals()``; a loaded name is cached there, so later
            look-ups skip ``__getattr__``.
    """
    exports = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str) -> Any:
        try:
            module = exports[name]
        except KeyError:
            raise AttributeError(f"module {package!r} has no attribute {name!r}") from None
        value = getattr(importlib.import_module(f"{package}.{module}"), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__, sorted(exports)
