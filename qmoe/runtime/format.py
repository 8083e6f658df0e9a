"""The ``.qmoe`` file: a deployed model in one versioned file, read and written without torch.

A ``.qmoe`` file is a `safetensors <https://huggingface.co/docs/safetensors>`_ file (an 8-byte
header length, a JSON header, raw little-endian tensors: no pickle, nothing executed on load).
Its ``__metadata__`` (str -> str) holds one entry, ``"qmoe"``: a JSON document

.. code-block:: json

    {"format": "qmoe-model", "version": 1,
     "model": {"in_dim": 1536, "n_classes": 50, "top_k": 1,
               "experts": [{"name": "q4", "layers": [{"kind": "int8", "in": 1536, "out": 256,
                                                     "bits": 4, "relu": true, "tau": null}, ...]}, ...],
               "router": {"mc_samples": 10, "temperature": 1.0, "layers": [...]} | null,
               "curiosity": {"alpha": 0.3, "variant": "per-expert-kl"} | null},
     "class_names": ["dog", ...],
     "trial": {"trial_key": "...", "spec": {...}, "deploy_seed": 123, ...}}

and the tensors hold the deployed form's *canonical* data (:class:`qmoe.native.Layer` and
:class:`qmoe.native.Router`, whose arithmetic :mod:`qmoe.native` documents) -- integer weights, per-output
rescales, biases, the router's float weights and its frozen Monte-Carlo dropout masks, the
feature standardisation -- not a kernel's packed layout, so a change of layout never
invalidates a file (the runtime lowers the data for its kernels at load time):

=============================  ===========  ===================================================
tensor                         dtype        shape / meaning
=============================  ===========  ===================================================
``standardise.mean``, ``.std`` float64      (D,): inputs are ``(x - mean) / std``
``expert.I.J.weight``          per width    layer J of expert I, in ``bits`` (:mod:`.bits`)
``expert.I.J.rescale``         float32      (N_J,): per-output multiplier (not for fp32)
``expert.I.J.bias``            float32      (N_J,)
``router.J.weight``, ``.bias`` float32      the router's Linear layers (ReLU after all but the last)
``router.masks``               float32      (M, H): the M frozen dropout masks after layer 0
=============================  ===========  ===================================================

:func:`read_model_file` validates everything before anything uses it -- the safetensors
structure, the header's format, version and fields, every tensor's name, dtype and shape
against what the header implies, and the values (:func:`qmoe.native.check_layer`: finite
floats, integers in their kind's range) -- and turns any defect into one
:class:`ModelFileError` line.
"""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from qmoe.errors import ConfigError, DataError
from qmoe.native import Layer, Router, check_layer
from qmoe.runtime import bits as B

FORMAT = "qmoe-model"
VERSION = 1
META_KEY = "qmoe"
#: Curiosity variants the runtime knows, by their ``--curiosity`` names (:mod:`qmoe.models.moe`):
#: the file's ``variant`` names the formula.
CURIOSITY_VARIANTS = {"kl": "per-expert-kl", "entropy": "uncertainty-entropy-sharpening"}
_CURIOSITY_OF = {variant: name for name, variant in CURIOSITY_VARIANTS.items()}


class ModelFileError(DataError):
    """A ``.qmoe`` file that is missing, malformed, truncated, foreign or of another version."""


@dataclass(frozen=True, kw_only=True, eq=False)
class ModelData:
    """A deployed model as a ``.qmoe`` file holds it (see the module docstring): the canonical
    layers and router of :mod:`qmoe.native`, the standardisation and the class names."""

    in_dim: int
    class_names: tuple[str, ...]
    mean: np.ndarray  # (D,) float64
    std: np.ndarray  # (D,) float64
    experts: tuple[tuple[str, tuple[Layer, ...]], ...]  # (quantizer name, layers)
    router: Router | None = None
    alpha: float = 0.0
    curiosity: str = "kl"  # a key of CURIOSITY_VARIANTS
    top_k: int = 1
    trial: dict[str, Any] = field(default_factory=dict)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def is_mixture(self) -> bool:
        return self.router is not None


# -- writing ---------------------------------------------------------------------------------
def _layer_json(layer: Layer) -> dict[str, Any]:
    n, d = layer.shape
    return {"kind": layer.kind, "in": d, "out": n, "bits": B.width_for(layer.kind, np.asarray(layer.weight)),
            "relu": bool(layer.relu), "tau": None if layer.tau is None else float(layer.tau)}


def _layer_tensors(prefix: str, layer: Layer) -> dict[str, np.ndarray]:
    weight = np.asarray(layer.weight)
    out = {f"{prefix}.weight": B.encode(weight, B.width_for(layer.kind, weight)),
           f"{prefix}.bias": np.asarray(layer.bias, np.float32)}
    if layer.rescale is not None:
        out[f"{prefix}.rescale"] = np.asarray(layer.rescale, np.float32)
    return out


def model_header(model: ModelData) -> dict[str, Any]:
    """The JSON document of ``model``'s file."""
    router = None
    if model.router is not None:
        router = {"mc_samples": int(np.shape(model.router.masks)[0]),
                  "temperature": float(model.router.temperature),
                  "layers": [_layer_json(x) for x in model.router.layers]}
    return {
        "format": FORMAT, "version": VERSION,
        "model": {"in_dim": int(model.in_dim), "n_classes": model.n_classes, "top_k": int(model.top_k),
                  "experts": [{"name": name, "layers": [_layer_json(x) for x in layers]}
                              for name, layers in model.experts],
                  "router": router,
                  "curiosity": None if router is None else {"alpha": float(model.alpha),
                                                            "variant": CURIOSITY_VARIANTS[model.curiosity]}},
        "class_names": list(model.class_names),
        "trial": model.trial,
    }


def model_tensors(model: ModelData) -> dict[str, np.ndarray]:
    """The tensors of ``model``'s file, by name."""
    out = {"standardise.mean": np.asarray(model.mean, np.float64), "standardise.std": np.asarray(model.std, np.float64)}
    for i, (_, layers) in enumerate(model.experts):
        for j, layer in enumerate(layers):
            out.update(_layer_tensors(f"expert.{i}.{j}", layer))
    if model.router is not None:
        for j, layer in enumerate(model.router.layers):
            out.update(_layer_tensors(f"router.{j}", layer))
        out["router.masks"] = np.asarray(model.router.masks, np.float32)
    return {k: np.ascontiguousarray(v) for k, v in out.items()}


def write_model_file(path: str | Path, model: ModelData) -> int:
    """Write ``model`` to ``path`` atomically (temp file + ``os.replace``); returns its size.

    The data is validated as the reader would, first: a file written is a file read back.

    Raises:
        ModelFileError: ``model`` is inconsistent (a bug in the caller), or ``path`` unwritable.
    """
    from safetensors.numpy import save

    header, tensors = model_header(model), model_tensors(model)
    parse_model(header, tensors, source="<model to write>")
    blob = save(tensors, metadata={META_KEY: json.dumps(header, sort_keys=True)})
    path = Path(path).expanduser()
    tmp = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(blob)
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise ModelFileError(f"--out {path}: cannot write ({err.strerror or err}); pick a writable location") from None
    return len(blob)


# -- reading ---------------------------------------------------------------------------------
def read_model_file(path: str | Path) -> ModelData:
    """Read and validate a ``.qmoe`` file (see the module docstring). Never unpickles or
    evaluates anything: safetensors holds raw arrays and the header is JSON.

    Raises:
        ModelFileError: one line naming the file and what is wrong with it.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path).expanduser()
    if not path.is_file():
        raise ModelFileError(f"{path}: no such file; give a .qmoe file written by qmoe export")
    try:
        with safe_open(str(path), framework="numpy") as f:
            meta = f.metadata() or {}
            if META_KEY not in meta:
                raise ModelFileError(f"{path}: a safetensors file, but not a qmoe model (no {META_KEY!r} "
                                     "header): written by another program; export one with qmoe export")
            header = _parse_header(meta[META_KEY], path)
            tensors = {name: f.get_tensor(name) for name in f.keys()}
    except SafetensorError as err:
        raise ModelFileError(f"{path}: not a qmoe model file (unreadable as safetensors: {_short(err)}); "
                             "it is truncated, damaged or another kind of file") from None
    except OSError as err:
        raise ModelFileError(f"{path}: cannot read ({err.strerror or err})") from None
    return parse_model(header, tensors, source=str(path))


def _short(err: BaseException) -> str:
    return " ".join(str(err).split())[:160] or type(err).__name__


def _parse_header(text: str, path: Path) -> dict[str, Any]:
    try:
        header = json.loads(text)
    except (json.JSONDecodeError, RecursionError) as err:
        raise ModelFileError(f"{path}: its qmoe header is not JSON ({_short(err)}); the file is damaged") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(f"{path}: not a qmoe model file (format "
                             f"{header.get('format') if isinstance(header, dict) else None!r}, expected {FORMAT!r})")
    version = header.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ModelFileError(f"{path}: invalid format version {version!r}; the file is damaged")
    if version > VERSION:
        raise ModelFileError(f"{path}: format version {version} is newer than this qmoe reads ({VERSION}); "
                             "upgrade qmoe")
    return header


class _Check:
    """Field access that fails as one :class:`ModelFileError` naming the file and the field."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, what: str) -> ModelFileError:
        return ModelFileError(f"{self.source}: {what}; the file is damaged or was not written by qmoe export")

    def get(self, d: Any, key: str, kind: type | tuple[type, ...], where: str) -> Any:
        if not isinstance(d, dict) or key not in d:
            raise self.fail(f"header field {where}.{key} is missing")
        value = d[key]
        bad_bool = isinstance(value, bool) and bool not in (kind if isinstance(kind, tuple) else (kind,))
        if not isinstance(value, kind) or bad_bool:
            raise self.fail(f"header field {where}.{key} has type {type(value).__name__}")
        return value

    def count(self, d: Any, key: str, where: str, low: int = 1) -> int:
        value = self.get(d, key, int, where)
        if value < low:
            raise self.fail(f"header field {where}.{key} = {value} (must be >= {low})")
        return value

    def number(self, d: Any, key: str, where: str, low: float = 0.0) -> float:
        value = float(self.get(d, key, (int, float), where))
        if not math.isfinite(value) or value < low:
            raise self.fail(f"header field {where}.{key} = {value} (must be finite and >= {low})")
        return value


def parse_model(header: Mapping[str, Any], tensors: Mapping[str, np.ndarray], *, source: str) -> ModelData:
    """Validate a header and its tensors together and build the :class:`ModelData`.

    Raises:
        ModelFileError: the first defect found, as one line.
    """
    c = _Check(source)
    m = c.get(dict(header), "model", dict, "")
    d, n_classes = c.count(m, "in_dim", "model"), c.count(m, "n_classes", "model", 2)
    top_k = c.count(m, "top_k", "model")
    names = c.get(dict(header), "class_names", list, "")
    if len(names) != n_classes or not all(isinstance(n, str) for n in names):
        raise c.fail(f"class_names holds {len(names)} entries for {n_classes} classes")
    trial = header.get("trial", {})
    if not isinstance(trial, dict):
        raise c.fail("header field trial is not an object")
    expected: dict[str, tuple[str, tuple[int, ...]]] = {"standardise.mean": ("float64", (d,)),
                                                        "standardise.std": ("float64", (d,))}
    experts_json = c.get(m, "experts", list, "model")
    if not experts_json:
        raise c.fail("the model has no expert")
    plans = []
    for i, e in enumerate(experts_json):
        name = c.get(e, "name", str, f"model.experts[{i}]")
        plans.append((name, _plan(c, f"expert.{i}", c.get(e, "layers", list, f"model.experts[{i}]"),
                                  d, n_classes, expected)))
    router_json = m.get("router")
    router_plan = None
    if router_json is not None:
        router_plan = _plan(c, "router", c.get(router_json, "layers", list, "model.router"), d, len(plans), expected)
        mc = c.count(router_json, "mc_samples", "model.router")
        expected["router.masks"] = ("float32", (mc, router_plan[0][2]["out"]))
        variant = c.get(c.get(m, "curiosity", dict, "model"), "variant", str, "model.curiosity")
        if variant not in _CURIOSITY_OF:
            raise c.fail(f"curiosity variant {variant!r} is unknown (known: {', '.join(_CURIOSITY_OF)})")
        if top_k > len(plans):
            raise c.fail(f"top_k {top_k} exceeds the {len(plans)} experts")
    elif len(plans) != 1:
        raise c.fail(f"{len(plans)} experts but no router")
    _check_tensors(c, expected, tensors)

    def layer(prefix: str, kind: str, spec: Mapping[str, Any]) -> Layer:
        weight = B.decode(tensors[f"{prefix}.weight"], spec["bits"], spec["in"])
        out = Layer(kind=kind, weight=weight, bias=tensors[f"{prefix}.bias"],
                    rescale=tensors.get(f"{prefix}.rescale"), relu=spec["relu"],
                    tau=None if spec.get("tau") is None else float(spec["tau"]))
        try:
            check_layer(out, f"layer {prefix}")  # values: integers in the kind's range, finite
        except ConfigError as err:
            raise c.fail(str(err)) from None
        return out

    experts = tuple((name, tuple(layer(*step) for step in plan)) for name, plan in plans)
    router, alpha, curiosity = None, 0.0, "kl"
    if router_plan is not None:
        if any(kind != "fp32" for _, kind, _ in router_plan) or len(router_plan) < 2:
            raise c.fail("the router must be two or more fp32 layers")
        router = Router(layers=tuple(layer(*step) for step in router_plan), masks=tensors["router.masks"],
                        temperature=c.number(router_json, "temperature", "model.router", 1e-12))
        alpha = c.number(m["curiosity"], "alpha", "model.curiosity")
        curiosity = _CURIOSITY_OF[m["curiosity"]["variant"]]
    if not (tensors["standardise.std"] > 0).all():
        raise c.fail("standardise.std holds a value <= 0")
    return ModelData(in_dim=d, class_names=tuple(names), mean=tensors["standardise.mean"],
                     std=tensors["standardise.std"], experts=experts, router=router, alpha=alpha,
                     curiosity=curiosity, top_k=top_k, trial=trial)


def _plan(c: _Check, prefix: str, layers: Sequence[Any], d: int, n_out: int,
          expected: dict[str, tuple[str, tuple[int, ...]]]) -> list[tuple[str, str, dict[str, Any]]]:
    """Check a chain of layer entries (``D -> ... -> n_out``) and add their tensors to
    ``expected``; returns each layer's (tensor prefix, kind, header entry)."""
    if not layers:
        raise c.fail(f"{prefix} has no layer")
    plan = []
    width = d
    for j, spec in enumerate(layers):
        where = f"{prefix}.{j}"
        kind = c.get(spec, "kind", str, where)
        if kind not in B.WIDTHS:
            raise c.fail(f"layer {where} has unknown kind {kind!r} (known: {', '.join(B.WIDTHS)})")
        n_in, n = c.count(spec, "in", where), c.count(spec, "out", where)
        bits = c.count(spec, "bits", where)
        if bits not in B.WIDTHS[kind]:
            raise c.fail(f"layer {where} ({kind}) stored in {bits} bits (allowed: {B.WIDTHS[kind]})")
        c.get(spec, "relu", bool, where)
        if n_in != width or (j == len(layers) - 1 and n != n_out):
            want = f"{width} -> {n_out if j == len(layers) - 1 else 'any'}"
            raise c.fail(f"layer {where} maps {n_in} -> {n}, expected {want}")
        tau = spec.get("tau")
        if tau is not None and (isinstance(tau, bool) or not isinstance(tau, (int, float))):
            raise c.fail(f"header field {where}.tau has type {type(tau).__name__}")
        expected[f"{where}.weight"] = (B.DTYPES[bits], B.stored_shape(n, n_in, bits))
        expected[f"{where}.bias"] = ("float32", (n,))
        if kind != "fp32":
            expected[f"{where}.rescale"] = ("float32", (n,))
        plan.append((where, kind, spec))
        width = n
    return plan


def _check_tensors(c: _Check, expected: Mapping[str, tuple[str, tuple[int, ...]]],
                   tensors: Mapping[str, np.ndarray]) -> None:
    missing = [k for k in expected if k not in tensors]
    if missing:
        raise c.fail(f"tensor {missing[0]} is missing ({len(missing)} missing)")
    extra = sorted(set(tensors) - set(expected))
    if extra:
        raise c.fail(f"unexpected tensor {extra[0]} ({len(extra)} unknown to the header)")
    for name, (dtype, shape) in expected.items():
        t = tensors[name]
        if t.dtype != np.dtype(dtype):
            raise c.fail(f"tensor {name} is {t.dtype}, expected {dtype}")
        if tuple(t.shape) != shape:
            raise c.fail(f"tensor {name} has shape {tuple(t.shape)}, expected {shape}")
        if t.dtype.kind == "f" and not np.isfinite(t).all():
            raise c.fail(f"tensor {name} holds NaN or inf")
