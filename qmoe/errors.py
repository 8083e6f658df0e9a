"""The one family of errors qmoe raises for bad input or impossible requests.

The CLI catches :class:`QmoeError` at its boundary and prints ``str(err)`` as one line,
so every message says what was wrong, where (file, column, row, flag) and how to fix it.
"""

from __future__ import annotations


class QmoeError(Exception):
    """Base class: a problem the user can fix (bad input, unknown name, missing file)."""


class ConfigError(QmoeError):
    """An invalid configuration value (a flag, a spec entry, a hyper-parameter)."""


class DataError(QmoeError):
    """An embedding table or dataset that cannot be used as it is."""


class UnknownNameError(ConfigError):
    """A name that no registry knows; the message lists the known ones."""


class TrainingError(QmoeError):
    """Training could not produce a usable model (e.g. the loss diverged to NaN)."""


def one_line(err: BaseException | str, limit: int | None = 500) -> str:
    """A message on one line (whitespace runs collapsed), at most ``limit`` characters (None: all):
    how the CLI prints an error and how a results row records one."""
    text = " ".join(str(err).split()) or (type(err).__name__ if isinstance(err, BaseException) else "")
    return text[:limit]
