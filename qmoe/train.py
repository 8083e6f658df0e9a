"""The training loop (DESIGN §5): readable in one screen, in a fixed order.

lr -> forward -> loss (class-weighted CE + load balancing) -> backward -> clip + step (one pass) ->
evaluate on the validation split -> early stop on validation macro-F1 -> restore the best
weights (for every model alike).
"""

from __future__ import annotations

import copy
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from sklearn.metrics import f1_score
from torch import nn

from qmoe.errors import TrainingError
from qmoe.malloc import keep_freed_memory
from qmoe.models.moe import MixtureOfExperts, MoEOutput
from qmoe.optim import optimizer_for
from qmoe.spec import TrainConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FitResult:
    """What training produced; the model passed in holds the best weights afterwards."""

    best_epoch: int  # 1-based epoch whose weights were restored
    epochs: int  # epochs actually run
    best_val_f1: float  # validation macro-F1 of the restored weights
    seconds: float  # wall time of the loop
    history: list[float] = field(default_factory=list)  # validation macro-F1 per epoch


def logits_and_aux(model: nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, C) logits and the auxiliary loss (load balancing for mixtures, else 0)."""
    out = model(x)
    if isinstance(out, MoEOutput):
        return out.logits, out.lb_loss
    return out, torch.zeros((), dtype=x.dtype)


def class_weights(y: np.ndarray, n_classes: int) -> torch.Tensor:
    """Inverse-frequency weights ``N / (C n_c)`` from the training labels."""
    counts = np.bincount(y, minlength=n_classes).astype(np.float64)
    weights = len(y) / (n_classes * np.maximum(counts, 1.0))
    return torch.tensor(weights, dtype=torch.float32)


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Class predictions in eval mode (the mixture keeps its MC-dropout router passes)."""
    model.eval()
    preds = [logits_and_aux(model, x[i:i + batch_size])[0].argmax(dim=1)
             for i in range(0, len(x), batch_size)]
    return torch.cat(preds).numpy()


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(f1_score(y_true, y_pred, average="macro", zero_division=0))


class Training:
    """One model's training, an epoch at a time: :func:`fit` runs it to the end; tuning
    advances several folds' trainings in lockstep and reports after every epoch.

    Each training keeps its own torch RNG stream (dropout, MC router passes), taken from the
    global generator when it is created: interleaved trainings then give exactly what each
    would give alone, and run alone the stream is the global one, as before.
    """

    def __init__(self, model: nn.Module, x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor,
                 y_val: np.ndarray, cfg: TrainConfig, *, n_classes: int, seed: int) -> None:
        keep_freed_memory()
        self.model, self.cfg = model, cfg
        self.x_train, self.x_val, self.y_val = x_train, x_val, y_val
        self.y_t = torch.as_tensor(y_train, dtype=torch.long)
        self.weight = class_weights(y_train, n_classes)
        self.is_mixture = isinstance(model, MixtureOfExperts)
        self.opt = optimizer_for(model, cfg)
        self.gen = torch.Generator().manual_seed(seed)  # batch order
        self.rng = torch.get_rng_state()  # dropout and MC passes
        self.best_f1, self.best_epoch, self.stale = -math.inf, 0, 0
        self.best_state = copy.deepcopy(model.state_dict())
        self.history: list[float] = []
        self.seconds = 0.0
        self.stopped = False  # early-stopped: patience ran out

    @property
    def epoch(self) -> int:
        """Epochs run so far."""
        return len(self.history)

    @property
    def done(self) -> bool:
        return self.stopped or self.epoch >= self.cfg.max_epochs

    def step(self) -> float:
        """Train one epoch, evaluate, update early stopping; returns the validation macro-F1.

        Raises:
            TrainingError: when the loss becomes NaN or infinite.
        """
        cfg, model = self.cfg, self.model
        start = time.perf_counter()
        torch.set_rng_state(self.rng)
        epoch = self.epoch + 1
        model.train()
        order = torch.randperm(len(self.x_train), generator=self.gen)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            logits, aux = logits_and_aux(model, self.x_train[idx])
            loss = F.cross_entropy(logits, self.y_t[idx], weight=self.weight,
                                   label_smoothing=cfg.label_smoothing)
            if self.is_mixture:
                loss = loss + cfg.lb_weight * aux
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"training diverged: the loss became {loss.item()} at epoch {epoch} "
                    f"(lr={cfg.lr}); lower the learning rate or check the table for extreme values")
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            self.opt.clip_and_step(cfg.grad_clip)  # clip_grad_norm_, then the AdamW step
        val_f1 = macro_f1(self.y_val, predict(model, self.x_val))
        self.rng = torch.get_rng_state()
        self.history.append(val_f1)
        if val_f1 > self.best_f1:
            self.best_f1, self.best_epoch, self.stale = val_f1, epoch, 0
            self.best_state = copy.deepcopy(model.state_dict())
        else:
            self.stale += 1
            self.stopped = self.stale >= cfg.patience
        self.seconds += time.perf_counter() - start
        return val_f1

    def finish(self) -> FitResult:
        """Restore the best-validation weights into the model and describe the run."""
        self.model.load_state_dict(self.best_state)
        log.info("trained %d epochs, best %d (val macro-F1 %.4f)", self.epoch, self.best_epoch, self.best_f1)
        return FitResult(best_epoch=self.best_epoch, epochs=self.epoch, best_val_f1=float(self.best_f1),
                         seconds=self.seconds, history=list(self.history))


def fit(model: nn.Module, x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor,
        y_val: np.ndarray, cfg: TrainConfig, *, n_classes: int, seed: int,
        on_epoch: Callable[[int, float], None] | None = None) -> FitResult:
    """Train ``model`` in place with early stopping on validation macro-F1.

    Raises:
        TrainingError: when the loss becomes NaN or infinite.
    """
    training = Training(model, x_train, y_train, x_val, y_val, cfg, n_classes=n_classes, seed=seed)
    while not training.done:
        val_f1 = training.step()
        if on_epoch is not None:
            on_epoch(training.epoch, val_f1)
    return training.finish()
