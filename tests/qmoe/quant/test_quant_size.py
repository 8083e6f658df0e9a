"""Stored size of the 1536-640-320-50 MLP (DESIGN §3, §12) under every quantizer."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from qmoe.quant import QuantLinear, deploy, get_quantizer, list_quantizers, model_size_bytes, size_report
from tests.qmoe.quant.quant_cases import quant_mlp

DIMS = (1536, 640, 320, 50)
N_WEIGHTS = 1536 * 640 + 640 * 320 + 320 * 50  # 1,203,840
N_BIAS = 640 + 320 + 50  # 1,010
N_LAYERS = 3

#: Exact bytes from the formula: packed weights + 4 B per float32 scale + 4 B per bias.
EXPECTED_BYTES = {
    "fp32": 4 * N_WEIGHTS + 4 * N_BIAS,  # 4,819,400
    "q1": N_WEIGHTS // 8 + 4 * 2 * N_LAYERS + 4 * N_BIAS,  # 154,544
    "q2": N_WEIGHTS // 4 + 4 * 2 * N_LAYERS + 4 * N_BIAS,  # 305,024
    "q4": N_WEIGHTS // 2 + 4 * 2 * N_LAYERS + 4 * N_BIAS,  # 605,984
    "q8": N_WEIGHTS + 4 * 2 * N_LAYERS + 4 * N_BIAS,  # 1,207,904
    "q16": 2 * N_WEIGHTS + 4 * 2 * N_LAYERS + 4 * N_BIAS,  # 2,411,744
    "bitnet": N_WEIGHTS // 4 + 4 * N_BIAS + 4 * N_BIAS,  # alpha per channel: 309,040
    "ptq8": N_WEIGHTS + 4 * 2 * N_LAYERS + 4 * N_BIAS,  # scale + zero point: 1,207,904
    "binary": N_WEIGHTS // 8 + 4 * N_BIAS + 4 * N_BIAS,  # alpha per channel: 158,560
}


def _mlp(name: str) -> nn.Sequential:
    return quant_mlp(name, DIMS, dropout=0.195)


def test_literal_figures() -> None:
    assert EXPECTED_BYTES["fp32"] == 4_819_400
    assert EXPECTED_BYTES["q4"] == 605_984
    assert EXPECTED_BYTES["q1"] == 154_544
    assert EXPECTED_BYTES["bitnet"] == 309_040


@pytest.mark.parametrize("name", list_quantizers())
def test_mlp_size_matches_formula(name: str) -> None:
    torch.manual_seed(0)
    model = _mlp(name)
    report = size_report(model)
    cfg = get_quantizer(name)
    formula = sum(math.ceil(a * b * cfg.weight_bits / 8) + 4 * cfg.n_scales(a, b) + 4 * b
                  for a, b in zip(DIMS[:-1], DIMS[1:]))
    assert report.size_bytes == formula == model_size_bytes(model)
    if name in EXPECTED_BYTES:
        assert report.size_bytes == EXPECTED_BYTES[name]
    assert report.fp32_bytes == 4_819_400
    assert report.n_params == N_WEIGHTS + N_BIAS
    assert report.size_kb == report.size_bytes / 1000
    assert report.compression == pytest.approx(4_819_400 / report.size_bytes)
    assert size_report(deploy(model)) == report  # deployed layers carry their config


def test_headline_ratios() -> None:
    assert size_report(_mlp("fp32")).compression == 1.0
    assert size_report(_mlp("fp32")).size_kb == pytest.approx(4819.4)
    assert size_report(_mlp("q4")).compression == pytest.approx(7.95, abs=0.01)
    assert size_report(_mlp("q1")).compression == pytest.approx(31.18, abs=0.01)
    assert size_report(_mlp("bitnet")).compression == pytest.approx(15.59, abs=0.01)


def test_other_parameters_and_buffers_count_four_bytes() -> None:
    model = nn.Sequential(nn.LayerNorm(10), QuantLinear(10, 4, "q1", bias=False), nn.BatchNorm1d(4))
    report = size_report(model)
    layer_bytes = math.ceil(40 / 8) + 4 * 2
    other = 20 + 8  # LayerNorm weight+bias, BatchNorm weight+bias
    buffers = 4 + 4 + 1  # running mean, var, num_batches_tracked
    assert report.size_bytes == layer_bytes + 4 * (other + buffers)
    assert report.n_params == 40 + other
    assert report.fp32_bytes == 4 * (40 + other + buffers)
