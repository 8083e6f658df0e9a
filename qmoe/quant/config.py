"""Quantizer configs: the base class, ``fp32``, and the registry of named quantizers.

A config is a small frozen dataclass; its *type* picks the algorithm (as in torchao's
``quantize_(model, config)``). The methods on the base class are the whole contract a
quantizer fulfils for :class:`~qmoe.quant.layers.QuantLinear`, :func:`~qmoe.quant.deploy.deploy`
and :mod:`~qmoe.quant.size`; each method lives in its own module (``bitlinear``, ``ternary``,
``ptq8``, ``binary``) and registers its named instances in :data:`QUANTIZERS`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from torch import Tensor, nn

from qmoe.errors import ConfigError
from qmoe.registry import Registry

if TYPE_CHECKING:
    from qmoe.quant.layers import QuantLinear


@dataclass(frozen=True, kw_only=True)
class QuantConfig:
    """Base of every quantizer config.

    Attributes (class level or properties):
        name: registry name (``"q4"``, ``"bitnet"``...).
        weight_bits: bits stored per weight in the deployment (fp32 32, q{k} k, bitnet 2,
            ptq8 8, binary 1).
        post_training: True if the layer trains in float and is converted after training.
        activation_bits: width of the per-sample activation fake-quant in training, or None.
        param_names: extra learned parameters the layer owns (e.g. bitnet's ``alpha``).
        straight_through: True if the activation and weight gradients of the training forward are
            both the identity (STEs without masks or parameters of their own): the layer then
            trains as one autograd node, with :meth:`straight_through_weight`.
    """

    post_training: ClassVar[bool] = False
    activation_bits: ClassVar[int | None] = None
    param_names: ClassVar[tuple[str, ...]] = ()
    straight_through: ClassVar[bool] = False

    @property
    def name(self) -> str:
        raise NotImplementedError

    @property
    def weight_bits(self) -> float:
        raise NotImplementedError

    # -- training -----------------------------------------------------------------------
    def init_params(self, weight: Tensor) -> dict[str, Tensor]:
        """Initial values of the extra parameters in :attr:`param_names`, from the weight."""
        return {}

    def fake_quant_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """The weight used by the training forward (quantized with STE for QAT configs)."""
        return weight

    def straight_through_weight(self, weight: Tensor) -> Tensor:
        """The values of :meth:`fake_quant_weight` without a graph (called with autograd off), for
        the quantizers with :attr:`straight_through`; the others do not have it."""
        raise NotImplementedError(f"{self.name} is not a straight-through quantizer")

    def one_node_linear(self, x: Tensor, weight: Tensor, bias: Tensor, params: Mapping[str, Tensor]) -> Tensor | None:
        """The training forward of a layer (2-D ``x``, a bias, autograd on) as one autograd node
        with the graph's values and gradients bit for bit, or None where this quantizer (or these
        tensors) has none: the layer then runs its graph. The straight-through quantizers have
        :class:`~qmoe.quant.layers.QuantLinear`'s own node instead."""
        return None

    # -- deployment ---------------------------------------------------------------------
    def int_weight(
        self, weight: Tensor, params: Mapping[str, Tensor]
    ) -> tuple[Tensor, dict[str, Tensor]] | None:
        """The stored integer weight and its float scales, or None for a float deployment."""
        return None

    def deployed_weight(self, weight: Tensor, params: Mapping[str, Tensor]) -> Tensor:
        """The effective (dequantized) weight of the deployed layer, detached."""
        return self.fake_quant_weight(weight, params).detach()

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        """The frozen deployed module of ``layer``: packed / integer kernels where the bits allow."""
        raise NotImplementedError

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        """A float torch module computing the same quantized values as :meth:`deploy_linear`
        (the trained model's quantized forward pass; for the post-training methods the float
        reference of the same quantized values). Used to check the deployed forms."""
        return self.deploy_linear(layer)

    def n_scales(self, in_features: int, out_features: int) -> int:
        """Number of float32 scales a deployment of one layer stores besides weights and bias."""
        return 0

    # -- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """``{"name": ..., <fields>}``; :meth:`from_dict` inverts it."""
        return {"name": self.name, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> QuantConfig:
        """Rebuild a config from :meth:`to_dict` output.

        On the base class the ``name`` picks the quantizer; missing fields take the
        registered defaults.

        Raises:
            UnknownNameError: the name is not registered.
            ConfigError: a field is unknown or invalid, or the name and fields disagree.
        """
        fields = dict(data)
        name = fields.pop("name", None)
        try:
            if name is not None:
                cfg = dataclasses.replace(get_quantizer(str(name)), **fields)
            elif cls is QuantConfig:
                raise ConfigError(f"quantizer dict {dict(data)!r} has no 'name'; add one of: "
                                  + ", ".join(QUANTIZERS.names()))
            else:
                cfg = cls(**fields)
        except TypeError as err:
            raise ConfigError(f"bad fields for quantizer {name or cls.__name__!r}: {err}") from None
        if not isinstance(cfg, cls):
            raise ConfigError(f"quantizer {name!r} is a {type(cfg).__name__}, not a {cls.__name__}")
        if name is not None and cfg.name != name:
            raise ConfigError(f"quantizer dict names {name!r} but its fields give {cfg.name!r}")
        return cfg


@dataclass(frozen=True, kw_only=True)
class FP32Config(QuantConfig):
    """No quantization: a float32 Linear in training and deployment."""

    @property
    def name(self) -> str:
        return "fp32"

    @property
    def weight_bits(self) -> float:
        return 32.0

    def deploy_linear(self, layer: QuantLinear) -> nn.Module:
        from qmoe.quant.packed import packed_linear

        bias = None if layer.bias is None else layer.bias.detach()
        return packed_linear("fp32", layer.weight.detach(), bias, self)

    def reference_linear(self, layer: QuantLinear) -> nn.Module:
        out = nn.Linear(layer.in_features, layer.out_features, bias=layer.bias is not None)
        out.load_state_dict({k: v.detach() for k, v in layer.state_dict().items()})
        out.form = "torch-fp32"
        out.config = self
        return out


#: Named quantizer configs: ``fp32, q1, q2, q4, q8, q16, bitnet, ptq8, binary``.
QUANTIZERS: Registry[QuantConfig] = Registry("quantizer")
QUANTIZERS.add("fp32", FP32Config())


def get_quantizer(name: str | QuantConfig | Mapping[str, Any]) -> QuantConfig:
    """The config registered as ``name`` (a config passes through, a dict goes to ``from_dict``).

    Raises:
        UnknownNameError: unknown name; the message lists the known ones.
    """
    if isinstance(name, QuantConfig):
        return name
    if isinstance(name, Mapping):
        return QuantConfig.from_dict(name)
    if not isinstance(name, str):
        raise ConfigError(f"quantizer must be a name or a config, got {type(name).__name__}")
    return QUANTIZERS.get(name)


def list_quantizers(pattern: str = "*") -> list[str]:
    """Registered quantizer names matching a shell-style ``pattern`` (``"q*"``), sorted."""
    return QUANTIZERS.names(pattern)
