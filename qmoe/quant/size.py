"""Model size as a deployment stores it (DESIGN §3).

Per quantized Linear (a :class:`~qmoe.quant.layers.QuantLinear`, or a deployed layer that
carries its ``config``): ``ceil(numel * weight_bits / 8)`` bytes of weights, 4 bytes per
float32 scale the method stores (``config.n_scales``: q{k} ``s`` and ``mu`` per layer; bitnet
and binary ``alpha`` per output channel; ptq8 scale and zero point per layer) and 4 bytes per
bias element. Every other parameter or buffer (router, LayerNorm...) counts 4 bytes per
element. The fp32 reference is 4 bytes per element of the float model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from torch import nn

from qmoe.quant.config import QuantConfig
from qmoe.quant.layers import QuantLinear


@dataclass(frozen=True)
class SizeReport:
    """What a deployment of a model stores.

    Attributes:
        size_bytes: bytes stored by the deployment.
        size_kb: the same in KB (1000 bytes).
        fp32_bytes: bytes of the same model stored in float32.
        compression: ``fp32_bytes / size_bytes``.
        n_params: parameters of the float model (weights, biases, other parameters;
            not the quantizers' own scales such as bitnet's ``alpha``).
    """

    size_bytes: int
    size_kb: float
    fp32_bytes: int
    compression: float
    n_params: int


def _linear_config(module: nn.Module) -> QuantConfig | None:
    """The config of a quantized Linear: a QuantLinear or a deployed layer (it has a ``form``)."""
    config = getattr(module, "config", None)
    is_layer = isinstance(module, QuantLinear) or hasattr(module, "form")
    if is_layer and isinstance(config, QuantConfig) and hasattr(module, "in_features"):
        return config
    return None


def _has_bias(module: nn.Module) -> bool:
    bias = getattr(module, "bias", None)
    if callable(bias):  # torch.ao dynamic Linear exposes bias() as a method
        bias = bias()
    return bias is not None


def _walk(module: nn.Module) -> tuple[int, int, int]:
    """(deployed bytes, fp32 bytes, float params) of ``module`` and its children."""
    config = _linear_config(module)
    if config is not None:
        n_in, n_out = module.in_features, module.out_features
        n_bias = n_out if _has_bias(module) else 0
        weight_bytes = math.ceil(n_in * n_out * config.weight_bits / 8)
        stored = weight_bytes + 4 * config.n_scales(n_in, n_out) + 4 * n_bias
        n_float = n_in * n_out + n_bias
        return stored, 4 * n_float, n_float
    n_params = sum(p.numel() for p in module.parameters(recurse=False))
    n_buffers = sum(b.numel() for b in module.buffers(recurse=False))
    stored = fp32 = 4 * (n_params + n_buffers)
    for child in module.children():
        s, f, n = _walk(child)
        stored, fp32, n_params = stored + s, fp32 + f, n_params + n
    return stored, fp32, n_params


def size_report(model: nn.Module) -> SizeReport:
    """Size of ``model`` as deployed, against float32.

    Works on the training model (QuantLinear layers) and on its :func:`~qmoe.quant.deploy.deploy`
    copy alike (deployed layers carry their config).
    """
    stored, fp32, n_params = _walk(model)
    return SizeReport(
        size_bytes=stored,
        size_kb=stored / 1000,
        fp32_bytes=fp32,
        compression=fp32 / stored if stored else 1.0,
        n_params=n_params,
    )


def model_size_bytes(model: nn.Module) -> int:
    """Bytes a deployment of ``model`` stores (see :func:`size_report`)."""
    return size_report(model).size_bytes


def bytes_read(model: nn.Module) -> int:
    """Bytes of weights, scales and biases one inference of a *deployed* model reads.

    What the kernels really read, which is not always the stored size: native forms count
    their arrays (with their layouts' padding), torch float layers 4 bytes per weight and
    bias, torch's dynamic int8 Linear 1 byte per weight. The basis of ``qmoe bench``'s floors.
    """
    if hasattr(model, "nbytes_read"):  # a native form: what its kernels read
        return int(model.nbytes_read)
    if isinstance(model, nn.Linear):
        return sum(t.nbytes for t in (model.weight, model.bias) if t is not None)
    if callable(getattr(model, "weight", None)) and hasattr(model, "in_features"):
        weight, bias = model.weight(), model.bias()  # torch.ao dynamic int8 Linear
        return weight.numel() * weight.element_size() + (bias.nbytes if bias is not None else 0)
    return sum(bytes_read(child) for child in model.children())
