"""MAML, first-order MAML and Reptile with ``torch.func``.

All functions work on a *functional* model: a callable ``forward(params, x) -> prediction`` and a
dict ``params`` of tensors (see :func:`functional_model`). Nothing mutates a module: adapted
parameters are new tensors, and every inner step evaluates the loss **at the current adapted
parameters** (the defect of the tutorial's meta-learner, which computed adapted parameters it never
used and reused the first step's gradients).

Notation follows Finn et al., "Model-Agnostic Meta-Learning for Fast Adaptation of Deep Networks"
(ICML 2017), Algorithm 2:

- inner step (eq. 1):  θ'ᵢ ← θ'ᵢ − α ∇_θ' L_Tᵢ(f_θ'ᵢ)   (k times, starting from θ'ᵢ = θ)
- meta objective (eq. 2, 3):  min_θ Σᵢ L_Tᵢ(f_θ'ᵢ(θ)),   θ ← θ − β ∇_θ Σᵢ L_Tᵢ(f_θ'ᵢ)

Second-order MAML differentiates through the inner steps (Hessian-vector products); first-order MAML
(FOMAML) treats the inner gradients as constants, so dθ'/dθ = I. Reptile (Nichol et al. 2018, "On
First-Order Meta-Learning Algorithms", Algorithm 2) moves θ towards the adapted parameters:
θ ← θ + ε · mean_i(θ̃ᵢ − θ).

Task batches are processed with ``torch.func.vmap``: support/query tensors carry a leading task
dimension ``(M, K, ...)``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.func import functional_call, grad, grad_and_value, vmap

logger = logging.getLogger(__name__)

Params = dict[str, Tensor]
ForwardFn = Callable[[Mapping[str, Tensor], Tensor], Tensor]
LossFn = Callable[[Tensor, Tensor], Tensor]

__all__ = [
    "MAML",
    "Params",
    "functional_model",
    "inner_adapt",
    "maml_loss",
    "meta_gradient",
    "reptile_direction",
    "safeguarded_step",
    "sgd_adapt",
]


def functional_model(model: nn.Module, output_index: int | None = None) -> tuple[ForwardFn, Params]:
    """Return ``(forward, params)`` for ``model``: ``forward(params, x)`` calls the module with ``params``.

    :param model: any ``nn.Module``; its buffers are used as they are (not adapted).
    :param output_index: if the module returns a tuple (e.g. the DNC's ``(y, state)``), the element to
        use as the prediction.
    :return: the functional forward and a dict of the module's own parameters (the live tensors: an
        optimizer over ``model.parameters()`` updates them).
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
    buffers = dict(model.named_buffers())

    def forward(params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        out = functional_call(model, (dict(params), buffers), (x,))
        if output_index is not None:
            out = out[output_index]
        return out

    return forward, dict(model.named_parameters())


def _check_steps(steps: int, inner_lr: float, backtracking: int = 0) -> None:
    if not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be a non-negative int, got {steps!r}")
    if not inner_lr > 0:
        raise ValueError(f"inner_lr must be > 0, got {inner_lr!r}")
    if isinstance(backtracking, bool) or not isinstance(backtracking, int) or backtracking < 0:
        raise ValueError(f"backtracking must be a non-negative int (0: plain SGD), got {backtracking!r}")


def safeguarded_step(
    support_loss: Callable[[Mapping[str, Tensor]], Tensor],
    params: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    loss: Tensor,
    *,
    inner_lr: float,
    halvings: int,
) -> Params:
    """One SGD step θ' − α·2⁻ʰ·∇ with the largest step (smallest h ≤ ``halvings``) that does not increase
    the support loss; θ' itself (no step) if none of them does.

    Plain SGD with a fixed α (MAML eq. 1) diverges on a task whose support-loss curvature exceeds the
    stability limit, λ_max(∇²L) > 2/α: each step then multiplies the error along that direction by
    |1 − αλ| > 1. Backtracking on the support loss — data the adaptation already has, nothing of the
    query set — makes the inner loop a descent method on every task (the support loss never increases)
    and leaves the step α untouched wherever it already decreases the loss. The choice is made with
    tensor operations only, so it works under ``vmap``; gradients flow through the chosen step.

    :param loss: the support loss at ``params`` (a 0-d tensor).
    :param halvings: how many times the step may be halved (h = 0 … ``halvings``).
    """
    chosen = dict(params)
    bound = loss.detach()
    for h in reversed(range(halvings + 1)):  # small steps first: a larger acceptable step overrides
        candidate = {k: params[k] - (inner_lr * 2.0**-h) * grads[k] for k in params}
        accept = support_loss(candidate).detach() <= bound
        chosen = {k: torch.where(accept, candidate[k], chosen[k]) for k in params}
    return chosen


def inner_adapt(
    forward: ForwardFn,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    inner_lr: float,
    first_order: bool = False,
    loss_fn: LossFn = F.mse_loss,
    backtracking: int = 0,
) -> Params:
    """Adapt ``params`` to one task by ``steps`` SGD steps on the support set (MAML eq. 1).

    Each step computes ∇_θ' L(f_θ'(x), y) **at the current adapted parameters** θ' and sets
    θ' ← θ' − α ∇. With ``first_order=False`` the result stays differentiable with respect to the
    initial ``params`` through the inner gradients (second-order MAML); with ``first_order=True``
    the inner gradients are detached, so d θ'/d θ = I (FOMAML).

    :param forward: ``forward(params, x) -> prediction``, e.g. from :func:`functional_model`.
    :param params: initial parameters θ.
    :param x: support inputs ``(K, ...)``.
    :param y: support targets, the shape of the prediction.
    :param steps: number of inner steps k (0 returns ``params`` unchanged).
    :param inner_lr: inner learning rate α.
    :param first_order: detach the inner gradients.
    :param loss_fn: ``loss_fn(prediction, target) -> scalar``.
    :param backtracking: 0 (default) for plain SGD with a fixed α, as in the paper; ``h > 0`` halves a
        step up to ``h`` times when it would increase the support loss (:func:`safeguarded_step`), at the
        cost of ``h + 1`` extra forward passes per step.
    :return: the adapted parameters θ' (a new dict).
    """
    _check_steps(steps, inner_lr, backtracking)

    def support_loss(p: Mapping[str, Tensor]) -> Tensor:
        return loss_fn(forward(p, x), y)

    adapted = dict(params)
    for _ in range(steps):
        grads, loss = grad_and_value(support_loss)(adapted)
        if first_order:
            grads = {k: g.detach() for k, g in grads.items()}
        if backtracking:
            adapted = safeguarded_step(
                support_loss, adapted, grads, loss, inner_lr=inner_lr, halvings=backtracking
            )
        else:
            adapted = {k: adapted[k] - inner_lr * grads[k] for k in adapted}
    return adapted


def sgd_adapt(
    forward: ForwardFn,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    inner_lr: float,
    loss_fn: LossFn = F.mse_loss,
    backtracking: int = 0,
) -> Params:
    """First-order inner loop (MAML eq. 1 with detached gradients) computed with ``torch.autograd.grad``.

    The same result as ``inner_adapt(..., first_order=True)``, for models whose operations do not
    support ``torch.func`` transforms (e.g. custom ``autograd.Function`` kernels without
    ``setup_context``). Each step takes the gradient at the current adapted parameters.

    :param backtracking: as in :func:`inner_adapt` (0: plain SGD; h: halve a step that would increase the
        support loss, up to h times, see :func:`safeguarded_step`).
    :return: detached adapted parameters.
    """
    _check_steps(steps, inner_lr, backtracking)

    def support_loss(p: Mapping[str, Tensor]) -> Tensor:
        with torch.no_grad():
            return loss_fn(forward(p, x), y)

    adapted = {k: v.detach() for k, v in params.items()}
    for _ in range(steps):
        leaves = {k: v.requires_grad_(True) for k, v in adapted.items()}
        with torch.enable_grad():
            loss = loss_fn(forward(leaves, x), y)
            grads = torch.autograd.grad(loss, list(leaves.values()), allow_unused=True)
        if backtracking:
            current = {k: v.detach() for k, v in leaves.items()}
            full = {k: torch.zeros_like(v) if g is None else g for (k, v), g in zip(current.items(), grads)}
            adapted = safeguarded_step(
                support_loss, current, full, loss.detach(), inner_lr=inner_lr, halvings=backtracking
            )
        else:
            adapted = {
                k: (v.detach() if g is None else (v - inner_lr * g).detach())
                for (k, v), g in zip(leaves.items(), grads)
            }
    return adapted


def maml_loss(
    forward: ForwardFn,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    steps: int,
    inner_lr: float,
    first_order: bool = False,
    loss_fn: LossFn = F.mse_loss,
) -> Tensor:
    """Meta-objective over a batch of tasks (MAML eq. 3): mean_i L_Tᵢ(f_θ'ᵢ) on the query sets.

    The inner loop runs per task under ``torch.func.vmap`` over the leading task dimension M.

    :param support_x: ``(M, K, ...)`` support inputs of M tasks.
    :param support_y: ``(M, K, ...)`` support targets.
    :param query_x: ``(M, Q, ...)`` query inputs.
    :param query_y: ``(M, Q, ...)`` query targets.
    :return: the scalar meta-loss, differentiable with respect to ``params`` (through the inner
        steps when ``first_order`` is False).
    """
    if support_x.shape[0] != query_x.shape[0]:
        raise ValueError(
            f"support_x and query_x must have the same task dimension M, got {support_x.shape[0]} "
            f"and {query_x.shape[0]}"
        )

    def task_loss(p: Mapping[str, Tensor], xs: Tensor, ys: Tensor, xq: Tensor, yq: Tensor) -> Tensor:
        adapted = inner_adapt(
            forward, p, xs, ys, steps=steps, inner_lr=inner_lr, first_order=first_order, loss_fn=loss_fn
        )
        return loss_fn(forward(adapted, xq), yq)

    losses = vmap(task_loss, in_dims=(None, 0, 0, 0, 0))(dict(params), support_x, support_y, query_x, query_y)
    return losses.mean()


def meta_gradient(
    forward: ForwardFn,
    params: Mapping[str, Tensor],
    support_x: Tensor,
    support_y: Tensor,
    query_x: Tensor,
    query_y: Tensor,
    *,
    steps: int,
    inner_lr: float,
    first_order: bool = False,
    loss_fn: LossFn = F.mse_loss,
) -> tuple[Params, Tensor]:
    """∇_θ of :func:`maml_loss` (MAML eq. 3) and the meta-loss, computed with ``torch.func.grad``.

    :return: ``(grads, loss)``: a dict of gradients shaped like ``params`` and the detached meta-loss.
    """

    def objective(p: Mapping[str, Tensor]) -> tuple[Tensor, Tensor]:
        loss = maml_loss(
            forward,
            p,
            support_x,
            support_y,
            query_x,
            query_y,
            steps=steps,
            inner_lr=inner_lr,
            first_order=first_order,
            loss_fn=loss_fn,
        )
        return loss, loss.detach()

    detached = {k: v.detach() for k, v in params.items()}
    grads, loss = grad(objective, has_aux=True)(detached)
    return grads, loss


def reptile_direction(
    forward: ForwardFn,
    params: Mapping[str, Tensor],
    x: Tensor,
    y: Tensor,
    *,
    steps: int,
    inner_lr: float,
    loss_fn: LossFn = F.mse_loss,
) -> Params:
    """Reptile's update direction mean_i(θ̃ᵢ − θ) over a batch of tasks (Nichol et al. 2018, Alg. 2).

    θ̃ᵢ is the result of ``steps`` SGD steps on task i's data. The caller applies
    θ ← θ + ε · direction (or feeds ``-direction`` to an optimizer as a gradient).

    :param x: ``(M, K, ...)`` inputs of M tasks; :param y: the targets.
    :return: a dict shaped like ``params``.
    """
    detached = {k: v.detach() for k, v in params.items()}

    def task_delta(p: Mapping[str, Tensor], xs: Tensor, ys: Tensor) -> Params:
        adapted = inner_adapt(
            forward, p, xs, ys, steps=steps, inner_lr=inner_lr, first_order=True, loss_fn=loss_fn
        )
        return {k: adapted[k] - p[k] for k in p}

    deltas = vmap(task_delta, in_dims=(None, 0, 0))(detached, x, y)
    return {k: d.mean(dim=0) for k, d in deltas.items()}


class MAML:
    """Meta-trains an ``nn.Module`` with MAML, first-order MAML or Reptile.

    The module's own parameters are θ: :meth:`meta_step` writes the meta-gradient into their ``.grad``
    and steps ``optimizer``; :meth:`adapt` returns adapted parameters θ' without touching the module.

    :param model: the module to meta-train.
    :param optimizer: optimizer over ``model.parameters()`` (the meta-optimizer, β in MAML eq. 3).
    :param inner_lr: inner learning rate α.
    :param inner_steps: number of inner steps during meta-training.
    :param method: ``"maml"`` (second order), ``"fomaml"`` (first order) or ``"reptile"``.
    :param loss_fn: ``loss_fn(prediction, target) -> scalar``.
    :param output_index: element of a tuple output to use as the prediction (e.g. 0 for the DNC).
    """

    METHODS = ("maml", "fomaml", "reptile")

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer,
        *,
        inner_lr: float = 0.01,
        inner_steps: int = 1,
        method: str = "maml",
        loss_fn: LossFn = F.mse_loss,
        output_index: int | None = None,
    ) -> None:
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        _check_steps(inner_steps, inner_lr)
        self.model = model
        self.optimizer = optimizer
        self.inner_lr = inner_lr
        self.inner_steps = inner_steps
        self.method = method
        self.loss_fn = loss_fn
        self.forward, self.params = functional_model(model, output_index=output_index)

    def meta_step(self, support_x: Tensor, support_y: Tensor, query_x: Tensor, query_y: Tensor) -> float:
        """One meta-update on a batch of M tasks; shapes ``(M, K, ...)`` / ``(M, Q, ...)``.

        For Reptile the inner loop runs on support and query together and the query loss before the
        update is returned. :return: the meta-loss (mean query loss after adaptation for MAML).
        """
        if self.method == "reptile":
            x = torch.cat([support_x, query_x], dim=1)
            y = torch.cat([support_y, query_y], dim=1)
            direction = reptile_direction(
                self.forward,
                self.params,
                x,
                y,
                steps=self.inner_steps,
                inner_lr=self.inner_lr,
                loss_fn=self.loss_fn,
            )
            grads = {k: -d for k, d in direction.items()}
            with torch.no_grad():
                loss = self.loss_fn(self.forward(self.params, query_x.flatten(0, 1)), query_y.flatten(0, 1))
        else:
            grads, loss = meta_gradient(
                self.forward,
                self.params,
                support_x,
                support_y,
                query_x,
                query_y,
                steps=self.inner_steps,
                inner_lr=self.inner_lr,
                first_order=self.method == "fomaml",
                loss_fn=self.loss_fn,
            )
        for name, p in self.params.items():
            p.grad = grads[name].detach().clone()
        self.optimizer.step()
        return float(loss)

    def adapt(
        self,
        x: Tensor,
        y: Tensor,
        steps: int | None = None,
        inner_lr: float | None = None,
        backtracking: int = 0,
    ) -> Params:
        """Adapted parameters θ' after ``steps`` (default: ``inner_steps``) SGD steps on ``(x, y)``.

        :param x: ``(K, ...)`` support inputs of one task.
        :param backtracking: see :func:`inner_adapt` (0: plain SGD).
        :return: detached adapted parameters.
        """
        adapted = inner_adapt(
            self.forward,
            {k: v.detach() for k, v in self.params.items()},
            x,
            y,
            steps=self.inner_steps if steps is None else steps,
            inner_lr=self.inner_lr if inner_lr is None else inner_lr,
            first_order=True,
            loss_fn=self.loss_fn,
            backtracking=backtracking,
        )
        return {k: v.detach() for k, v in adapted.items()}

    def predict(self, params: Mapping[str, Tensor], x: Tensor) -> Tensor:
        """The model's prediction at ``params`` (e.g. from :meth:`adapt`)."""
        with torch.no_grad():
            return self.forward(params, x)
