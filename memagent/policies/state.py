"""Operations on recurrent states of any structure.

A recurrent core's state is a flat ``NamedTuple`` whose every field is a tensor with leading batch
dimension ``B`` (the contract of :class:`memagent.memory.DNC`). A policy carries one such state for the
actor and, optionally, one for the critic, bundled in :class:`CoreStates`. The helpers here treat any
nesting of tuples / NamedTuples with tensor (or numpy) leaves and ``None`` placeholders, so buffers and
algorithms never need to know which fields a core keeps.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
import torch as th


class CoreStates(NamedTuple):
    """States of the actor's and the critic's recurrent cores.

    :param pi: the actor core's state, a NamedTuple of tensors ``(B, ...)``.
    :param vf: the critic core's state (same structure), or ``None`` when the critic has no memory of its
        own (``critic_memory="shared"`` or ``"none"``).
    """

    pi: Any
    vf: Any | None


def _is_namedtuple(obj: Any) -> bool:
    return isinstance(obj, tuple) and hasattr(obj, "_fields")


def map_state(fn: Callable[..., Any], *trees: Any) -> Any:
    """Apply ``fn`` leaf-wise to one or more states of the same structure.

    Containers are tuples and NamedTuples (rebuilt with their own type); ``None`` stays ``None``;
    anything else is a leaf.

    :param fn: called as ``fn(leaf_0, leaf_1, ...)`` with the matching leaves of ``trees``.
    :param trees: states of identical structure.
    :return: a state of the same structure holding ``fn``'s results.
    """
    first = trees[0]
    if first is None:
        return None
    if isinstance(first, tuple):
        children = [map_state(fn, *parts) for parts in zip(*trees)]
        return type(first)(*children) if _is_namedtuple(first) else tuple(children)
    return fn(*trees)


def state_leaves(tree: Any) -> list[Any]:
    """The leaves of a state in a fixed depth-first order (``None`` placeholders skipped)."""
    if tree is None:
        return []
    if isinstance(tree, tuple):
        return [leaf for child in tree for leaf in state_leaves(child)]
    return [tree]


def state_batch_size(tree: Any) -> int:
    """Leading (batch) dimension shared by every leaf of ``tree``.

    :raises ValueError: if the state has no leaf or the leaves disagree on the batch size.
    """
    sizes = {int(leaf.shape[0]) for leaf in state_leaves(tree)}
    if len(sizes) != 1:
        raise ValueError(
            f"state: every field needs the same leading batch dimension, got sizes {sorted(sizes)}"
        )
    return sizes.pop()


def index_state(tree: Any, index: Any) -> Any:
    """Select samples ``index`` (int slice, index array or mask) along the batch dimension of every leaf."""
    return map_state(lambda leaf: leaf[index], tree)


def detach_state(tree: Any) -> Any:
    """Cut the gradient of every tensor leaf (truncated back-propagation through time)."""
    return map_state(lambda leaf: leaf.detach(), tree)


def state_to_tensor(tree: Any, device: th.device | str) -> Any:
    """Convert every leaf (tensor or numpy array) to a tensor on ``device``; float64 becomes float32."""

    def convert(leaf: Any) -> th.Tensor:
        tensor = th.as_tensor(leaf, device=device)
        return tensor.float() if tensor.dtype == th.float64 else tensor

    return map_state(convert, tree)


def state_nbytes_per_sample(tree: Any) -> int:
    """Bytes that one sample (one environment) of ``tree`` occupies: the cost of storing one state.

    :param tree: a state with leading batch dimension ``B`` on every leaf (tensors or numpy arrays).
    """
    total = 0
    for leaf in state_leaves(tree):
        if isinstance(leaf, th.Tensor):
            total += leaf[:1].numel() * leaf.element_size()
        else:
            total += np.asarray(leaf)[:1].nbytes
    return total
