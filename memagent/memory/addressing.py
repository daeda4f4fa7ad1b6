"""The DNC's addressing mechanisms as pure, batched functions (Graves et al., Nature 2016, Methods).

One function per quantity of the paper; each docstring gives the equation and the tensor shapes.
Notation: B batch, N memory slots, W word size, R read heads, Hw write heads. Several write heads
follow DeepMind's ``dnc`` (``addressing.py``): one allocation, precedence and link matrix per write
head; usage combines the write heads as ``1 - prod_h (1 - w_h)``.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = [
    "content_weighting",
    "retention",
    "usage",
    "allocation_weighting",
    "write_allocation_weightings",
    "write_weighting",
    "erase_and_write",
    "precedence",
    "temporal_link",
    "directional_weightings",
    "read_weighting",
    "read_vectors",
]


def content_weighting(memory: Tensor, keys: Tensor, strengths: Tensor, epsilon: float = 1e-6) -> Tensor:
    """Content weighting ``c[i] = softmax_i(beta * D(k, M[i]))`` with the cosine similarity
    ``D(u, v) = u . v / (|u| |v| + eps)`` and ``|u| = sqrt(u . u + eps)`` (Methods, "Content-based
    addressing").

    :param memory: ``M`` of shape (B, N, W).
    :param keys: lookup keys ``k`` of shape (B, H, W) for H heads.
    :param strengths: key strengths ``beta >= 1`` of shape (B, H).
    :return: weightings of shape (B, H, N), each row summing to 1.
    """
    dot = torch.bmm(keys, memory.transpose(1, 2))  # (B, H, N)
    key_norm = torch.sqrt((keys * keys).sum(-1) + epsilon)  # (B, H)
    memory_norm = torch.sqrt((memory * memory).sum(-1) + epsilon)  # (B, N)
    similarity = dot / (key_norm.unsqueeze(-1) * memory_norm.unsqueeze(1) + epsilon)
    return torch.softmax(similarity * strengths.unsqueeze(-1), dim=-1)


def retention(free_gates: Tensor, prev_read_weights: Tensor, usage_decay: float = 1.0) -> Tensor:
    """Memory retention vector ``psi_t = prod_i (1 - f_t^i w_{t-1}^{r,i})`` (Methods, "Dynamic memory
    allocation"), times a constant ``usage_decay`` (1 in the paper).

    :param free_gates: ``f_t`` of shape (B, R) in [0, 1].
    :param prev_read_weights: ``w_{t-1}^r`` of shape (B, R, N).
    :param usage_decay: constant factor in (0, 1].
    :return: ``psi_t`` of shape (B, N) in [0, 1].
    """
    psi = torch.prod(1.0 - free_gates.unsqueeze(-1) * prev_read_weights, dim=1)
    if usage_decay != 1.0:
        psi = psi * usage_decay
    return psi


def usage(prev_usage: Tensor, prev_write_weights: Tensor, retention: Tensor | float) -> Tensor:
    """Usage vector ``u_t = (u_{t-1} + w_{t-1}^w - u_{t-1} o w_{t-1}^w) o psi_t`` (Methods).

    Several write heads are combined first as ``w^w = 1 - prod_h (1 - w_h^w)`` (DeepMind).

    :param prev_usage: ``u_{t-1}`` of shape (B, N).
    :param prev_write_weights: ``w_{t-1}^w`` of shape (B, Hw, N).
    :param retention: ``psi_t`` of shape (B, N) (or a constant).
    :return: ``u_t`` of shape (B, N) in [0, 1].
    """
    if prev_write_weights.shape[1] == 1:
        written = prev_write_weights[:, 0]
    else:
        written = 1.0 - torch.prod(1.0 - prev_write_weights, dim=1)
    return (prev_usage + written - prev_usage * written) * retention


def _exclusive_cumprod(x: Tensor) -> Tensor:
    """``out[..., j] = prod_{i<j} x[..., i]`` along the last dimension."""
    ones = torch.ones_like(x[..., :1])
    return torch.cumprod(torch.cat([ones, x[..., :-1]], dim=-1), dim=-1)


def allocation_weighting(usage: Tensor, epsilon: float = 1e-6) -> Tensor:
    """Allocation weighting ``a_t[phi_j] = (1 - u_t[phi_j]) prod_{i<j} u_t[phi_i]`` where ``phi`` sorts
    the slots by ascending usage (the free list; Methods, "Dynamic memory allocation").

    Usage is first mapped to ``eps + (1 - eps) u`` (DeepMind) so the products never vanish exactly;
    ties are broken by slot index (stable sort).

    :param usage: ``u_t`` of shape (..., N) in [0, 1].
    :return: ``a_t`` of shape (..., N), summing to at most 1.
    """
    usage = epsilon + (1.0 - epsilon) * usage
    sorted_usage, free_list = torch.sort(usage, dim=-1, stable=True)
    sorted_allocation = (1.0 - sorted_usage) * _exclusive_cumprod(sorted_usage)
    return torch.zeros_like(sorted_allocation).scatter(-1, free_list, sorted_allocation)


def write_allocation_weightings(usage: Tensor, write_gates: Tensor, epsilon: float = 1e-6) -> Tensor:
    """Allocation weightings of several write heads (DeepMind): head h allocates from the usage left
    after heads ``< h`` wrote to their allocations, ``u <- u + (1 - u) g_h a_h``.

    :param usage: ``u_t`` of shape (B, N).
    :param write_gates: effective gates ``g^w g^a`` of shape (B, Hw).
    :return: ``a_t`` of shape (B, Hw, N).
    """
    num_writes = write_gates.shape[1]
    if num_writes == 1:
        return allocation_weighting(usage, epsilon).unsqueeze(1)
    allocations = []
    for h in range(num_writes):
        allocations.append(allocation_weighting(usage, epsilon))
        usage = usage + (1.0 - usage) * write_gates[:, h : h + 1] * allocations[-1]
    return torch.stack(allocations, dim=1)


def write_weighting(
    content_weights: Tensor, allocation_weights: Tensor, allocation_gates: Tensor, write_gates: Tensor
) -> Tensor:
    """Write weighting ``w_t^w = g_t^w (g_t^a a_t + (1 - g_t^a) c_t^w)`` (Methods, "Write weighting").

    :param content_weights: ``c_t^w`` of shape (B, Hw, N).
    :param allocation_weights: ``a_t`` of shape (B, Hw, N).
    :param allocation_gates: ``g_t^a`` of shape (B, Hw).
    :param write_gates: ``g_t^w`` of shape (B, Hw).
    :return: ``w_t^w`` of shape (B, Hw, N).
    """
    ga = allocation_gates.unsqueeze(-1)
    return write_gates.unsqueeze(-1) * (ga * allocation_weights + (1.0 - ga) * content_weights)


def erase_and_write(
    memory: Tensor, write_weights: Tensor, erase_vectors: Tensor, write_vectors: Tensor
) -> Tensor:
    """Erase then add: ``M_t = M_{t-1} o (E - w^w e^T) + w^w v^T`` (Methods, "Reading and writing").

    Several write heads erase multiplicatively, ``prod_h (1 - w_h e_h^T)``, and add their sum (DeepMind).

    :param memory: ``M_{t-1}`` of shape (B, N, W).
    :param write_weights: ``w_t^w`` of shape (B, Hw, N).
    :param erase_vectors: ``e_t`` of shape (B, Hw, W) in [0, 1].
    :param write_vectors: ``v_t`` of shape (B, Hw, W).
    :return: ``M_t`` of shape (B, N, W).
    """
    weights_t = write_weights.transpose(1, 2)  # (B, N, Hw)
    if write_weights.shape[1] == 1:
        keep = 1.0 - torch.bmm(weights_t, erase_vectors)
    else:
        keep = torch.prod(1.0 - write_weights.unsqueeze(-1) * erase_vectors.unsqueeze(2), dim=1)
    return torch.baddbmm(memory * keep, weights_t, write_vectors)


def precedence(prev_precedence: Tensor, write_weights: Tensor) -> Tensor:
    """Precedence weighting ``p_t = (1 - sum_i w_t^w[i]) p_{t-1} + w_t^w`` (Methods, "Temporal memory
    linkage"), one per write head.

    :param prev_precedence: ``p_{t-1}`` of shape (B, Hw, N).
    :param write_weights: ``w_t^w`` of shape (B, Hw, N).
    :return: ``p_t`` of shape (B, Hw, N).
    """
    return (1.0 - write_weights.sum(-1, keepdim=True)) * prev_precedence + write_weights


def temporal_link(prev_link: Tensor, prev_precedence: Tensor, write_weights: Tensor) -> Tensor:
    """Temporal link matrix ``L_t[i,j] = (1 - w[i] - w[j]) L_{t-1}[i,j] + w[i] p_{t-1}[j]`` with
    ``L_t[i,i] = 0`` (Methods, "Temporal memory linkage"), one per write head.

    :param prev_link: ``L_{t-1}`` of shape (B, Hw, N, N).
    :param prev_precedence: ``p_{t-1}`` of shape (B, Hw, N).
    :param write_weights: ``w_t^w`` of shape (B, Hw, N).
    :return: ``L_t`` of shape (B, Hw, N, N), entries in [0, 1], zero diagonal.
    """
    w_i = write_weights.unsqueeze(-1)
    w_j = write_weights.unsqueeze(-2)
    link = (1.0 - w_i - w_j) * prev_link + w_i * prev_precedence.unsqueeze(-2)
    n = link.shape[-1]
    off_diagonal = 1.0 - torch.eye(n, dtype=link.dtype, device=link.device)
    return link * off_diagonal


def directional_weightings(link: Tensor, prev_read_weights: Tensor) -> tuple[Tensor, Tensor]:
    """Forward and backward weightings ``f_t = L_t w_{t-1}^r`` and ``b_t = L_t^T w_{t-1}^r`` (Methods,
    "Temporal memory linkage"), for every read head and write head.

    :param link: ``L_t`` of shape (B, Hw, N, N).
    :param prev_read_weights: ``w_{t-1}^r`` of shape (B, R, N).
    :return: ``(f_t, b_t)``, each of shape (B, R, Hw, N).
    """
    expanded = prev_read_weights.unsqueeze(1)  # (B, 1, R, N)
    forward = torch.matmul(expanded, link.transpose(-1, -2))  # (B, Hw, R, N): sum_j w[j] L[i, j]
    backward = torch.matmul(expanded, link)  # (B, Hw, R, N): sum_j w[j] L[j, i]
    return forward.transpose(1, 2), backward.transpose(1, 2)


def read_weighting(
    content_weights: Tensor,
    forward_weights: Tensor | None,
    backward_weights: Tensor | None,
    read_modes: Tensor,
) -> Tensor:
    """Read weighting ``w_t^r = pi[backward] b_t + pi[forward] f_t + pi[content] c_t^r`` (Methods,
    "Read weighting"). Read modes are ordered ``[backward per write head, forward per write head,
    content]`` (DeepMind).

    :param content_weights: ``c_t^r`` of shape (B, R, N).
    :param forward_weights: ``f_t`` of shape (B, R, Hw, N), or None without temporal links.
    :param backward_weights: ``b_t`` of shape (B, R, Hw, N), or None without temporal links.
    :param read_modes: ``pi_t`` of shape (B, R, 2 Hw + 1), rows summing to 1.
    :return: ``w_t^r`` of shape (B, R, N).
    """
    weights = read_modes[..., -1:] * content_weights
    if forward_weights is None or backward_weights is None:
        return weights
    directional = torch.cat([backward_weights, forward_weights], dim=2)  # (B, R, 2 Hw, N)
    return weights + (read_modes[..., :-1].unsqueeze(-1) * directional).sum(2)


def read_vectors(memory: Tensor, read_weights: Tensor) -> Tensor:
    """Read vectors ``r_t^i = M_t^T w_t^{r,i}`` (Methods, "Reading and writing").

    :param memory: ``M_t`` of shape (B, N, W).
    :param read_weights: ``w_t^r`` of shape (B, R, N).
    :return: read vectors of shape (B, R, W).
    """
    return torch.bmm(read_weights, memory)
