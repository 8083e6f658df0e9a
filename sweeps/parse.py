"""Parsing of the small values a sweep takes: folds, value lists, names, seeds, latency mode; TOML files.

Every parser raises :class:`qmoe.errors.ConfigError` naming the flag, the bad piece and a
valid example, so that the CLI can print it as one line.
"""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any
from datetime import datetime

from qmoe.errors import ConfigError
from qmoe.layout import LATENCY_MODES

#: A sweep name is one path component: it names the folder ``STORAGE/NAME``.
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,99}$")


def parse_folds(text: str, *, flag: str = "--folds") -> tuple[int, ...]:
    """``"1,3-5"`` -> ``(1, 3, 4, 5)``: sorted, unique, positive.

    Raises:
        ConfigError: empty text, a piece that is not a number or a range ``a-b`` with a <= b.
    """
    pieces = [p.strip() for p in str(text).split(",")]
    if not any(pieces):
        raise ConfigError(f"{flag} is empty: give fold numbers or ranges, e.g. 1,3-5")
    folds: set[int] = set()
    for piece in pieces:
        match = re.fullmatch(r"(\d+)(?:\s*-\s*(\d+))?", piece)
        if not match:
            raise ConfigError(f"{flag}: {piece!r} is not a fold number or a range like 3-5")
        lo = int(match.group(1))
        hi = int(match.group(2)) if match.group(2) else lo
        if lo < 1 or hi < lo:
            raise ConfigError(f"{flag}: {piece!r} is not a valid range: folds start at 1, a-b needs a <= b")
        folds.update(range(lo, hi + 1))
    return tuple(sorted(folds))


def _split(text: str, flag: str, example: str) -> list[str]:
    pieces = [p.strip() for p in str(text).split(",")]
    if not any(pieces):
        raise ConfigError(f"{flag} is empty: give comma-separated values, e.g. {example}")
    if not all(pieces):
        raise ConfigError(f"{flag}: {text!r} has an empty item; write e.g. {example}")
    return pieces


def parse_floats(text: str, *, flag: str = "--values", example: str = "0.02,0.2,0.3") -> tuple[float, ...]:
    """``"0.02,0.2"`` -> ``(0.02, 0.2)``, order kept, duplicates dropped.

    Raises:
        ConfigError: empty, not a number, or not finite.
    """
    out: list[float] = []
    for piece in _split(text, flag, example):
        try:
            value = float(piece)
        except ValueError:
            raise ConfigError(f"{flag}: {piece!r} is not a number; write e.g. {example}") from None
        if not math.isfinite(value):
            raise ConfigError(f"{flag}: {piece!r} is not a finite number")
        if value not in out:
            out.append(value)
    return tuple(out)


def parse_ints(text: str, *, flag: str = "--values", example: str = "1,2,4,8,16") -> tuple[int, ...]:
    """``"1,2,4"`` -> ``(1, 2, 4)``, order kept, duplicates dropped.

    Raises:
        ConfigError: empty or not a whole number.
    """
    out: list[int] = []
    for piece in _split(text, flag, example):
        if not re.fullmatch(r"[+-]?\d+", piece):
            raise ConfigError(f"{flag}: {piece!r} is not a whole number; write e.g. {example}")
        if int(piece) not in out:
            out.append(int(piece))
    return tuple(out)


def parse_names(text: str, *, flag: str, example: str) -> tuple[str, ...]:
    """``"bitnet,q4,q8"`` -> ``("bitnet", "q4", "q8")`` (order kept).

    Raises:
        ConfigError: empty, an empty item, or a name given twice.
    """
    names = _split(text, flag, example)
    seen = [n for i, n in enumerate(names) if n in names[:i]]
    if seen:
        raise ConfigError(f"{flag}: {seen[0]!r} is given twice")
    return tuple(names)


def check_sweep_name(name: str) -> str:
    """Return ``name`` if it can name a folder under the storage, else raise.

    A name is one path component of letters, digits, ``.``, ``_`` and ``-`` (not starting with
    ``.`` or ``-``), so that ``../x`` or ``/abs`` can never escape the storage folder.

    Raises:
        ConfigError: with the rule and an example.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ConfigError(
            f"--name {name!r} is not a valid sweep name: use letters, digits, '.', '_' and '-' "
            "(at most 100, starting with a letter or digit), e.g. alpha-esc50")
    return name


def default_name(kind: str, now: datetime | None = None) -> str:
    """``alpha-20250131-142501``: the kind and the local start time, to the second."""
    stamp = (now or datetime.now()).strftime("%Y%m%d-%H%M%S")
    return check_sweep_name(f"{kind}-{stamp}")


def parse_seeds(text: str, *, flag: str = "--seeds", example: str = "5 or 0,3,7") -> int | tuple[int, ...]:
    """``"5"`` -> 5 (a count: the sweep seed and the next ones); ``"0,3,7"`` -> ``(0, 3, 7)``
    (explicit seeds, >= 0, order kept). A single explicit seed is the sweep seed: ``--seed``.

    Raises:
        ConfigError: empty, not whole numbers, negative, a count below 1, or a repeated seed.
    """
    if "," not in str(text):
        if not re.fullmatch(r"\s*\d+\s*", str(text)) or int(text) < 1:
            raise ConfigError(f"{flag}: {text!r} is not a count of at least 1 or a list; write e.g. {example}")
        return int(text)
    values = parse_ints(text, flag=flag, example=example)
    if any(v < 0 for v in values):
        raise ConfigError(f"{flag}: seeds are whole numbers >= 0; write e.g. {example}")
    if len(values) != len(_split(text, flag, example)):
        raise ConfigError(f"{flag}: {text!r} repeats a seed; give each seed once")
    return values


def check_latency_mode(value: Any, where: str) -> None:
    """A latency mode (:data:`qmoe.layout.LATENCY_MODES`), else a ConfigError naming ``where``."""
    if value not in LATENCY_MODES:
        raise ConfigError(f"{where}: {value!r} is unknown; known: {', '.join(LATENCY_MODES)}")


def check_replicates(value: Any, where: str, *, minimum: int) -> None:
    """A count (>= ``minimum``) or a non-empty list of distinct whole numbers >= 0."""
    if isinstance(value, tuple):
        if not value or any(isinstance(v, bool) or not isinstance(v, int) or v < 0 for v in value):
            raise ConfigError(f"{where}: a list of seeds must hold whole numbers >= 0, e.g. [0, 3, 7]")
        if len(set(value)) != len(value):
            raise ConfigError(f"{where}: a seed is listed twice; give each once")
    elif isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(f"{where}: {value!r} is not a count >= {minimum} or a list of seeds such as [0, 3, 7]")


def read_toml(path: Path) -> dict[str, Any]:
    """Parse a TOML file; ConfigError naming the file on a missing file or bad syntax."""
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file; check the path of the TOML file") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder, not a TOML file; give the file's path") from None
    except UnicodeDecodeError as err:  # tomllib decodes UTF-8 itself
        raise ConfigError(f"{path}: not a text TOML file ({err.reason} at byte {err.start}); "
                          "give a UTF-8 TOML file") from None
    except OSError as err:
        raise ConfigError(f"{path}: cannot be read ({err.strerror}); check its permissions") from None
    except tomllib.TOMLDecodeError as err:
        raise ConfigError(f"{path}: invalid TOML: {err}") from None
