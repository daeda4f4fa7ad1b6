"""Memory access: interface parsing, the memory state and one read/write step (Graves et al. 2016).

The controller emits an interface vector ``xi_t``; :func:`parse_interface` splits it and applies the
paper's activations (oneplus strengths, sigmoid gates, softmax read modes); :class:`MemoryAccess`
runs one step of the addressing mechanisms of :mod:`memagent.memory.addressing` in the paper's order:
usage, write weighting, erase-then-write on the memory *before* the write, link update, then read
weighting and reads from the memory *after* the write.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memagent.memory import addressing, fused
from memagent.memory.config import MemoryConfig

__all__ = ["Interface", "MemoryState", "MemoryAccess", "InterfaceLayer", "interface_size", "parse_interface"]


class Interface(NamedTuple):
    """The activated interface ``xi_t`` (Methods, "Interface parameters").

    Shapes: read_keys (B, R, W); read_strengths (B, R) >= 1; write_keys (B, Hw, W); write_strengths
    (B, Hw) >= 1; erase_vectors (B, Hw, W) in [0, 1]; write_vectors (B, Hw, W); free_gates (B, R),
    allocation_gates (B, Hw), write_gates (B, Hw) in [0, 1]; read_modes (B, R, 2 Hw + 1) on the
    simplex, ordered [backward per write head, forward per write head, content].
    """

    read_keys: Tensor
    read_strengths: Tensor
    write_keys: Tensor
    write_strengths: Tensor
    erase_vectors: Tensor
    write_vectors: Tensor
    free_gates: Tensor
    allocation_gates: Tensor
    write_gates: Tensor
    read_modes: Tensor


class MemoryState(NamedTuple):
    """State of the memory; every field has the batch dimension first.

    memory (B, N, W); usage (B, N); link (B, Hw, N, N), or (B, 0) without temporal links; precedence
    (B, Hw, N), or (B, 0) without temporal links; read_weights (B, R, N); write_weights (B, Hw, N);
    read_vectors (B, R, W).
    """

    memory: Tensor
    usage: Tensor
    link: Tensor
    precedence: Tensor
    read_weights: Tensor
    write_weights: Tensor
    read_vectors: Tensor


def oneplus(x: Tensor) -> Tensor:
    """``oneplus(x) = 1 + log(1 + e^x)``, the activation of key strengths (range [1, inf))."""
    return 1.0 + F.softplus(x)


def _interface_layout(config: MemoryConfig) -> list[tuple[str, int]]:
    """Names and widths of the raw interface vector's parts, grouped by activation (identity,
    oneplus, sigmoid, softmax) so each activation is one call; parts a configuration fixes are absent."""
    r, w, hw = config.num_read_heads, config.word_size, config.num_write_heads
    layout = [
        ("read_keys", r * w),
        ("write_keys", hw * w),
        ("write_vectors", hw * w),
        ("read_strengths", r),
        ("write_strengths", hw),
        ("erase_vectors", hw * w),
    ]
    if config.allocation:
        layout += [("free_gates", r), ("allocation_gates", hw)]
    layout.append(("write_gates", hw))
    if config.temporal_links:
        layout.append(("read_modes", r * config.num_read_modes))
    return layout


def interface_size(config: MemoryConfig) -> int:
    """Width of the raw interface vector the controller must emit for ``config``."""
    return sum(width for _, width in _interface_layout(config))


def parse_interface(vector: Tensor, config: MemoryConfig) -> Interface:
    """Split the raw interface vector and apply the paper's activations: keys and write vectors
    as they are, oneplus strengths, sigmoid erase vectors and gates, softmax read modes.

    Without allocation, free and allocation gates are fixed to 0; without temporal links the read
    modes are fixed to "content" (one-hot on the last mode). Those parts take no width in ``vector``.

    :param vector: raw interface ``xi_t`` of shape (B, interface_size(config)).
    :param config: the memory configuration.
    :return: the activated :class:`Interface`.
    """
    expected = interface_size(config)
    if vector.dim() != 2 or vector.shape[-1] != expected:
        raise ValueError(
            f"parse_interface: vector must have shape (B, {expected}), got {tuple(vector.shape)}"
        )
    batch = vector.shape[0]
    r, w, hw = config.num_read_heads, config.word_size, config.num_write_heads
    n_keys = (r + 2 * hw) * w  # read keys, write keys, write vectors
    n_strengths = r + hw
    n_sigmoid = hw * w + (r + hw if config.allocation else 0) + hw
    raw_keys, raw_strengths, raw_sigmoid, raw_modes = torch.split(
        vector, [n_keys, n_strengths, n_sigmoid, expected - n_keys - n_strengths - n_sigmoid], dim=-1
    )
    # one contiguous copy so the per-head keys are dense for bmm
    read_keys, write_keys, write_vectors = (
        raw_keys.contiguous().view(batch, r + 2 * hw, w).split([r, hw, hw], dim=1)
    )
    read_strengths, write_strengths = oneplus(raw_strengths).split([r, hw], dim=-1)
    gates = torch.sigmoid(raw_sigmoid)
    erase_vectors = gates[:, : hw * w].view(batch, hw, w)
    if config.allocation:
        free_gates, allocation_gates, write_gates = gates[:, hw * w :].split([r, hw, hw], dim=-1)
    else:
        free_gates = vector.new_zeros(batch, r)
        allocation_gates = vector.new_zeros(batch, hw)
        write_gates = gates[:, hw * w :]
    if config.temporal_links:
        read_modes = torch.softmax(raw_modes.view(batch, r, config.num_read_modes), dim=-1)
    else:
        read_modes = vector.new_zeros(batch, r, config.num_read_modes)
        read_modes[..., -1] = 1.0
    return Interface(
        read_keys=read_keys,
        read_strengths=read_strengths,
        write_keys=write_keys,
        write_strengths=write_strengths,
        erase_vectors=erase_vectors,
        write_vectors=write_vectors,
        free_gates=free_gates,
        allocation_gates=allocation_gates,
        write_gates=write_gates,
        read_modes=read_modes,
    )


class InterfaceLayer(nn.Module):
    """A linear map from the controller output to the activated :class:`Interface`.

    :param input_size: width of the controller output.
    :param config: the memory configuration.
    """

    def __init__(self, input_size: int, config: MemoryConfig) -> None:
        super().__init__()
        self.config = config
        self.linear = nn.Linear(input_size, interface_size(config))

    def forward(self, controller_output: Tensor) -> Interface:
        """:param controller_output: (B, input_size). :return: the activated interface."""
        return parse_interface(self.linear(controller_output), self.config)


class MemoryAccess(nn.Module):
    """One step of DNC memory access; holds no parameters.

    :param config: the memory configuration.
    :param fused: use the kernels of :mod:`memagent.memory.fused` (link, erase-write, cosine
        similarity; same values and gradients as the reference functions, less time and activation
        memory).
    """

    def __init__(self, config: MemoryConfig, fused: bool = True) -> None:
        super().__init__()
        if not isinstance(config, MemoryConfig):
            raise TypeError(f"MemoryAccess: config must be a MemoryConfig, got {type(config).__name__}")
        self.config = config
        self.fused = fused

    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> MemoryState:
        """The all-zero state (deterministic). Without temporal links, link and precedence are (B, 0)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"initial_state: batch_size must be a positive int, got {batch_size!r}")
        c = self.config
        b, n, w, r, hw = batch_size, c.memory_size, c.word_size, c.num_read_heads, c.num_write_heads
        kw = {"device": device, "dtype": dtype if dtype is not None else torch.get_default_dtype()}
        if c.temporal_links:
            link = torch.zeros(b, hw, n, n, **kw)
            prec = torch.zeros(b, hw, n, **kw)
        else:
            link = torch.zeros(b, 0, **kw)
            prec = torch.zeros(b, 0, **kw)
        return MemoryState(
            memory=torch.zeros(b, n, w, **kw),
            usage=torch.zeros(b, n, **kw),
            link=link,
            precedence=prec,
            read_weights=torch.zeros(b, r, n, **kw),
            write_weights=torch.zeros(b, hw, n, **kw),
            read_vectors=torch.zeros(b, r, w, **kw),
        )

    def forward(self, interface: Interface, state: MemoryState) -> tuple[Tensor, MemoryState]:
        """One write-then-read step.

        :param interface: the activated interface (see :class:`Interface`).
        :param state: the previous :class:`MemoryState`.
        :return: ``(read_vectors (B, R, W), new_state)``.
        """
        c = self.config
        eps = c.epsilon
        # Usage from the previous step's write and read weights (allocation needs it).
        if c.allocation:
            psi = addressing.retention(interface.free_gates, state.read_weights, c.usage_decay)
        else:  # free gates are fixed to 0: psi is the constant decay
            psi = c.usage_decay
        new_usage = addressing.usage(state.usage, state.write_weights, psi)
        # Write weighting against the memory before the write.
        content_weighting = fused.content_weighting if self.fused else addressing.content_weighting
        write_content = content_weighting(state.memory, interface.write_keys, interface.write_strengths, eps)
        if c.allocation:
            allocation = addressing.write_allocation_weightings(
                new_usage, interface.write_gates * interface.allocation_gates, eps
            )
            write_weights = addressing.write_weighting(
                write_content, allocation, interface.allocation_gates, interface.write_gates
            )
        else:
            write_weights = interface.write_gates.unsqueeze(-1) * write_content
        erase_and_write = fused.erase_and_write if self.fused else addressing.erase_and_write
        memory = erase_and_write(
            state.memory, write_weights, interface.erase_vectors, interface.write_vectors
        )
        # Temporal links from the previous precedence, then the new precedence.
        if c.temporal_links:
            if self.fused:
                link, forward_w, backward_w, prec = fused.temporal_link_and_directional_weightings(
                    state.link, state.precedence, write_weights, state.read_weights
                )
            else:
                link = addressing.temporal_link(state.link, state.precedence, write_weights)
                forward_w, backward_w = addressing.directional_weightings(link, state.read_weights)
                prec = addressing.precedence(state.precedence, write_weights)
        else:
            link, prec = state.link, state.precedence
            forward_w = backward_w = None
        # Reads from the memory after the write.
        read_content = content_weighting(memory, interface.read_keys, interface.read_strengths, eps)
        read_weights = addressing.read_weighting(read_content, forward_w, backward_w, interface.read_modes)
        reads = addressing.read_vectors(memory, read_weights)
        new_state = MemoryState(
            memory=memory,
            usage=new_usage,
            link=link,
            precedence=prec,
            read_weights=read_weights,
            write_weights=write_weights,
            read_vectors=reads,
        )
        return reads, new_state
