"""Optimisers: CLCAE's Ranger (RAdam + Lookahead + gradient centralisation) and a name -> optimiser factory.

Ranger (as in the official code, spec §3.7) does, at every step:

1. **Gradient centralisation** (Yong et al. 2020): for each parameter with ``ndim > 1`` (linear and conv weights,
   not biases or norms), ``g <- g - mean(g over every dimension but the first)``, i.e. each output unit's gradient
   has zero mean. ``p.grad`` is centralised in place, as in the reference implementation.
2. **RAdam** (Liu et al. 2020), the inner ("fast") step: :class:`torch.optim.RAdam`'s own update.
3. **Lookahead** (Zhang et al. 2019): every ``k`` steps the slow weights move ``alpha`` of the way to the fast
   weights, ``slow <- slow + alpha (fast - slow)``, and the fast weights restart from them.

Defaults are the official ones: lr 1e-4 (the caller's), betas (0.95, 0.999), eps 1e-5, weight decay 0, k 6,
alpha 0.5. The reference Ranger (lessw2020) has its own RAdam; torch's differs only in where ``eps`` enters
(``sqrt(v) + eps`` against the bias-corrected ``v``), which is immaterial at these values.

State: the slow weights live in the per-parameter state (``'lookahead_slow'``) and the step counter in each param
group (``'lookahead_step'``), so :meth:`~torch.optim.Optimizer.state_dict` holds everything and a resumed run is
bit-identical to an uninterrupted one. Everything is a tensor or a primitive (``torch.load(weights_only=True)``).
"""
from __future__ import annotations

from typing import Any, Callable, Iterable

import torch

__all__ = ["Ranger", "build_optimizer", "centralize_gradient", "OPTIMIZERS"]

OPTIMIZERS = ("ranger", "adam", "adamw")


def centralize_gradient(grad: torch.Tensor, min_ndim: int = 2) -> torch.Tensor:
    """Subtract from ``grad`` (in place) its mean over every dimension but the first, if ``grad.ndim >= min_ndim``.

    Returns ``grad``. A ``[out, in]`` weight gradient ends with zero row means; a ``[out, in, kh, kw]`` one with
    zero mean per output channel.
    """
    if grad.ndim >= min_ndim:
        grad.sub_(grad.mean(dim=tuple(range(1, grad.ndim)), keepdim=True))
    return grad


def _radam_step() -> Callable:
    """RAdam's update without the step hooks: creating any ``RAdam`` instance wraps ``RAdam.step`` in the hook
    runner, and Ranger's own (wrapped) ``step`` has already run the hooks once."""
    step = torch.optim.RAdam.step
    return step.__wrapped__ if getattr(step, "hooked", False) else step


class Ranger(torch.optim.RAdam):
    """RAdam + Lookahead + gradient centralisation (see the module docstring).

    Args:
        params: parameters or parameter groups (groups may override any of the arguments below).
        lr: learning rate.
        betas, eps, weight_decay: RAdam's (defaults: the official (0.95, 0.999), 1e-5, 0).
        k: Lookahead synchronisation period (steps), >= 1.
        alpha: Lookahead slow-weight step, in (0, 1].
        use_gc: apply gradient centralisation.
        gc_min_ndim: centralise parameters with at least this many dimensions (2: linear and conv weights;
            3: convolutions only).
        **radam_kwargs: passed to :class:`torch.optim.RAdam` (e.g. ``decoupled_weight_decay``, ``foreach``).

    The inner RAdam state (``step``, ``exp_avg``, ``exp_avg_sq``) is torch's; the Lookahead slow weights are
    created at the first step that updates a parameter, from its value before that step.
    """

    def __init__(self, params: Iterable[Any], lr: float = 1e-4, betas: tuple[float, float] = (0.95, 0.999),
                 eps: float = 1e-5, weight_decay: float = 0.0, k: int = 6, alpha: float = 0.5, use_gc: bool = True,
                 gc_min_ndim: int = 2, **radam_kwargs: Any):
        if int(k) != k or k < 1:
            raise ValueError(f"Ranger: lookahead k must be an integer >= 1; got {k!r}")
        if not 0.0 < alpha <= 1.0:
            raise ValueError(f"Ranger: lookahead alpha must be in (0, 1]; got {alpha!r}")
        if gc_min_ndim < 1:
            raise ValueError(f"Ranger: gc_min_ndim must be >= 1; got {gc_min_ndim!r}")
        if radam_kwargs.get("differentiable") or radam_kwargs.get("capturable"):
            raise ValueError("Ranger does not support differentiable=True or capturable=True")
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, **radam_kwargs)
        # Registered after RAdam's defaults so that new groups get them too (add_param_group uses self.defaults).
        self.defaults.update(lookahead_k=int(k), lookahead_alpha=float(alpha), use_gc=bool(use_gc),
                             gc_min_ndim=int(gc_min_ndim), lookahead_step=0)
        for group in self.param_groups:
            for key in ("lookahead_k", "lookahead_alpha", "use_gc", "gc_min_ndim", "lookahead_step"):
                group.setdefault(key, self.defaults[key])

    @torch.no_grad()
    def step(self, closure: Callable[[], torch.Tensor] | None = None) -> torch.Tensor | None:
        """One Ranger step. ``closure`` (re-evaluating the loss and gradients) is called first if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()

        first_values: dict[torch.Tensor, torch.Tensor] = {}
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise RuntimeError("Ranger does not support sparse gradients")
                if group["use_gc"]:
                    centralize_gradient(p.grad, group["gc_min_ndim"])
                if "lookahead_slow" not in self.state[p]:
                    first_values[p] = p.detach().clone()

        _radam_step()(self)

        for group in self.param_groups:
            for p in group["params"]:
                if p in first_values:
                    # After RAdam created its own state, so that its "empty state" initialisation is unaffected.
                    self.state[p]["lookahead_slow"] = first_values[p]
            group["lookahead_step"] += 1
            if group["lookahead_step"] % group["lookahead_k"]:
                continue
            alpha = group["lookahead_alpha"]
            for p in group["params"]:
                slow = self.state[p].get("lookahead_slow") if p in self.state else None
                if slow is None:
                    continue  # never updated: nothing to synchronise
                slow.lerp_(p.detach(), alpha)
                p.copy_(slow)
        return loss


def build_optimizer(name: str, params: Iterable[Any], lr: float, **kwargs: Any) -> torch.optim.Optimizer:
    """An optimiser by name: ``'ranger'`` (:class:`Ranger`, official defaults), ``'adam'`` or ``'adamw'``
    (torch's, with torch's defaults; the official ``--optim_name adam`` is ``Adam(params, lr)``).

    ``kwargs`` go to the optimiser's constructor (e.g. ``betas``, ``weight_decay``, ``k``).
    """
    key = str(name).lower()
    if key == "ranger":
        return Ranger(params, lr=lr, **kwargs)
    if key == "adam":
        return torch.optim.Adam(params, lr=lr, **kwargs)
    if key == "adamw":
        return torch.optim.AdamW(params, lr=lr, **kwargs)
    raise ValueError(f"unknown optimizer {name!r}; choose one of {OPTIMIZERS}")
