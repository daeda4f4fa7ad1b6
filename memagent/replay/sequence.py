"""Sequence priorities for recurrent replay (R2D2: Kapturowski et al., ICLR 2019, Section 2.3)."""

from __future__ import annotations

import numpy as np
import torch as th

__all__ = ["sequence_priority"]


def sequence_priority(
    td_errors: th.Tensor | np.ndarray,
    eta: float = 0.9,
    mask: th.Tensor | np.ndarray | None = None,
) -> th.Tensor | np.ndarray:
    """Priority of whole replayed sequences from their per-step TD errors.

    R2D2's mixture of the max and the mean absolute TD error over the sequence:

        p = eta * max_t |delta_t| + (1 - eta) * mean_t |delta_t|,    eta = 0.9 in the paper,

    where max and mean run over the valid steps (``mask``) only, so padding after an episode end
    changes nothing. Returns the same array type as ``td_errors`` (a tensor stays on its device,
    without gradient).

    :param td_errors: TD errors ``(B, T)``.
    :param eta: weight of the max term, in ``[0, 1]``.
    :param mask: optional ``(B, T)`` bool, True for valid steps; every row needs one valid step.
    :return: priorities ``(B,)``.
    """
    if not (isinstance(eta, float | int) and 0.0 <= float(eta) <= 1.0):
        raise ValueError(f"eta must be a number in [0, 1], got {eta!r}")
    is_numpy = isinstance(td_errors, np.ndarray)
    if not is_numpy and not isinstance(td_errors, th.Tensor):
        raise TypeError(f"td_errors must be a torch.Tensor or numpy.ndarray, got {type(td_errors).__name__}")
    delta = th.as_tensor(td_errors).detach()
    if delta.ndim != 2:
        raise ValueError(f"td_errors must have shape (B, T), got shape {tuple(delta.shape)}")
    if not delta.is_floating_point():
        delta = delta.double()
    abs_delta = delta.abs()
    if mask is None:
        valid = th.ones_like(abs_delta, dtype=th.bool)
    else:
        valid = th.as_tensor(mask, device=abs_delta.device)
        if valid.shape != abs_delta.shape:
            raise ValueError(
                f"mask must have the shape of td_errors {tuple(abs_delta.shape)}, got {tuple(valid.shape)}"
            )
        valid = valid.bool()
    counts = valid.sum(dim=1)
    if bool((counts == 0).any()):
        row = int(th.nonzero(counts == 0)[0, 0])
        raise ValueError(f"mask has no valid step in row {row}: every sequence needs at least one")
    if not bool(th.isfinite(abs_delta[valid]).all()):
        raise ValueError("td_errors must be finite on the valid steps, got NaN or inf")
    zero = th.zeros((), dtype=abs_delta.dtype, device=abs_delta.device)
    masked = th.where(valid, abs_delta, zero)  # |delta| >= 0, so 0 is neutral for the max
    priority = eta * masked.amax(dim=1) + (1.0 - eta) * masked.sum(dim=1) / counts.to(abs_delta.dtype)
    return priority.cpu().numpy() if is_numpy else priority
