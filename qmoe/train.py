"""The training loop (DESIGN §5): readable in one screen, in a fixed order.

lr -> forward -> loss (class-weighted CE + load balancing) -> backward -> clip -> step ->
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
from qmoe.models.moe import MixtureOfExperts, MoEOutput
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


def fit(model: nn.Module, x_train: torch.Tensor, y_train: np.ndarray, x_val: torch.Tensor,
        y_val: np.ndarray, cfg: TrainConfig, *, n_classes: int, seed: int,
        on_epoch: Callable[[int, float], None] | None = None) -> FitResult:
    """Train ``model`` in place with early stopping on validation macro-F1.

    Raises:
        TrainingError: when the loss becomes NaN or infinite.
    """
    gen = torch.Generator().manual_seed(seed)
    is_mixture = isinstance(model, MixtureOfExperts)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    weight = class_weights(y_train, n_classes)
    y_t = torch.as_tensor(y_train, dtype=torch.long)
    best_f1, best_epoch, best_state, stale = -math.inf, 0, copy.deepcopy(model.state_dict()), 0
    history: list[float] = []
    start = time.perf_counter()
    epoch = 0
    for epoch in range(1, cfg.max_epochs + 1):
        model.train()
        order = torch.randperm(len(x_train), generator=gen)
        for i in range(0, len(order), cfg.batch_size):
            idx = order[i:i + cfg.batch_size]
            logits, aux = logits_and_aux(model, x_train[idx])
            loss = F.cross_entropy(logits, y_t[idx], weight=weight,
                                   label_smoothing=cfg.label_smoothing)
            if is_mixture:
                loss = loss + cfg.lb_weight * aux
            if not torch.isfinite(loss):
                raise TrainingError(
                    f"training diverged: the loss became {loss.item()} at epoch {epoch} "
                    f"(lr={cfg.lr}); lower the learning rate or check the table for extreme values")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
        val_f1 = macro_f1(y_val, predict(model, x_val))
        history.append(val_f1)
        if on_epoch is not None:
            on_epoch(epoch, val_f1)
        if val_f1 > best_f1:
            best_f1, best_epoch, stale = val_f1, epoch, 0
            best_state = copy.deepcopy(model.state_dict())
        else:
            stale += 1
            if stale >= cfg.patience:
                break
    model.load_state_dict(best_state)
    log.info("trained %d epochs, best %d (val macro-F1 %.4f)", epoch, best_epoch, best_f1)
    return FitResult(best_epoch=best_epoch, epochs=epoch, best_val_f1=float(best_f1),
                     seconds=time.perf_counter() - start, history=history)
