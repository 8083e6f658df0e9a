"""A loaded ``.qmoe`` model: standardise, run the deployed experts (and router), predict.

The computation is the kernels' own torch-free native API (:mod:`qmoe.native`), lowered at load
time from the file's canonical data: a :class:`~qmoe.native.NativeMLP` (single model) or a
:class:`~qmoe.native.NativeMixture` (experts, router with its frozen masks, curiosity) -- the
objects the trial's deployed model wraps, so the predictions are the trial's deployed ones.

The kernels (:data:`KERNELS`): ``auto`` (default) runs the drivers compiled ahead of time
(:mod:`qmoe.native.aot`: numpy only, no numba or LLVM in the process; compiled once per machine
on first use) and falls back to numba's just-in-time drivers where they cannot be had, saying
why in :attr:`Model.kernels`; ``aot`` and ``jit`` insist on one. Both compute the same outputs
bit for bit (the same driver source, and layouts whose outputs do not depend on the layout).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from collections.abc import Callable
from typing import Any

import numpy as np

from qmoe.errors import ConfigError, DataError
from qmoe.runtime.format import ModelData, ModelFileError, read_model_file


@dataclass(frozen=True, kw_only=True, eq=False)
class Prediction:
    """Predicted class ids (N,), and for mixtures each row's top-1 expert (N,)."""

    labels: np.ndarray
    logits: np.ndarray  # (N, C) float32
    experts: np.ndarray | None = None


class Model:
    """An exported model, ready to predict (see :func:`load`).

    Attributes:
        data: the file's validated contents.
        in_dim: D, the embedding size it reads.
        class_names: index = class id.
        expert_names: the experts' quantizers (one for a single model).
        load_seconds: reading, validating and lowering the file, and the first call.
        kernels: which compiled drivers run it (and, for ``auto``, why not the ahead-of-time
            ones if they are not).
    """

    def __init__(self, data: ModelData, lowered: Any, load_seconds: float, kernels: str = "") -> None:
        self.data = data
        self.in_dim = data.in_dim
        self.class_names = data.class_names
        self.expert_names = tuple(name for name, _ in data.experts)
        self.load_seconds = load_seconds
        self.kernels = kernels
        self._run = lowered
        self._mean = data.mean
        self._std = data.std

    @property
    def is_mixture(self) -> bool:
        return self.data.is_mixture

    def standardise(self, X: np.ndarray) -> np.ndarray:
        """``(X - mean) / std`` in float64, as float32 (the trial's own arithmetic)."""
        return np.ascontiguousarray(((X - self._mean) / self._std).astype(np.float32))

    def predict(self, X: np.ndarray) -> Prediction:
        """Predict raw embedding rows ``X`` (N, D) (standardised here).

        Raises:
            DataError: ``X`` is not (N, D).
        """
        X = np.asarray(X)
        if X.ndim != 2 or X.shape[1] != self.in_dim:
            raise DataError(f"inputs of shape {X.shape}: the model reads rows of {self.in_dim} values")
        logits, experts = self._run(self.standardise(X))
        return Prediction(labels=np.asarray(logits).argmax(axis=1), logits=logits, experts=experts)


#: The ``kernels`` choices of :func:`load`.
KERNELS = ("auto", "aot", "jit")


def load(path: str | Path, kernels: str = "auto", announce: Callable[[str], None] | None = None) -> Model:
    """Load, validate and lower a ``.qmoe`` file, and run it once (so the first prediction
    costs no more than the others); imports no torch (nor numba with the ahead-of-time kernels).

    Args:
        kernels: one of :data:`KERNELS` (see the module docstring).
        announce: told (one line) before the ahead-of-time kernels are compiled on first use.

    Raises:
        ModelFileError: a malformed, truncated, foreign or other-version file (one line).
        ConfigError: an unknown ``kernels``, or ``aot`` where they cannot be had.
    """
    t0 = time.perf_counter()
    return ready(read_model_file(path), path, kernels, announce, t0)


def ready(data: ModelData, path: str | Path, kernels: str = "auto",
          announce: Callable[[str], None] | None = None, t0: float | None = None) -> Model:
    """:func:`load` of a file already read (``data``, from ``path``); ``t0`` is when reading began."""
    t0 = time.perf_counter() if t0 is None else t0
    backend, described = choose_kernels(kernels, announce)
    try:
        lowered = _lower(data, backend)
    except ConfigError as err:  # the file passed every check but the kernels' own
        raise ModelFileError(f"{path}: {err}; the file is damaged or was not written by qmoe export") from None
    lowered(np.zeros((1, data.in_dim), np.float32))  # the kernels' first call loads their machine code
    return Model(data, lowered, time.perf_counter() - t0, described)


def choose_kernels(kernels: str, announce: Callable[[str], None] | None = None) -> tuple[Any, str]:
    """The backend for ``kernels`` (:data:`KERNELS`) and a line saying what runs.

    Raises:
        ConfigError: unknown ``kernels``; ``aot`` unavailable here.
    """
    from qmoe.native import aot
    from qmoe.native import kernels as native_kernels

    if kernels not in KERNELS:
        raise ConfigError(f"--kernels {kernels}: use one of {', '.join(KERNELS)}")
    if kernels == "jit":
        backend = native_kernels.load()
        return backend, backend.name
    try:
        backend = aot.backend(announce=announce)
        return backend, backend.name
    except aot.AotUnavailable as err:
        if kernels == "aot":
            raise ConfigError(f"--kernels aot: {err}; or use --kernels jit") from None
        backend = native_kernels.load()
        return backend, f"{backend.name} (no ahead-of-time kernels: {err})"


def _lower(data: ModelData, backend: Any = None) -> Any:
    """The native form of ``data`` run by ``backend`` (default numba's): ``X (N, D) float32 ->
    (logits (N, C), top-1 experts | None)``."""
    from qmoe.native import NativeMixture, NativeMLP

    if data.router is None:
        mlp = NativeMLP(data.experts[0][1], backend=backend)

        def run_single(x: np.ndarray) -> tuple[np.ndarray, None]:
            return mlp(x), None

        return run_single
    mixture = NativeMixture([layers for _, layers in data.experts], data.router, alpha=data.alpha,
                            top_k=data.top_k, curiosity=data.curiosity, backend=backend)

    def run_mixture(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        out = mixture(x)
        return out.logits, out.selected[:, 0]

    return run_mixture
