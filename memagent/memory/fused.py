"""Fused versions of the two costliest DNC mechanisms, with hand-written backward passes.

Each function computes exactly what its reference in :mod:`memagent.memory.addressing` computes
(tests compare values and gradients, and run ``gradcheck``), but

- allocates one output instead of several N x N / N x W temporaries, and
- saves only its inputs for backward (the previous link / memory, which the previous step produced
  anyway, and small vectors), recomputing the cheap products there instead of keeping them.

The O(N^2) link update and the O(N W) erase-and-write dominate the DNC's time and activation memory.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["temporal_link_and_directional_weightings", "erase_and_write", "content_weighting", "lstm_cell"]


def _apply(function: type[torch.autograd.Function], *args):
    """``function.apply(*args)``, or its forward alone when no input needs a gradient (rollouts,
    evaluation): that skips the autograd bookkeeping, which dominates at small sizes.

    The functions are written in the ``forward(*args)`` + ``setup_context`` style with
    ``generate_vmap_rule = True``, so they also work under ``torch.func`` transforms (``grad``,
    ``vmap``, ``functional_call``-based MAML). Their backward passes are built from differentiable
    torch operations (not ``once_differentiable``), so double backward (second-order MAML) works too.
    """
    if torch.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args):
        return function.apply(*args)
    return function.forward(*args)


def _link_scale(w: Tensor) -> Tensor:
    """``1 - w[i] - w[j]`` of shape (M, N, N) for write weights ``w`` of shape (M, N)."""
    return (1.0 - w).unsqueeze(-1) - w.unsqueeze(-2)


class _LinkAndDirections(torch.autograd.Function):
    """``L_t = (1 - w_i - w_j) L_{t-1} + w_i p_{t-1,j}`` (zero diagonal), ``f_t = L_t w^r``,
    ``b_t = L_t^T w^r`` and ``p_t = (1 - sum w) p_{t-1} + w``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(prev_link: Tensor, prev_precedence: Tensor, write_weights: Tensor, prev_read_weights: Tensor):
        b, hw, n, _ = prev_link.shape
        r = prev_read_weights.shape[1]
        link_prev = prev_link.reshape(b * hw, n, n)
        w = write_weights.reshape(b * hw, n)
        p = prev_precedence.reshape(b * hw, n)
        link = _link_scale(w)
        link.mul_(link_prev)
        link.baddbmm_(w.unsqueeze(-1), p.unsqueeze(-2))
        link.diagonal(dim1=-2, dim2=-1).zero_()
        wr = prev_read_weights.unsqueeze(1).expand(b, hw, r, n).reshape(b * hw, r, n)
        forward_w = torch.bmm(wr, link.transpose(1, 2))  # (M, R, N): f[i] = sum_j L[i, j] w[j]
        backward_w = torch.bmm(wr, link)  # (M, R, N): b[j] = sum_i L[i, j] w[i]
        precedence = torch.addcmul(write_weights, 1.0 - write_weights.sum(-1, keepdim=True), prev_precedence)
        return (
            link.view(b, hw, n, n),
            forward_w.view(b, hw, r, n).transpose(1, 2),
            backward_w.view(b, hw, r, n).transpose(1, 2),
            precedence,
        )

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs, output[0])

    @staticmethod
    def backward(
        ctx, grad_link: Tensor, grad_forward: Tensor, grad_backward: Tensor, grad_precedence: Tensor
    ):
        prev_link, prev_precedence, write_weights, prev_read_weights, link = ctx.saved_tensors
        b, hw, n, _ = prev_link.shape
        r = prev_read_weights.shape[1]
        m = b * hw
        wr = prev_read_weights.unsqueeze(1).expand(b, hw, r, n).reshape(m, r, n)
        link = link.reshape(m, n, n)
        g_f = grad_forward.transpose(1, 2).reshape(m, r, n)
        g_b = grad_backward.transpose(1, 2).reshape(m, r, n)
        # Gradient reaching L_t: from the next step and from f_t, b_t.
        g = torch.baddbmm(grad_link.reshape(m, n, n), g_f.transpose(1, 2), wr)  # f[r,i] = sum_j L[i,j] w[r,j]
        g.baddbmm_(wr.transpose(1, 2), g_b)  # b[r,j] = sum_i L[i,j] w[r,i]
        g.diagonal(dim1=-2, dim2=-1).zero_()  # the diagonal is constant 0
        grad_read = torch.bmm(g_f, link).add_(torch.bmm(g_b, link.transpose(1, 2)))
        grad_read = grad_read.view(b, hw, r, n).sum(1)
        w = write_weights.reshape(m, n)
        p = prev_precedence.reshape(m, n)
        buffer = torch.mul(g, prev_link.reshape(m, n, n))
        grad_w = torch.bmm(g, p.unsqueeze(-1)).squeeze(-1) - buffer.sum(2) - buffer.sum(1)
        grad_p = torch.bmm(w.unsqueeze(1), g).squeeze(1)
        if torch.is_grad_enabled():  # double backward / torch.func: no out= (not differentiable)
            grad_prev_link = _link_scale(w) * g
        else:  # reuse the N x N buffer
            grad_prev_link = torch.sub((1.0 - w).unsqueeze(-1), w.unsqueeze(-2), out=buffer).mul_(g)
        # p_t = (1 - sum_i w_i) p_{t-1} + w
        grad_p = grad_p.view(b, hw, n).addcmul_(1.0 - write_weights.sum(-1, keepdim=True), grad_precedence)
        grad_w = grad_w.view(b, hw, n).add_(grad_precedence)
        grad_w.sub_((grad_precedence * prev_precedence).sum(-1, keepdim=True))
        return grad_prev_link.view(b, hw, n, n), grad_p, grad_w, grad_read


def temporal_link_and_directional_weightings(
    prev_link: Tensor, prev_precedence: Tensor, write_weights: Tensor, prev_read_weights: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Fused :func:`~memagent.memory.addressing.temporal_link`,
    :func:`~memagent.memory.addressing.directional_weightings` and
    :func:`~memagent.memory.addressing.precedence`.

    :param prev_link: ``L_{t-1}`` (B, Hw, N, N).
    :param prev_precedence: ``p_{t-1}`` (B, Hw, N).
    :param write_weights: ``w_t^w`` (B, Hw, N).
    :param prev_read_weights: ``w_{t-1}^r`` (B, R, N).
    :return: ``(L_t (B, Hw, N, N), f_t (B, R, Hw, N), b_t (B, R, Hw, N), p_t (B, Hw, N))``.
    """
    return _apply(
        _LinkAndDirections,
        prev_link.contiguous(),
        prev_precedence.contiguous(),
        write_weights.contiguous(),
        prev_read_weights,
    )


class _EraseAndWrite(torch.autograd.Function):
    """One write head: ``M_t = M_{t-1} o (1 - w e^T) + w v^T = M_{t-1} + w o (v - M_{t-1} o e)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(memory: Tensor, write_weights: Tensor, erase_vectors: Tensor, write_vectors: Tensor):
        w = write_weights.transpose(1, 2)  # (B, N, 1)
        return torch.addcmul(memory, w, torch.addcmul(write_vectors, memory, erase_vectors, value=-1.0))

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(*inputs)

    @staticmethod
    def backward(ctx, grad: Tensor):
        memory, write_weights, erase_vectors, write_vectors = ctx.saved_tensors
        w = write_weights.transpose(1, 2)  # (B, N, 1)
        grad_w_rows = grad * w
        grad_memory = torch.addcmul(grad, grad_w_rows, erase_vectors, value=-1.0)
        grad_v = torch.bmm(write_weights, grad)  # (B, 1, W)
        grad_times_memory = grad * memory
        grad_e = -torch.bmm(write_weights, grad_times_memory)
        grad_weights = torch.bmm(grad, write_vectors.transpose(1, 2)) - torch.bmm(
            grad_times_memory, erase_vectors.transpose(1, 2)
        )
        return grad_memory, grad_weights.transpose(1, 2), grad_e, grad_v


def erase_and_write(
    memory: Tensor, write_weights: Tensor, erase_vectors: Tensor, write_vectors: Tensor
) -> Tensor:
    """Fused :func:`~memagent.memory.addressing.erase_and_write` for one write head (falls back to the
    reference for several).

    :param memory: ``M_{t-1}`` (B, N, W).
    :param write_weights: ``w_t^w`` (B, Hw, N).
    :param erase_vectors: ``e_t`` (B, Hw, W).
    :param write_vectors: ``v_t`` (B, Hw, W).
    :return: ``M_t`` (B, N, W).
    """
    if write_weights.shape[1] != 1:
        from memagent.memory.addressing import erase_and_write as reference

        return reference(memory, write_weights, erase_vectors, write_vectors)
    return _apply(_EraseAndWrite, memory, write_weights, erase_vectors, write_vectors)


class _CosineSimilarity(torch.autograd.Function):
    """``D[h, n] = k_h . M_n / (|k_h| |M_n| + eps)`` with ``|x| = sqrt(x . x + eps)``."""

    generate_vmap_rule = True

    @staticmethod
    def _norms(memory: Tensor, keys: Tensor, epsilon: float) -> tuple[Tensor, Tensor, Tensor]:
        key_norm = torch.sqrt((keys * keys).sum(-1) + epsilon)  # (B, H)
        memory_norm = torch.sqrt(torch.linalg.vector_norm(memory, dim=-1).square() + epsilon)  # (B, N)
        denominator = key_norm.unsqueeze(-1) * memory_norm.unsqueeze(1) + epsilon
        return key_norm, memory_norm, denominator

    @staticmethod
    def forward(memory: Tensor, keys: Tensor, epsilon: float):
        dot = torch.bmm(keys, memory.transpose(1, 2))  # (B, H, N)
        return dot / _CosineSimilarity._norms(memory, keys, epsilon)[2]

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        memory, keys, epsilon = inputs
        ctx.epsilon = epsilon
        ctx.save_for_backward(memory, keys, output)

    @staticmethod
    def backward(ctx, grad: Tensor):
        memory, keys, similarity = ctx.saved_tensors
        # the norms are recomputed (O(B (H + N) W), cheap) rather than kept as activations
        key_norm, memory_norm, denominator = _CosineSimilarity._norms(memory, keys, ctx.epsilon)
        grad_dot = grad / denominator  # (B, H, N)
        grad_denominator = -grad_dot * similarity
        grad_key_norm = (grad_denominator * memory_norm.unsqueeze(1)).sum(-1)  # (B, H)
        grad_memory_norm = (grad_denominator * key_norm.unsqueeze(-1)).sum(1)  # (B, N)
        grad_keys = torch.bmm(grad_dot, memory).addcmul_(keys, (grad_key_norm / key_norm).unsqueeze(-1))
        grad_memory = torch.bmm(grad_dot.transpose(1, 2), keys)
        grad_memory.addcmul_(memory, (grad_memory_norm / memory_norm).unsqueeze(-1))
        return grad_memory, grad_keys, None


def content_weighting(memory: Tensor, keys: Tensor, strengths: Tensor, epsilon: float = 1e-6) -> Tensor:
    """Fused :func:`~memagent.memory.addressing.content_weighting`: the cosine similarity has a
    hand-written backward (no N x W temporaries).

    :param memory: ``M`` (B, N, W).
    :param keys: ``k`` (B, H, W).
    :param strengths: ``beta`` (B, H).
    :return: weightings (B, H, N).
    """
    similarity = _apply(_CosineSimilarity, memory, keys, epsilon)
    return torch.softmax(similarity * strengths.unsqueeze(-1), dim=-1)


class _LSTMCell(torch.autograd.Function):
    """LSTM cell from pre-activation gates ``[i, f, g, o]`` (nn.LSTMCell's order):
    ``c = s(f) c_prev + s(i) tanh(g)``, ``h = s(o) tanh(c)``."""

    generate_vmap_rule = True

    @staticmethod
    def forward(gates: Tensor, prev_cell: Tensor):
        hsize = prev_cell.shape[-1]
        acts = torch.sigmoid(gates)
        cell_input = torch.tanh(gates[:, 2 * hsize : 3 * hsize])
        i, f, o = acts[:, :hsize], acts[:, hsize : 2 * hsize], acts[:, 3 * hsize :]
        cell = torch.addcmul(f * prev_cell, i, cell_input)
        hidden = o * torch.tanh(cell)
        return hidden, cell

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        gates, prev_cell = inputs
        ctx.save_for_backward(gates, prev_cell, output[1])

    @staticmethod
    def backward(ctx, grad_hidden: Tensor, grad_cell: Tensor):
        gates, prev_cell, cell = ctx.saved_tensors
        hsize = prev_cell.shape[-1]
        # the activations are recomputed from the gates (three pointwise ops on (B, 4H))
        acts = torch.sigmoid(gates)
        cell_input = torch.tanh(gates[:, 2 * hsize : 3 * hsize])
        tanh_cell = torch.tanh(cell)
        i, f, o = acts[:, :hsize], acts[:, hsize : 2 * hsize], acts[:, 3 * hsize :]
        grad_c = grad_cell + grad_hidden * o * (1.0 - tanh_cell * tanh_cell)
        grad_gates = torch.cat(
            [
                grad_c * cell_input,  # d i
                grad_c * prev_cell,  # d f
                grad_c * i,  # d g
                grad_hidden * tanh_cell,  # d o
            ],
            dim=1,
        )
        # through the activations: sigmoid' = s (1 - s), tanh' = 1 - tanh^2
        derivative = acts * (1.0 - acts)
        derivative[:, 2 * hsize : 3 * hsize] = 1.0 - cell_input * cell_input
        return grad_gates.mul_(derivative), grad_c * f


def lstm_cell(gates: Tensor, prev_cell: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM cell update with a hand-written backward (one autograd node instead of ~14).

    :param gates: pre-activation gates (B, 4H), ordered input, forget, cell, output (as nn.LSTMCell).
    :param prev_cell: ``c_{t-1}`` (B, H).
    :return: ``(h_t (B, H), c_t (B, H))``.
    """
    return _apply(_LSTMCell, gates, prev_cell)
