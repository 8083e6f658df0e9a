"""The optimizer of every training (DESIGN §5): AdamW with torch's formula, fused into one pass
per parameter with the gradient clipping; the router of a mixture in its own group when asked."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch
from torch import nn
from torch.autograd.graph import increment_version

from qmoe.models.moe import MixtureOfExperts
from qmoe.optim_kernel import njit
from qmoe.quant import qat_kernels
from qmoe.spec import TrainConfig

if njit is not None:
    from qmoe.optim_kernel import adamw_layer_stats, adamw_row_gamma, adamw_step
else:  # pragma: no cover - numba is a dependency
    adamw_step = None
_MOMENTS = ("exp_avg", "exp_avg_sq")
#: adamw_row_gamma's outputs for gamma alone (no ternary weight)
_NO_ALPHA, _NO_ROWS, _NO_INT8 = np.empty(0, np.float32), np.empty((0, 0), np.float32), np.empty((0, 0), np.int8)


def _undecorated(method: Callable) -> Callable:
    """The function a ``functools.wraps`` decorator wrapped (the method itself if none)."""
    return getattr(method, "__wrapped__", method)


def optimizer_for(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    """:class:`AdamW`; the router of a mixture gets its own group when ``cfg.router_lr`` is set."""
    router = getattr(model, "router", None) if isinstance(model, MixtureOfExperts) else None
    if cfg.router_lr is None or router is None:
        return AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    routed = {id(p) for p in router.parameters()}
    rest = [p for p in model.parameters() if id(p) not in routed]
    return AdamW([{"params": rest}, {"params": list(router.parameters()), "lr": cfg.router_lr}],
                 lr=cfg.lr, weight_decay=cfg.weight_decay)


class AdamW(torch.optim.AdamW):
    """``torch.optim.AdamW``'s formula in one pass per parameter (:mod:`qmoe.optim_kernel`).

    The optimizer's update was 35-40% of a training step as torch's seven passes over every
    weight, gradient and moment; the fused kernel takes a fourth of that time. Its values
    equal torch's to within one float32 rounding per operation (torch's MKL ``sqrt`` is not
    correctly rounded; the kernel's is) and are the same bits on every x86 CPU. Only the
    default path (no amsgrad, maximize, capturable, differentiable, foreach, fused) on
    contiguous float32 CPU tensors takes the kernel; anything else runs torch's own passes.
    """

    # torch wraps these two in ``torch._disable_dynamo``, whose first call imports torch._dynamo
    # (and sympy): ~150 MB and 1-2 s in every worker process, for a compiler that training
    # never runs. The wrapped functions themselves are torch's own code, called as they are.
    def add_param_group(self, param_group: dict) -> None:
        _undecorated(torch.optim.Optimizer.add_param_group)(self, param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        _undecorated(torch.optim.Optimizer.zero_grad)(self, set_to_none)

    @torch.no_grad()
    def clip_and_step(self, max_norm: float) -> None:
        """``clip_grad_norm_(params, max_norm)`` then :meth:`step`, in one pass per parameter.

        The total norm and the clamped coefficient are torch's own (``get_total_norm``, then
        ``clamp(max_norm / (norm + 1e-6), max=1)``); the gradients are multiplied by it inside
        the update (:mod:`qmoe.optim_kernel`) rather than rewritten first. Parameters the kernel
        cannot take (not contiguous float32 on the CPU), or settings other than the default
        path, get torch's clipping and :meth:`step`.
        """
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if not params:
            return
        if not self._fusable(params):
            nn.utils.clip_grad_norm_(params, max_norm)
            self.step()
            return
        norm = nn.utils.get_total_norm([p.grad for p in params], 2.0)
        clip = float(torch.clamp(float(max_norm) / (norm + 1e-6), max=1.0))  # float32, exactly
        self._fused_step(np.float32(clip))

    def _fusable(self, params: list[torch.Tensor]) -> bool:
        if adamw_step is None or not all(self._plain(g) for g in self.param_groups):
            return False
        return all(t is not None and t.dtype is torch.float32 and t.is_cpu and t.is_contiguous()
                   for p in params for t in (p, p.grad, *(self.state[p].get(k) for k in _MOMENTS if self.state[p])))

    @staticmethod
    def _plain(group: dict) -> bool:
        """Whether ``group`` asks for the default path (the one re-implemented)."""
        return not (group["amsgrad"] or group["maximize"] or group["capturable"] or group["differentiable"]
                    or group["foreach"] or group["fused"])

    def _fused_step(self, clip: np.float32) -> None:
        """Every parameter's update; a weight whose next forward asked for its ternary values
        (:meth:`_kernel`) after the others, so that they are of its ``alpha`` as updated in this
        step (each update reads only its own parameter's tensors: the order changes no value)."""
        f32 = np.float32
        later = []
        for group in self.param_groups:
            lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                exp_avg, exp_avg_sq, step_t = self._state(param)
                step_t += 1
                step = step_t.item()
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                tiny = torch.finfo(torch.float32).tiny
                if not math.sqrt(tiny) / bias_correction2_sqrt < eps * 2.0**-25:
                    tiny = 0.0  # an eps or beta2 outside the argument: sqrt(v) itself
                args = (param.detach().view(-1).numpy(), param.grad.view(-1).numpy(),
                        exp_avg.view(-1).numpy(), exp_avg_sq.view(-1).numpy(), clip,
                        f32(1 - lr * weight_decay), f32(1 - beta1), f32(beta2), f32(1 - beta2),
                        f32(tiny), f32(bias_correction2_sqrt), f32(eps), f32(-(lr / (1 - beta1**step))))
                want = qat_kernels.requested_stats(param)
                if want is not None and want[0] == "ternary":
                    later.append((param, args, want))
                else:
                    self._kernel(param, args, want)
        for param, args, want in later:
            self._kernel(param, args, want)

    @staticmethod
    def _kernel(param: torch.Tensor, args: tuple, want: tuple | None) -> None:
        """The update of one parameter; with the weight statistics its next forward asked for
        (:func:`qmoe.quant.qat_kernels.request_stats`) computed in the same pass. The kernel
        writes through numpy, unseen by torch: the parameter's version is bumped after it.
        ``want``: :func:`~qmoe.quant.qat_kernels.requested_stats` of ``param``."""
        if want is None:
            adamw_step(*args)
        elif want[0] == "layer":
            value = adamw_layer_stats(*args)
        else:  # "rows": bitnet's gamma; "ternary": and its weight, with alpha as it is now
            gamma = np.empty(param.shape[0], np.float32)
            if want[0] == "ternary":
                alpha = want[2]
                w_q, rounded = torch.empty_like(param), torch.empty(param.shape, dtype=torch.int8)
                adamw_row_gamma(*args, param.shape[1], np.float32(want[1]), gamma, alpha.detach().numpy(),
                                w_q.numpy(), rounded.numpy())
                value = (gamma, w_q, rounded, alpha, alpha._version)
            else:
                adamw_row_gamma(*args, param.shape[1], np.float32(want[1]), gamma, _NO_ALPHA, _NO_ROWS, _NO_INT8)
                value = gamma
        increment_version(param)
        if want is not None:
            qat_kernels.store_stats(param, value)

    def _state(self, param: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        state = self.state[param]
        if not state:
            state["step"] = torch.tensor(0.0, dtype=torch.float32)
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
            state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state["exp_avg"], state["exp_avg_sq"], state["step"]

    @torch.no_grad()
    def step(self, closure: Callable[[], float] | None = None) -> float | None:  # type: ignore[override]
        """One step without clipping: the fused kernel where it applies, else torch's passes."""
        if not all(self._plain(g) for g in self.param_groups):
            return super().step(closure)
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        params = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
        if self._fusable(params):
            self._fused_step(np.float32(1.0))
            return loss
        self._torch_step()
        return loss

    def _torch_step(self) -> None:
        """torch's single-tensor AdamW, op for op, with ``sqrt(max(v, tiny))`` (torch's CPU
        sqrt is ~5x slower on exact zeros; see :mod:`qmoe.optim_kernel` for why ``d`` is
        unchanged)."""
        for group in self.param_groups:
            lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
            beta1, beta2 = group["betas"]
            for param in group["params"]:
                if param.grad is None:
                    continue
                grad = param.grad
                exp_avg, exp_avg_sq, step_t = self._state(param)
                step_t += 1
                param.mul_(1 - lr * weight_decay)
                exp_avg.lerp_(grad, 1 - beta1)
                exp_avg_sq.mul_(beta2).addcmul_(grad, grad, value=1 - beta2)
                step = step_t.item()
                bias_correction1 = 1 - beta1**step
                bias_correction2_sqrt = (1 - beta2**step) ** 0.5
                step_size = lr / bias_correction1
                tiny = torch.finfo(exp_avg_sq.dtype).tiny
                if math.sqrt(tiny) / bias_correction2_sqrt < eps * 2.0**-25:
                    denom = exp_avg_sq.clamp_min(tiny).sqrt_()  # (same shape), no sqrt(0)
                    denom = denom.div_(bias_correction2_sqrt).add_(eps)
                else:  # an eps or beta2 outside the argument above: torch's own formula
                    denom = (exp_avg_sq.sqrt() / bias_correction2_sqrt).add_(eps)
                param.addcdiv_(exp_avg, denom, value=-step_size)
