"""Recurrent cores: the memory that sits between a policy's features extractor and its MLP heads.

A *core* is any ``nn.Module`` with

- ``output_size: int`` -- size of its output (the latent the MLP heads read);
- ``initial_state(batch_size, device=None, dtype=None) -> State`` -- a flat ``NamedTuple`` whose every
  field is a tensor with leading batch dimension ``B``;
- ``forward(x (B, T, I), state, episode_starts (B, T) bool) -> (y (B, T, O), state)`` -- where a sample
  flagged in ``episode_starts[b, t]`` is put back to the initial state *before* step ``t`` is processed.

:class:`memagent.memory.DNC` is such a core (:func:`build_dnc_core` builds one from flat keyword
arguments); :class:`LSTMCore` is a plain LSTM with the same contract, useful to compare cores and as a
cheap test double.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import torch as th
from torch import nn

__all__ = ["LSTMCore", "LSTMState", "build_dnc_core", "check_core", "make_core"]


class LSTMState(NamedTuple):
    """State of :class:`LSTMCore`.

    :param hidden: hidden state ``h``, shape ``(B, L, H)`` (batch first, unlike ``nn.LSTM``).
    :param cell: cell state ``c``, shape ``(B, L, H)``.
    """

    hidden: th.Tensor
    cell: th.Tensor


class LSTMCore(nn.Module):
    """An ``nn.LSTM`` behind the recurrent-core contract (zero initial state, per-sample resets).

    The sequence is cut only at the time steps where some sample starts an episode, and each piece is
    run by the fused ``nn.LSTM`` kernel, so sequences without resets cost a single call.

    :param input_size: size ``I`` of an input step.
    :param hidden_size: LSTM width ``H`` (also the output size).
    :param num_layers: number of stacked LSTM layers ``L``.
    :param output_size: if given and different from ``hidden_size``, a linear map of ``h_t`` to this size.
    """

    def __init__(
        self, input_size: int, hidden_size: int = 64, num_layers: int = 1, output_size: int | None = None
    ) -> None:
        super().__init__()
        output_size = hidden_size if output_size is None else output_size
        checks = (
            ("input_size", input_size),
            ("hidden_size", hidden_size),
            ("num_layers", num_layers),
            ("output_size", output_size),
        )
        for name, value in checks:
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"LSTMCore: {name} must be a positive int, got {value!r}")
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.output_size = output_size
        self.lstm = nn.LSTM(input_size, hidden_size, num_layers=num_layers, batch_first=True)
        self.projection = nn.Linear(hidden_size, output_size) if output_size != hidden_size else nn.Identity()

    def initial_state(
        self, batch_size: int, device: th.device | str | None = None, dtype: th.dtype | None = None
    ) -> LSTMState:
        """Zero state, fields of shape ``(batch_size, L, H)``."""
        param = next(self.parameters())
        shape = (batch_size, self.num_layers, self.hidden_size)
        device = param.device if device is None else device
        dtype = param.dtype if dtype is None else dtype
        return LSTMState(
            th.zeros(shape, device=device, dtype=dtype), th.zeros(shape, device=device, dtype=dtype)
        )

    def reset_state(self, state: LSTMState, mask: th.Tensor) -> LSTMState:
        """Put the samples flagged in ``mask`` (B,) bool back to the (zero) initial state."""
        keep = ~mask.view(-1, 1, 1)
        return LSTMState(state.hidden * keep, state.cell * keep)

    def forward(
        self, x: th.Tensor, state: LSTMState | None = None, episode_starts: th.Tensor | None = None
    ) -> tuple[th.Tensor, LSTMState]:
        """Run the LSTM over ``x`` (B, T, I) with per-sample resets; returns ``y`` (B, T, O) and the state."""
        batch, steps = x.shape[0], x.shape[1]
        if state is None:
            state = self.initial_state(batch, device=x.device, dtype=x.dtype)
        if episode_starts is None:
            episode_starts = th.zeros(batch, steps, dtype=th.bool, device=x.device)
        starts = episode_starts.bool()
        cuts = [0, *(th.nonzero(starts[:, 1:].any(dim=0)).flatten() + 1).tolist(), steps]
        outputs = []
        for begin, end in zip(cuts[:-1], cuts[1:]):
            state = self.reset_state(state, starts[:, begin])
            hc = (state.hidden.transpose(0, 1).contiguous(), state.cell.transpose(0, 1).contiguous())
            y, (h, c) = self.lstm(x[:, begin:end], hc)
            state = LSTMState(h.transpose(0, 1), c.transpose(0, 1))
            outputs.append(y)
        return self.projection(th.cat(outputs, dim=1)), state


def build_dnc_core(
    input_size: int,
    hidden_size: int = 64,
    output_size: int = 64,
    memory_size: int = 16,
    word_size: int = 16,
    num_read_heads: int = 2,
    num_write_heads: int = 1,
    allocation: bool = True,
    temporal_links: bool = True,
    memory_kwargs: dict[str, Any] | None = None,
) -> nn.Module:
    """Build a :class:`memagent.memory.DNC` core from flat keyword arguments.

    The defaults are sized for reinforcement learning on a CPU: ``N = 16`` slots of ``W = 16`` words,
    ``R = 2`` read heads and a 64-unit controller. An RL agent needs to hold a handful of facts (a cue, the
    current task, the last few rewards), not the thousands of a copy task, and the DNC's cost per step
    grows as ``O(N^2)`` (temporal link matrix) and ``O(N log N)`` (allocation sort) per sample: at these
    sizes one step of a batch of 8 environments costs a few tenths of a millisecond and a PPO run on a
    2-core CPU takes minutes. The state of one environment is then ~3 KiB (see
    :func:`memagent.policies.state.state_nbytes_per_sample`).

    :param input_size: size ``I`` of an input step (the features extractor's output).
    :param hidden_size: controller width.
    :param output_size: size ``O`` of the DNC output ``y_t = W_y [h_t; r_t]`` (the latent the heads read).
    :param memory_size: number of memory slots ``N``.
    :param word_size: word size ``W``.
    :param num_read_heads: number of read heads ``R``.
    :param num_write_heads: number of write heads.
    :param allocation: use dynamic allocation (usage, free gates).
    :param temporal_links: keep the ``N x N`` temporal link matrix (forward/backward reads).
    :param memory_kwargs: further :class:`memagent.memory.MemoryConfig` fields (e.g. ``usage_decay``).
    """
    from memagent.memory import DNC, MemoryConfig

    memory = MemoryConfig(
        memory_size=memory_size,
        word_size=word_size,
        num_read_heads=num_read_heads,
        num_write_heads=num_write_heads,
        allocation=allocation,
        temporal_links=temporal_links,
        **(memory_kwargs or {}),
    )
    return DNC(input_size, hidden_size, output_size, memory=memory)


def make_core(core_class: Callable[..., nn.Module], core_kwargs: dict[str, Any], **fixed: Any) -> nn.Module:
    """Call ``core_class(**fixed, **core_kwargs)``; a rejected keyword raises a ``TypeError`` that lists
    the keywords ``core_class`` accepts.

    :param core_class: class or factory of a core.
    :param core_kwargs: the user's keyword arguments.
    :param fixed: keywords the caller sets itself (``input_size``, and ``output_size`` for extractors).
    """
    clash = sorted(set(fixed) & set(core_kwargs))
    if clash:
        raise ValueError(f"core_kwargs: {clash} are set by the caller, remove them from core_kwargs")
    try:
        parameters = inspect.signature(core_class).parameters
    except (TypeError, ValueError):  # builtins or C callables without a signature
        parameters = None
    if parameters is not None and not any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        unknown = sorted(set(core_kwargs) - set(parameters))
        if unknown:
            accepted = [name for name in parameters if name not in fixed]
            raise TypeError(
                f"core_kwargs: {unknown} not accepted by {getattr(core_class, '__name__', core_class)}; "
                f"accepted: {accepted}"
            )
    return core_class(**fixed, **core_kwargs)


def check_core(core: Any, name: str = "core") -> None:
    """Raise ``TypeError`` unless ``core`` follows the recurrent-core contract (see module docstring).

    :param core: the object to check.
    :param name: how the error message calls it (e.g. the keyword argument that produced it).
    """
    if not isinstance(core, nn.Module):
        raise TypeError(f"{name}: expected an nn.Module recurrent core, got {type(core).__name__}")
    missing = [attr for attr in ("initial_state", "forward") if not callable(getattr(core, attr, None))]
    if missing:
        raise TypeError(
            f"{name}: {type(core).__name__} lacks {missing}; a core needs "
            "initial_state(batch_size, device, dtype) and "
            "forward(x (B, T, I), state, episode_starts (B, T)) -> (y, state)"
        )
    output_size = getattr(core, "output_size", None)
    if not isinstance(output_size, int) or output_size < 1:
        raise TypeError(
            f"{name}: {type(core).__name__}.output_size must be a positive int, got {output_size!r}"
        )
