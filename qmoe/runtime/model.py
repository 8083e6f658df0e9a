"""A loaded ``.qmoe`` model: standardise, run the deployed experts (and router), predict.

The computation is the kernels' own torch-free native API (:mod:`qmoe.quant.native`), built
at load time from the file's canonical data -- the same code the trial's deployed model runs,
so the predictions are the trial's deployed predictions.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from qmoe.errors import DataError
from qmoe.runtime.format import ModelData, read_model_file


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
        load_seconds: reading, validating and lowering the file.
    """

    def __init__(self, data: ModelData, lowered: Any, load_seconds: float) -> None:
        self.data = data
        self.in_dim = data.in_dim
        self.class_names = data.class_names
        self.expert_names = tuple(name for name, _ in data.experts)
        self.load_seconds = load_seconds
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


def load(path: str | Path) -> Model:
    """Load, validate and lower a ``.qmoe`` file; imports no torch.

    Raises:
        ModelFileError: a malformed, truncated, foreign or other-version file (one line).
    """
    t0 = time.perf_counter()
    data = read_model_file(path)
    lowered = _lower(data)
    return Model(data, lowered, time.perf_counter() - t0)


def _lower(data: ModelData) -> Any:
    """The kernels' native form of ``data``: ``X (N, D) -> (logits (N, C), experts | None)``."""
    raise NotImplementedError("waiting for the kernels' native API (qmoe.quant.native)")
