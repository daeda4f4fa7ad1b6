"""The Differentiable Neural Computer: an LSTM controller with external memory (Graves et al. 2016).

At step t the controller reads ``[x_t, r_{t-1}]`` (the input and the previous step's read vectors),
emits the interface ``xi_t``, the memory writes then reads, and the output is
``y_t = W_y [h_t, r_t] + b``. Gradients flow through the memory across time; use
:meth:`DNC.detach_state` between truncated-BPTT segments.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.utils.checkpoint import checkpoint

from memagent.memory import fused, native
from memagent.memory.access import InterfaceLayer, MemoryAccess, MemoryState
from memagent.memory.config import MemoryConfig
from memagent.memory.native.sequence import dnc_sequence

__all__ = ["DNC", "DNCState"]


class DNCState(NamedTuple):
    """Flat state of a :class:`DNC`; every field is a tensor with the batch dimension first.

    controller_hidden (B, H); controller_cell (B, H); memory (B, N, W); usage (B, N); link
    (B, Hw, N, N) or (B, 0) without temporal links; precedence (B, Hw, N) or (B, 0); read_weights
    (B, R, N); write_weights (B, Hw, N); read_vectors (B, R, W).
    """

    controller_hidden: Tensor
    controller_cell: Tensor
    memory: Tensor
    usage: Tensor
    link: Tensor
    precedence: Tensor
    read_weights: Tensor
    write_weights: Tensor
    read_vectors: Tensor


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"DNC: {name} must be a positive int, got {value!r}")


class DNC(nn.Module):
    """Differentiable Neural Computer with an LSTM controller.

    :param input_size: I, width of the input ``x_t``.
    :param hidden_size: H, width of the LSTM controller.
    :param output_size: O, width of the output ``y_t``.
    :param memory: the memory configuration (default ``MemoryConfig()``).
    :param fused: use the fused memory kernels with hand-written backward passes
        (:mod:`memagent.memory.fused`); False runs the reference functions of
        :mod:`memagent.memory.addressing` through autograd (same values and gradients, slower).
    :param checkpoint_steps: if set, training-mode forward passes keep only the state every
        ``checkpoint_steps`` steps and recompute the steps in between during backward (gradient
        checkpointing through time): activation memory falls roughly by that factor, time rises by
        about one forward pass. Values and gradients are unchanged.
    :param compile_access: opt-in: run the memory-access step (forward and backward) through
        ``torch.compile`` (needs ``fused=True`` and one write head; not under ``torch.func``
        transforms). On CPU training is ~1.4x faster after ~40 s of compilation per batch size.

    On CPU, with ``fused=True``, one write head and plain float32 / float64 tensors, the whole
    recurrence runs on the native C kernel of :mod:`memagent.memory.native` as one autograd node
    (~3x faster than the torch path, less activation memory; same values and gradients).
    ``MEMAGENT_NATIVE=0`` switches it off; ``torch.func`` transforms, CUDA, ``compile_access`` and
    training with ``checkpoint_steps`` use the torch path.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        output_size: int,
        memory: MemoryConfig | None = None,
        *,
        fused: bool = True,
        checkpoint_steps: int | None = None,
        compile_access: bool = False,
    ) -> None:
        super().__init__()
        _check_positive_int("input_size", input_size)
        _check_positive_int("hidden_size", hidden_size)
        _check_positive_int("output_size", output_size)
        if checkpoint_steps is not None:
            _check_positive_int("checkpoint_steps", checkpoint_steps)
        self.checkpoint_steps = checkpoint_steps
        self.fused = fused
        memory = MemoryConfig() if memory is None else memory
        if not isinstance(memory, MemoryConfig):
            raise TypeError(f"DNC: memory must be a MemoryConfig, got {type(memory).__name__}")
        if not isinstance(compile_access, bool):
            raise TypeError(f"DNC: compile_access must be a bool, got {compile_access!r}")
        if compile_access and (not fused or memory.num_write_heads != 1):
            raise ValueError(
                "DNC: compile_access=True needs fused=True and memory.num_write_heads == 1, got "
                f"fused={fused}, num_write_heads={memory.num_write_heads}"
            )
        self.compile_access = compile_access
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.output_size = output_size
        self.config = memory
        read_size = memory.num_read_heads * memory.word_size
        self.read_size = read_size
        self.controller = nn.LSTMCell(input_size + read_size, hidden_size)
        self.interface = InterfaceLayer(hidden_size, memory)
        self.access = MemoryAccess(memory, fused=fused)
        self.output = nn.Linear(hidden_size + read_size, output_size)

    # ------------------------------------------------------------------ state helpers
    def initial_state(
        self, batch_size: int, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> DNCState:
        """The all-zero initial state for ``batch_size`` samples (default: the parameters' device, dtype)."""
        ref = self.output.weight
        device = ref.device if device is None else device
        dtype = ref.dtype if dtype is None else dtype
        mem = self.access.initial_state(batch_size, device=device, dtype=dtype)
        zeros = torch.zeros(batch_size, self.hidden_size, device=device, dtype=dtype)
        return DNCState(zeros, zeros.clone(), *mem)

    @staticmethod
    def detach_state(state: DNCState) -> DNCState:
        """The same state cut from the autograd graph (for truncated backpropagation through time)."""
        return DNCState(*(field.detach() for field in state))

    @staticmethod
    def reset_state(state: DNCState, mask: Tensor) -> DNCState:
        """Reset the samples flagged in ``mask`` (B,) bool to the (zero) initial state; others unchanged."""
        mask = torch.as_tensor(mask, device=state.memory.device).to(torch.bool)
        batch = state.memory.shape[0]
        if mask.shape != (batch,):
            raise ValueError(f"reset_state: mask must have shape ({batch},), got {tuple(mask.shape)}")
        fields = []
        for field in state:
            view = mask.view(batch, *([1] * (field.dim() - 1)))
            fields.append(field.masked_fill(view, 0.0))
        return DNCState(*fields)

    def _check_state(self, state: DNCState, batch: int) -> None:
        if not isinstance(state, DNCState):
            raise TypeError(f"DNC: state must be a DNCState, got {type(state).__name__}")
        if state.memory.shape[0] != batch:
            raise ValueError(f"DNC: state has batch size {state.memory.shape[0]}, input has {batch}")

    # ------------------------------------------------------------------ forward
    def forward(
        self, x: Tensor, state: DNCState | None = None, episode_starts: Tensor | None = None
    ) -> tuple[Tensor, DNCState]:
        """Run the DNC over a sequence.

        :param x: inputs of shape (B, T, I).
        :param state: the state before the first step (default: the zero initial state).
        :param episode_starts: optional (B, T) bool; where True, that sample's state is reset to the
            initial state before step t is processed.
        :return: ``(y (B, T, O), final DNCState)``.
        """
        if x.dim() != 3 or x.shape[-1] != self.input_size:
            raise ValueError(
                f"DNC.forward: x must have shape (B, T, {self.input_size}), got {tuple(x.shape)}"
            )
        batch, steps, _ = x.shape
        state = self.initial_state(batch, x.device, x.dtype) if state is None else state
        self._check_state(state, batch)
        if episode_starts is not None:
            episode_starts = torch.as_tensor(episode_starts, device=x.device).to(torch.bool)
            if episode_starts.shape != (batch, steps):
                raise ValueError(
                    f"DNC.forward: episode_starts must have shape ({batch}, {steps}), "
                    f"got {tuple(episode_starts.shape)}"
                )

        if self._native_eligible(x, state):
            return self._forward_native(x, state, episode_starts)
        cell = self.controller
        in_size = self.input_size
        # The input's share of the LSTM gates for all steps at once; per step only [r_{t-1}, h_{t-1}].
        gates_x = torch.nn.functional.linear(x, cell.weight_ih[:, :in_size], cell.bias_ih + cell.bias_hh)
        weight_reads = cell.weight_ih[:, in_size:].t()  # (R W, 4H), a view: no copy per call
        weight_hidden = cell.weight_hh.t()

        chunk = self.checkpoint_steps
        fields = tuple(state)
        if chunk is None or not torch.is_grad_enabled() or steps <= chunk:
            hiddens, reads, *fields = self._run_steps(
                gates_x, episode_starts, weight_reads, weight_hidden, *fields
            )
        else:
            hidden_chunks, read_chunks = [], []
            for t0 in range(0, steps, chunk):
                starts = None if episode_starts is None else episode_starts[:, t0 : t0 + chunk]
                h_k, r_k, *fields = checkpoint(
                    self._run_steps,
                    gates_x[:, t0 : t0 + chunk],
                    starts,
                    weight_reads,
                    weight_hidden,
                    *fields,
                    use_reentrant=False,
                )
                hidden_chunks.append(h_k)
                read_chunks.append(r_k)
            hiddens, reads = torch.cat(hidden_chunks, dim=1), torch.cat(read_chunks, dim=1)
        y = self.output(torch.cat([hiddens, reads], dim=-1))
        return y, DNCState(*fields)

    def _native_eligible(self, x: Tensor, state: DNCState) -> bool:
        """Whether the whole sequence can run on the native kernel (:mod:`memagent.memory.native`):
        one write head, fused, no compile / checkpointing during training, plain CPU float tensors."""
        if not self.fused or self.compile_access or self.config.num_write_heads != 1:
            return False
        if self.checkpoint_steps is not None and torch.is_grad_enabled():
            return False
        cell, face = self.controller, self.interface.linear  # (attributes: cheaper than .parameters())
        weights = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh, face.weight, face.bias)
        return native.supports(x, *weights, self.output.weight, *state)

    def _forward_native(
        self, x: Tensor, state: DNCState, episode_starts: Tensor | None
    ) -> tuple[Tensor, DNCState]:
        """:meth:`forward` on the native kernel: the recurrence as one autograd node
        (:func:`memagent.memory.native.sequence.dnc_sequence`), the output layer over all steps at once."""
        cell = self.controller
        hiddens, reads, *fields = dnc_sequence(
            self.config,
            x,
            cell.weight_ih,
            cell.weight_hh,
            cell.bias_ih + cell.bias_hh,
            self.interface.linear.weight,
            self.interface.linear.bias,
            tuple(state),
            episode_starts,
        )
        y = self.output(torch.cat([hiddens, reads], dim=-1))
        return y, DNCState(*fields)

    def _run_steps(
        self,
        gates_x: Tensor,
        episode_starts: Tensor | None,
        weight_reads: Tensor,
        weight_hidden: Tensor,
        *fields: Tensor,
    ) -> tuple[Tensor, ...]:
        """The recurrence over ``gates_x`` (B, k, 4H): returns ``(h (B, k, H), reads (B, k, R W),
        *final state fields)``."""
        batch, steps, _ = gates_x.shape
        reset_steps: set[int] = set()
        if episode_starts is not None:
            reset_steps = {int(t) for t in torch.nonzero(episode_starts.any(0)).flatten().tolist()}
        h, c = fields[0], fields[1]
        mem = MemoryState(*fields[2:])
        hiddens, reads_all = [], []
        for t, gx in enumerate(gates_x.unbind(1)):
            if t in reset_steps:
                reset = self.reset_state(DNCState(h, c, *mem), episode_starts[:, t])
                h, c, mem = reset.controller_hidden, reset.controller_cell, MemoryState(*reset[2:])
            h, c, reads, mem = self._step(gx, weight_reads, weight_hidden, h, c, mem)
            hiddens.append(h)
            reads_all.append(reads)
        return (torch.stack(hiddens, dim=1), torch.stack(reads_all, dim=1), h, c, *mem)

    def _step(
        self,
        gates_x: Tensor,
        weight_reads: Tensor,
        weight_hidden: Tensor,
        h: Tensor,
        c: Tensor,
        mem: MemoryState,
    ) -> tuple[Tensor, Tensor, Tensor, MemoryState]:
        """One step: controller on ``[x_t, r_{t-1}]`` (``gates_x`` is the input's share of the gates,
        (B, 4H)), interface, memory write then read. Returns ``(h_t, c_t, r_t (B, R W), memory state)``."""
        batch, hsize = h.shape
        prev_reads = mem.read_vectors.reshape(batch, self.read_size)
        gates = torch.addmm(torch.addmm(gates_x, prev_reads, weight_reads), h, weight_hidden)
        if self.fused:
            h, c = fused.lstm_cell(gates, c)
        else:
            sig = torch.sigmoid(gates)  # LSTMCell gate order: input, forget, cell, output
            c = sig[:, hsize : 2 * hsize] * c + sig[:, :hsize] * torch.tanh(gates[:, 2 * hsize : 3 * hsize])
            h = sig[:, 3 * hsize :] * torch.tanh(c)
        if self.fused and self.config.num_write_heads == 1:  # the whole access step as one autograd node
            reads, fields = fused.access_step(
                self.interface.linear(h), mem, self.config, compiled=self.compile_access
            )
            mem = MemoryState(*fields)
        else:
            reads, mem = self.access(self.interface(h), mem)
        return h, c, reads.reshape(batch, self.read_size), mem

    def step(self, x: Tensor, state: DNCState) -> tuple[Tensor, DNCState]:
        """One step: ``x`` (B, I) and the state -> ``(y (B, O), new state)``."""
        if x.dim() != 2:
            raise ValueError(f"DNC.step: x must have shape (B, {self.input_size}), got {tuple(x.shape)}")
        y, state = self.forward(x.unsqueeze(1), state)
        return y[:, 0], state
