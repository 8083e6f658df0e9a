"""Parsing of --folds, --values, --experts and sweep names."""

from __future__ import annotations

import pytest

from qmoe.errors import ConfigError
from qmoe.sweeps.parse import check_sweep_name, default_name, parse_floats, parse_folds, parse_ints, parse_names


@pytest.mark.parametrize("text, folds", [
    ("1,3-5", (1, 3, 4, 5)), ("5", (5,)), (" 2 , 1 ", (1, 2)), ("1-3,2-4", (1, 2, 3, 4)), ("4-4", (4,)),
])
def test_folds_parse(text, folds) -> None:
    assert parse_folds(text) == folds


@pytest.mark.parametrize("text, needle", [
    ("", "empty"), (" , ", "empty"), ("a", "'a'"), ("5-3", "'5-3'"), ("0", "'0'"), ("1,,2", "''"), ("1.5", "'1.5'"),
])
def test_folds_reject(text, needle) -> None:
    with pytest.raises(ConfigError, match="--folds") as err:
        parse_folds(text)
    assert needle in str(err.value)


def test_values_floats() -> None:
    assert parse_floats("0.02,0.2,0.3") == (0.02, 0.2, 0.3)
    assert parse_floats("0.3, 0.3,1e-1") == (0.3, 0.1)


@pytest.mark.parametrize("text, needle", [
    ("", "empty"), ("0.2,,0.3", "empty item"), ("abc", "'abc'"), ("nan", "finite"), ("inf", "finite"),
])
def test_values_reject(text, needle) -> None:
    with pytest.raises(ConfigError, match="--values") as err:
        parse_floats(text)
    assert needle in str(err.value)


def test_values_ints() -> None:
    assert parse_ints("1,2,4,8,16") == (1, 2, 4, 8, 16)
    for bad in ("4.5", "four", ""):
        with pytest.raises(ConfigError, match="--values"):
            parse_ints(bad)


def test_names() -> None:
    assert parse_names("bitnet, q4,q8", flag="--experts", example="x") == ("bitnet", "q4", "q8")
    with pytest.raises(ConfigError, match="twice"):
        parse_names("q4,q4", flag="--experts", example="x")
    with pytest.raises(ConfigError, match="--experts"):
        parse_names("q4,,q8", flag="--experts", example="x")


@pytest.mark.parametrize("name", ["alpha", "alpha-20250101-120000", "run_1.v2", "A"])
def test_sweep_names_ok(name) -> None:
    assert check_sweep_name(name) == name


@pytest.mark.parametrize("name", ["../x", "/abs", "a/b", "..", ".", ".hidden", "-x", "", "a b", "x" * 101, "a\\b"])
def test_sweep_names_cannot_escape_storage(name) -> None:
    with pytest.raises(ConfigError, match="--name"):
        check_sweep_name(name)


def test_default_name_is_valid() -> None:
    assert default_name("alpha").startswith("alpha-")
