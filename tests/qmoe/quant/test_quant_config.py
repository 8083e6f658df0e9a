"""Quantizer configs and the registry."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import pytest

from qmoe.errors import ConfigError, UnknownNameError
from qmoe.quant import (
    QUANTIZERS,
    BinaryConfig,
    BitLinearConfig,
    FP32Config,
    Int8PTQConfig,
    QuantConfig,
    TernaryConfig,
    get_quantizer,
    list_quantizers,
)

ALL = list_quantizers()


def test_registry_has_the_designed_quantizers() -> None:
    assert set(ALL) >= {"fp32", "q1", "q2", "q4", "q8", "q16", "bitnet", "ptq8", "binary"}
    assert list_quantizers("q*") == ["q1", "q16", "q2", "q4", "q8"]


@pytest.mark.parametrize("name", ALL)
def test_registered_name_matches_config_name(name: str) -> None:
    cfg = get_quantizer(name)
    assert cfg.name == name
    assert get_quantizer(cfg) is cfg  # passthrough
    assert isinstance(cfg.post_training, bool)
    assert isinstance(cfg.weight_bits, float)


def test_documented_attributes() -> None:
    expected = {"fp32": (32, False), "q1": (1, False), "q2": (2, False), "q4": (4, False),
                "q8": (8, False), "q16": (16, False), "bitnet": (2, False), "ptq8": (8, True),
                "binary": (1, True)}
    for name, (bits, post) in expected.items():
        cfg = get_quantizer(name)
        assert (cfg.weight_bits, cfg.post_training) == (bits, post), name
    assert isinstance(get_quantizer("fp32"), FP32Config)
    assert get_quantizer("q4") == BitLinearConfig(bits=4)
    assert get_quantizer("bitnet") == TernaryConfig()
    assert get_quantizer("ptq8") == Int8PTQConfig()
    assert get_quantizer("binary") == BinaryConfig(tau=0.05)


def test_unknown_name_lists_the_known_ones() -> None:
    with pytest.raises(UnknownNameError) as info:
        get_quantizer("q3")
    message = str(info.value)
    assert "q3" in message
    for name in ALL:
        assert name in message


@pytest.mark.parametrize("name", ALL)
def test_to_dict_from_dict_round_trip(name: str) -> None:
    cfg = get_quantizer(name)
    data = cfg.to_dict()
    assert data["name"] == name
    assert QuantConfig.from_dict(data) == cfg
    assert type(cfg).from_dict(data) == cfg
    assert get_quantizer(data) == cfg


def test_from_dict_overrides_and_rejects_bad_dicts() -> None:
    assert QuantConfig.from_dict({"name": "binary", "tau": 0.1}) == BinaryConfig(tau=0.1)
    assert QuantConfig.from_dict({"name": "q4"}) == BitLinearConfig(bits=4)
    assert BitLinearConfig.from_dict({"bits": 2}) == BitLinearConfig(bits=2)
    with pytest.raises(ConfigError, match="q4"):
        QuantConfig.from_dict({"name": "q4", "bits": 8})
    with pytest.raises(ConfigError, match="bogus"):
        QuantConfig.from_dict({"name": "fp32", "bogus": 1})
    with pytest.raises(ConfigError, match="name"):
        QuantConfig.from_dict({})
    with pytest.raises(ConfigError):
        BitLinearConfig.from_dict({"name": "binary"})
    with pytest.raises(UnknownNameError):
        QuantConfig.from_dict({"name": "nope"})


@pytest.mark.parametrize("bits", [0, 3, 5, 32, True, 4.0])
def test_invalid_bits_raise_config_error(bits: object) -> None:
    with pytest.raises(ConfigError, match="1, 2, 4, 8, 16"):
        BitLinearConfig(bits=bits)  # type: ignore[arg-type]


@pytest.mark.parametrize("tau", [float("nan"), float("inf"), "0.05", None])
def test_invalid_tau_raises_config_error(tau: object) -> None:
    with pytest.raises(ConfigError, match="tau"):
        BinaryConfig(tau=tau)  # type: ignore[arg-type]


def test_configs_are_frozen_and_keyword_only() -> None:
    cfg = BitLinearConfig(bits=4)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.bits = 8  # type: ignore[misc]
    with pytest.raises(TypeError):
        BitLinearConfig(4)  # type: ignore[misc]
    assert len(QUANTIZERS) == len(ALL)


def test_import_is_light() -> None:
    code = ("import sys, qmoe.quant; "
            "bad = [m for m in sys.modules if m.split('.')[0] in ('ray', 'typer', 'rich')]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)
