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

from memagent.memory import native

__all__ = [
    "temporal_link_and_directional_weightings",
    "erase_and_write",
    "content_weighting",
    "lstm_cell",
    "access_step",
]


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
        return _link_backward(*ctx.saved_tensors, grad_link, grad_forward, grad_backward, grad_precedence)


def _link_backward(
    prev_link: Tensor,
    prev_precedence: Tensor,
    write_weights: Tensor,
    prev_read_weights: Tensor,
    link: Tensor,
    grad_link: Tensor,
    grad_forward: Tensor,
    grad_backward: Tensor,
    grad_precedence: Tensor,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward of :class:`_LinkAndDirections`: gradients of ``(L_{t-1}, p_{t-1}, w^w, w^r_{t-1})``."""
    b, hw, n, _ = prev_link.shape
    r = prev_read_weights.shape[1]
    m = b * hw
    wr = prev_read_weights.unsqueeze(1).expand(b, hw, r, n).reshape(m, r, n)
    link = link.reshape(m, n, n)
    g_f = grad_forward.transpose(1, 2).reshape(m, r, n)
    g_b = grad_backward.transpose(1, 2).reshape(m, r, n)
    # Gradient reaching L_t: from the next step and from f_t (f[r,i] = sum_j L[i,j] w[r,j]) and b_t
    # (b[r,j] = sum_i L[i,j] w[r,i]), as one rank-2R update (one pass over the N x N gradient).
    left = torch.cat([g_f, wr], dim=1).transpose(1, 2)  # (M, N, 2R)
    right = torch.cat([wr, g_b], dim=1)  # (M, 2R, N)
    g = torch.baddbmm(grad_link.reshape(m, n, n), left, right)
    g.diagonal(dim1=-2, dim2=-1).zero_()  # the diagonal is constant 0
    # g_f L + g_b L^T; the second as (L g_b^T)^T so that L is not copied to a transposed layout
    grad_read = torch.bmm(g_f, link).add_(torch.bmm(link, g_b.transpose(1, 2)).transpose(1, 2))
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
        return _erase_and_write_backward(*ctx.saved_tensors, grad)


def _erase_and_write_backward(
    memory: Tensor, write_weights: Tensor, erase_vectors: Tensor, write_vectors: Tensor, grad: Tensor
) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Backward of :class:`_EraseAndWrite`: gradients of ``(M_{t-1}, w^w, e, v)``."""
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
        return (*_cosine_backward(*ctx.saved_tensors, ctx.epsilon, grad), None)


def _cosine_backward(
    memory: Tensor,
    keys: Tensor,
    similarity: Tensor,
    epsilon: float,
    grad: Tensor,
    grad_memory_in: Tensor | None = None,
    norms: tuple[Tensor, Tensor] | None = None,
) -> tuple[Tensor, Tensor]:
    """Backward of :class:`_CosineSimilarity`: gradients of ``(M, k)``; the gradient of ``M`` is
    added to ``grad_memory_in`` (B, N, W) when given (one pass fewer than a separate sum). ``norms``
    are the forward's ``(|k| (B, H), |M| (B, N))``; recomputed when not given."""
    if norms is None:  # recompute (O(B (H + N) W)) rather than keep them as activations
        key_norm, memory_norm, denominator = _CosineSimilarity._norms(memory, keys, epsilon)
    else:
        key_norm, memory_norm = norms
        denominator = key_norm.unsqueeze(-1) * memory_norm.unsqueeze(1) + epsilon
    grad_dot = grad / denominator  # (B, H, N)
    grad_denominator = -grad_dot * similarity
    grad_key_norm = (grad_denominator * memory_norm.unsqueeze(1)).sum(-1)  # (B, H)
    grad_memory_norm = (grad_denominator * key_norm.unsqueeze(-1)).sum(1)  # (B, N)
    grad_keys = torch.bmm(grad_dot, memory).addcmul_(keys, (grad_key_norm / key_norm).unsqueeze(-1))
    if grad_memory_in is None:
        grad_memory = torch.bmm(grad_dot.transpose(1, 2), keys)
    else:
        grad_memory = torch.baddbmm(grad_memory_in, grad_dot.transpose(1, 2), keys)
    grad_memory.addcmul_(memory, (grad_memory_norm / memory_norm).unsqueeze(-1))
    return grad_memory, grad_keys


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


def _softmax_backward(probabilities: Tensor, grad: Tensor) -> Tensor:
    """Gradient of the logits of ``softmax`` along the last dimension."""
    return probabilities * (grad - (grad * probabilities).sum(-1, keepdim=True))


def _content_weighting_backward(
    weights: Tensor,
    similarity: Tensor,
    grad_weights: Tensor,
    strengths: Tensor,
    memory: Tensor,
    keys: Tensor,
    epsilon: float,
    grad_memory_in: Tensor,
    norms: tuple[Tensor, Tensor],
) -> tuple[Tensor, Tensor, Tensor]:
    """Backward of ``c = softmax(beta * D(k, M))`` (weights (B, H, N), similarity D (B, H, N), strengths
    beta (B, H)): gradients of ``(beta, M, k)``, the memory's added to ``grad_memory_in`` (B, N, W)."""
    grad_logits = _softmax_backward(weights, grad_weights)
    grad_strengths = (grad_logits * similarity).sum(-1)
    grad_memory, grad_keys = _cosine_backward(
        memory, keys, similarity, epsilon, grad_logits * strengths.unsqueeze(-1), grad_memory_in, norms
    )
    return grad_strengths, grad_memory, grad_keys


def _exclusive_cumprod(x: Tensor, dim: int = -1) -> Tensor:
    """``out[..., j] = prod_{i<j} x[..., i]`` along ``dim``."""
    ones = torch.ones_like(x.narrow(dim, 0, 1))
    return torch.cumprod(torch.cat([ones, x.narrow(dim, 0, x.shape[dim] - 1)], dim=dim), dim=dim)


class _AccessStep(torch.autograd.Function):
    """One whole memory-access step for one write head, from the *raw* interface vector: the
    interface activations, retention, usage, write content weighting, allocation, write weighting,
    erase-and-write, link / directional weightings / precedence, read content weighting, read
    weighting and reads (the equations of :mod:`memagent.memory.addressing`, in
    :class:`~memagent.memory.access.MemoryAccess`'s order), as one autograd node with a hand-written
    backward: autograd records one node per step instead of ~60.

    Outputs: reads (B, R, W), M_t, u_t, [L_t, p_t], w^r_t, w^w_t (B, 1, N), then the intermediates
    backward needs (non-differentiable outputs, so that ``torch.func`` transforms can save them).
    """

    generate_vmap_rule = True

    @staticmethod
    def _activate(vector: Tensor, config) -> tuple[Tensor, ...]:
        """Split the raw interface (same layout as ``parse_interface``) and activate it; returns
        ``(keys (B, R + 2, W), strengths (B, R + 1) >= 1, gates (B, W + [R + 1] + 1), modes or None)``."""
        b = vector.shape[0]
        r, w = config.num_read_heads, config.word_size
        n_keys, n_strengths = (r + 2) * w, r + 1
        n_sigmoid = w + (r + 1 if config.allocation else 0) + 1
        raw_keys, raw_strengths, raw_sigmoid, raw_modes = torch.split(
            vector, [n_keys, n_strengths, n_sigmoid, vector.shape[-1] - n_keys - n_strengths - n_sigmoid], -1
        )
        keys = raw_keys.reshape(b, r + 2, w)
        strengths = 1.0 + torch.nn.functional.softplus(raw_strengths)
        gates = torch.sigmoid(raw_sigmoid)
        modes = torch.softmax(raw_modes.view(b, r, 3), dim=-1) if config.temporal_links else None
        return keys, strengths, gates, modes

    @staticmethod
    def forward(vector, memory, usage, link, precedence, read_weights, write_weights, config):
        inputs = (vector, memory, usage, link, precedence, read_weights, write_weights)
        if native.supports(*inputs):  # the C kernel: returns the new state only (saves only the inputs)
            return native.access_forward(config, *inputs)
        return _AccessStep.forward_torch(*inputs, config)

    @staticmethod
    def forward_torch(vector, memory, usage, link, precedence, read_weights, write_weights, config):
        """The step in torch operations: the new state and the intermediates backward needs."""
        b = vector.shape[0]
        r, w, eps = config.num_read_heads, config.word_size, config.epsilon
        keys, strengths, gates, modes = _AccessStep._activate(vector, config)
        read_keys, write_key, write_vector = keys.split([r, 1, 1], dim=1)
        erase = gates[:, :w].view(b, 1, w)
        write_gate = gates[:, -1:]  # (B, 1)
        # u_t = (u + w^w - u o w^w) psi, psi = prod_i (1 - f^i w^{r,i}) (times the decay)
        prev_ww = write_weights[:, 0]
        new_usage = usage + prev_ww - usage * prev_ww
        if config.allocation:
            free_gates, allocation_gate = gates[:, w : w + r], gates[:, w + r : w + r + 1]
            psi = torch.prod(1.0 - free_gates.unsqueeze(-1) * read_weights, dim=1)
            if config.usage_decay != 1.0:
                psi = psi * config.usage_decay
            new_usage = new_usage * psi
        else:
            new_usage = new_usage * config.usage_decay
        # write content weighting on M_{t-1}
        write_norms = _CosineSimilarity._norms(memory, write_key, eps)
        write_similarity = torch.bmm(write_key, memory.transpose(1, 2)).div_(write_norms[2])  # (B, 1, N)
        write_content = torch.softmax(write_similarity * strengths[:, r:].unsqueeze(-1), dim=-1)
        if config.allocation:
            sorted_usage, free_list = torch.sort(eps + (1.0 - eps) * new_usage, dim=-1, stable=True)
            sorted_products = _exclusive_cumprod(sorted_usage)
            sorted_allocation = (1.0 - sorted_usage) * sorted_products
            allocation = torch.zeros_like(sorted_allocation).scatter(-1, free_list, sorted_allocation)
            ga = allocation_gate.unsqueeze(-1)
            new_ww = write_gate.unsqueeze(-1) * (ga * allocation.unsqueeze(1) + (1.0 - ga) * write_content)
        else:
            new_ww = write_gate.unsqueeze(-1) * write_content
        new_memory = _EraseAndWrite.forward(memory, new_ww, erase, write_vector)
        # read content weighting on M_t
        read_norms = _CosineSimilarity._norms(new_memory, read_keys, eps)
        read_similarity = torch.bmm(read_keys, new_memory.transpose(1, 2)).div_(read_norms[2])  # (B, R, N)
        read_content = torch.softmax(read_similarity * strengths[:, :r].unsqueeze(-1), dim=-1)
        if config.temporal_links:
            new_link, fwd, bwd, new_prec = _LinkAndDirections.forward(link, precedence, new_ww, read_weights)
            directional = modes[..., 0:1] * bwd[:, :, 0] + modes[..., 1:2] * fwd[:, :, 0]
            new_rw = modes[..., 2:3] * read_content + directional
        else:
            new_rw = read_content
        reads = torch.bmm(new_rw, new_memory)
        outputs = (reads, new_memory, new_usage)
        if config.temporal_links:
            outputs += (new_link, new_prec)
        outputs += (new_rw, new_ww, write_similarity, write_content, read_similarity)
        if config.temporal_links:  # (without links the read weights are the read content weights)
            outputs += (read_content,)
        if config.allocation:
            outputs += (allocation, sorted_usage, free_list, sorted_products, sorted_allocation)
        if config.temporal_links:
            outputs += (fwd, bwd, modes)
        outputs += (strengths, gates, *write_norms[:2], *read_norms[:2])
        return outputs

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        config = inputs[-1]
        ctx.config = config
        n_state = 7 if config.temporal_links else 5
        if len(output) == n_state:  # native forward: backward recomputes the step from the inputs
            ctx.save_for_backward(*inputs[:-1], output[n_state - 2])  # and w^r_t (next step's input)
            return
        ctx.mark_non_differentiable(*output[n_state:])
        ctx.save_for_backward(*inputs[:-1], *output[1:])

    @staticmethod
    def backward(ctx, *grads):
        saved = tuple(ctx.saved_tensors)
        state_grads = grads[: 7 if ctx.config.temporal_links else 5]
        if not torch.is_grad_enabled() and native.supports(*saved, *state_grads):
            if len(saved) > 8:  # torch forward: its saved outputs start at 7 (M_t, u_t, [L_t, p_t], w^r_t)
                saved = (*saved[:7], saved[7 + (4 if ctx.config.temporal_links else 2)])
            return (*native.access_backward(ctx.config, saved[:7], saved[7], state_grads), None)
        return _access_step_backward(ctx.config, saved, grads)


def _access_step_backward(config, saved_tensors: tuple[Tensor, ...], grads: tuple[Tensor, ...]):
    """Backward of :class:`_AccessStep` from its saved tensors and output gradients."""
    r, w, eps = config.num_read_heads, config.word_size, config.epsilon
    saved = list(saved_tensors)
    vector, memory, usage, link, precedence, read_weights, write_weights = saved[:7]
    if torch.is_grad_enabled() or len(saved) == 8:
        # double backward (second-order MAML, torch.func): the saved intermediates are cut from
        # the graph (non-differentiable outputs), so recompute them from the inputs, recorded; the
        # native forward saves only the inputs.
        rest = list(_AccessStep.forward_torch(*saved[:7], config)[1:])
    else:
        rest = saved[7:]
    new_memory = rest[0]  # rest[1] is u_t, not needed
    rest = rest[2:]
    if config.temporal_links:
        new_link, rest = rest[0], rest[2:]
    new_rw, new_ww, write_similarity, write_content, read_similarity = rest[:5]
    if config.temporal_links:
        read_content, rest = rest[5], rest[6:]
    else:
        read_content, rest = new_rw, rest[5:]
    if config.allocation:
        allocation, sorted_usage, free_list, sorted_products, sorted_allocation = rest[:5]
        rest = rest[5:]
    if config.temporal_links:
        fwd, bwd, modes, rest = rest[0], rest[1], rest[2], rest[3:]
    strengths, gates, write_key_norm, memory_norm, read_key_norm, new_memory_norm = rest
    g_reads, g_memory, g_usage = grads[:3]
    if config.temporal_links:
        g_link, g_prec = grads[3:5]
        g_rw, g_ww = grads[5:7]
    else:
        g_rw, g_ww = grads[3:5]
    b = vector.shape[0]
    keys = vector[:, : (r + 2) * w].reshape(b, r + 2, w)
    read_keys, write_key, write_vector = keys.split([r, 1, 1], dim=1)
    erase = gates[:, :w].view(b, 1, w)
    write_gate = gates[:, -1:]
    # reads = w^r M_t
    g_rw = g_rw + torch.bmm(g_reads, new_memory.transpose(1, 2))
    g_memory = torch.baddbmm(g_memory, new_rw.transpose(1, 2), g_reads)
    # read weighting
    if config.temporal_links:
        g_modes = torch.stack(
            [(g_rw * bwd[:, :, 0]).sum(-1), (g_rw * fwd[:, :, 0]).sum(-1), (g_rw * read_content).sum(-1)],
            dim=-1,
        )
        g_read_content = modes[..., 2:3] * g_rw
        g_fwd = (modes[..., 1:2] * g_rw).unsqueeze(2)
        g_bwd = (modes[..., 0:1] * g_rw).unsqueeze(2)
    else:
        g_read_content = g_rw
    # read content weighting
    g_read_strengths, g_memory, g_read_keys = _content_weighting_backward(
        read_content,
        read_similarity,
        g_read_content,
        strengths[:, :r],
        new_memory,
        read_keys,
        eps,
        g_memory,
        (read_key_norm, new_memory_norm),
    )
    # links
    if config.temporal_links:
        g_prev_link, g_prev_prec, g_ww_link, g_prev_rw = _link_backward(
            link, precedence, new_ww, read_weights, new_link, g_link, g_fwd, g_bwd, g_prec
        )
        g_ww = g_ww + g_ww_link
    else:
        g_prev_link, g_prev_prec = torch.zeros_like(link), torch.zeros_like(precedence)
        g_prev_rw = torch.zeros_like(read_weights)
    # erase and write
    g_prev_memory, g_ww_write, g_erase, g_write_vector = _erase_and_write_backward(
        memory, new_ww, erase, write_vector, g_memory
    )
    g_ww = g_ww + g_ww_write
    # write weighting
    if config.allocation:
        allocation_gate = gates[:, w + r : w + r + 1].unsqueeze(-1)  # (B, 1, 1)
        alloc = allocation.unsqueeze(1)
        inner = allocation_gate * alloc + (1.0 - allocation_gate) * write_content
        g_write_gate = (g_ww * inner).sum(-1)  # (B, 1)
        g_inner = write_gate.unsqueeze(-1) * g_ww
        g_allocation_gate = (g_inner * (alloc - write_content)).sum(-1)
        g_write_content = (1.0 - allocation_gate) * g_inner
        # allocation: a[phi_j] = (1 - s_j) prod_{i<j} s_i with s the sorted eps + (1 - eps) u
        g_sorted = (allocation_gate * g_inner)[:, 0].gather(-1, free_list)
        tail = (g_sorted * sorted_allocation).flip(-1).cumsum(-1).flip(-1)  # sum_{j >= k}
        tail = torch.cat([tail[:, 1:], torch.zeros_like(tail[:, :1])], dim=-1)  # sum_{j > k}
        g_sorted_usage = tail / sorted_usage - g_sorted * sorted_products
        g_usage = g_usage + (1.0 - eps) * torch.zeros_like(g_sorted_usage).scatter(
            -1, free_list, g_sorted_usage
        )
    else:
        g_write_gate = (g_ww * write_content).sum(-1)
        g_write_content = write_gate.unsqueeze(-1) * g_ww
    # write content weighting
    g_write_strength, g_prev_memory, g_write_key = _content_weighting_backward(
        write_content,
        write_similarity,
        g_write_content,
        strengths[:, r:],
        memory,
        write_key,
        eps,
        g_prev_memory,
        (write_key_norm, memory_norm),
    )
    # usage
    prev_ww = write_weights[:, 0]
    if config.allocation:
        free_gates = gates[:, w : w + r]
        kept = 1.0 - free_gates.unsqueeze(-1) * read_weights  # (B, R, N)
        others = _exclusive_cumprod(kept, dim=1) * _exclusive_cumprod(kept.flip(1), dim=1).flip(1)
        psi = torch.prod(kept, dim=1)
        if config.usage_decay != 1.0:
            psi = psi * config.usage_decay
        pre = usage + prev_ww - usage * prev_ww
        g_kept = (g_usage * pre * config.usage_decay).unsqueeze(1) * others
        g_free_gates = -(g_kept * read_weights).sum(-1)
        g_prev_rw = g_prev_rw - g_kept * free_gates.unsqueeze(-1)
    else:
        psi = config.usage_decay
    g_pre = g_usage * psi
    g_prev_usage = g_pre * (1.0 - prev_ww)
    g_prev_ww = (g_pre * (1.0 - usage)).unsqueeze(1)
    # activations
    g_keys = torch.cat([g_read_keys, g_write_key, g_write_vector], dim=1).view(b, -1)
    g_strengths = torch.cat([g_read_strengths, g_write_strength], dim=-1)
    g_strengths = g_strengths * torch.sigmoid(vector[:, (r + 2) * w : (r + 2) * w + r + 1])
    g_gate_parts = [g_erase.view(b, w)]
    if config.allocation:
        g_gate_parts += [g_free_gates, g_allocation_gate]
    g_gates = torch.cat([*g_gate_parts, g_write_gate], dim=-1) * gates * (1.0 - gates)
    parts = [g_keys, g_strengths, g_gates]
    if config.temporal_links:
        parts.append(_softmax_backward(modes, g_modes).reshape(b, -1))
    g_vector = torch.cat(parts, dim=-1)
    return g_vector, g_prev_memory, g_prev_usage, g_prev_link, g_prev_prec, g_prev_rw, g_prev_ww, None


_COMPILED: dict[str, object] = {}


def _compiled(name: str, function):
    """``torch.compile(function)``, compiled once per process (and per new input shape)."""
    if name not in _COMPILED:
        _COMPILED[name] = torch.compile(function, dynamic=False)
    return _COMPILED[name]


class _CompiledAccessStep(_AccessStep):
    """:class:`_AccessStep` with its forward and (first-order) backward bodies compiled by
    ``torch.compile`` (inductor: the elementwise chains become a few C++ loops). Opt-in: the first call
    compiles for ~40 s (CPU), and again for every new batch size or configuration."""

    @staticmethod
    def forward(*args):
        return _compiled("access_forward", _AccessStep.forward_torch)(*args)

    @staticmethod
    def backward(ctx, *grads):
        if torch.is_grad_enabled() or len(ctx.saved_tensors) == 8:  # double backward: the eager version
            return _access_step_backward(ctx.config, tuple(ctx.saved_tensors), grads)
        backward = _compiled("access_backward", _access_step_backward)
        return backward(ctx.config, tuple(ctx.saved_tensors), grads)


def access_step(
    vector: Tensor, state: tuple[Tensor, ...], config, compiled: bool = False
) -> tuple[Tensor, tuple[Tensor, ...]]:
    """One memory-access step for one write head as a single autograd node (see :class:`_AccessStep`);
    the same values and gradients as ``MemoryAccess(config)(parse_interface(vector, config), state)``.

    :param vector: the raw interface ``xi_t`` (B, interface_size(config)).
    :param state: the previous memory state fields ``(M, u, L, p, w^r, w^w, r)`` (``MemoryState``).
    :param config: a ``MemoryConfig`` with ``num_write_heads == 1``.
    :param compiled: run the step's forward and backward through ``torch.compile`` (see
        :class:`_CompiledAccessStep`; ~1.4x faster training on CPU after ~40 s of compilation).
    :return: ``(read_vectors (B, R, W), new state fields in MemoryState order)``.
    """
    memory, usage, link, precedence, read_weights, write_weights, _ = state
    function = _CompiledAccessStep if compiled else _AccessStep
    out = _apply(function, vector, memory, usage, link, precedence, read_weights, write_weights, config)
    reads, new_memory, new_usage = out[:3]
    if config.temporal_links:
        new_link, new_prec, new_rw, new_ww = out[3:7]
    else:
        new_link, new_prec, new_rw, new_ww = link, precedence, out[3], out[4]
    return reads, (new_memory, new_usage, new_link, new_prec, new_rw, new_ww, reads)
