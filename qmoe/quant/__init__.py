"""Quantizers for the experts' Linear layers: configs, the QuantLinear module, deployment, size.

One verb per stage, many configs (torchao style)::

    cfg = get_quantizer("q4")                  # or BitLinearConfig(bits=4)
    layer = QuantLinear(1536, 640, cfg)        # trains with fake quant + STE
    deployed = deploy(model)                   # native kernels (qmoe.native), MLPs fused
    size_report(model).compression             # stored bytes vs float32

Importing this package registers ``fp32, q1, q2, q4, q8, q16, bitnet, ptq8, binary``
(explicit imports of each method's module below); it does no work beyond that (numba is
imported on the first deployment).
"""

from qmoe.quant.config import QUANTIZERS, FP32Config, QuantConfig, get_quantizer, list_quantizers
from qmoe.quant.layers import FakeQuantLinear, QuantLinear
from qmoe.quant.bitlinear import BitLinearConfig  # registers q1..q16
from qmoe.quant.ternary import TernaryConfig  # registers bitnet
from qmoe.quant.ptq8 import Int8PTQConfig  # registers ptq8
from qmoe.quant.binary import BinaryConfig, binary_float_reference  # registers binary
from qmoe.quant.deploy import deploy, deploy_form
from qmoe.quant.fused import PackedMLP
from qmoe.quant.packed import PackedLinear
from qmoe.quant.size import SizeReport, bytes_read, model_size_bytes, size_report

__all__ = [
    "QUANTIZERS",
    "BinaryConfig",
    "BitLinearConfig",
    "FP32Config",
    "FakeQuantLinear",
    "Int8PTQConfig",
    "PackedLinear",
    "PackedMLP",
    "QuantConfig",
    "QuantLinear",
    "SizeReport",
    "TernaryConfig",
    "binary_float_reference",
    "bytes_read",
    "deploy",
    "deploy_form",
    "get_quantizer",
    "list_quantizers",
    "model_size_bytes",
    "size_report",
]
