"""Task library of the sequential regression environments.

A *task* maps an input row ``x`` of dimension ``d`` to a target row ``y`` of the same dimension. The
tutorial's three families are built in:

=====================  ======================================  ==============================
name                   target ``y`` for an input row ``x``     typical value for x ~ N(0, I_64)
=====================  ======================================  ==============================
``sin_mean``           ``sin(mean(x))`` broadcast to ``d``      0 ± 0.125 (the same in every dim)
``half_cos_mean``      ``0.5 · cos(mean(x))`` broadcast         0.496 ± 0.004
``tanh_shift_<k>``     ``tanh(0.5 · x + k)`` elementwise        k = 2: 0.94 ± 0.07 (per dim)
=====================  ======================================  ==============================

``tanh_shift_<k>`` is available for every number ``k`` (the tutorial used ``k`` = task id ≥ 2, e.g.
``tanh_shift_2``, ``tanh_shift_3``, ``tanh_shift_-1.5``). Users add their own with
:func:`register_task`::

    from envs.tasks import register_task
    register_task("neg_mean", lambda x: -x.mean(axis=-1, keepdims=True) * np.ones_like(x))

Every task function must be *row-wise and vectorised*: it receives an array ``x`` of shape ``(..., d)``
and returns an array of the same shape, row ``i`` of the output depending only on row ``i`` of the input.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

TaskFn = Callable[[np.ndarray], np.ndarray]

__all__ = [
    "Task",
    "TaskFn",
    "get_task",
    "half_cos_mean",
    "list_tasks",
    "make_task",
    "register_task",
    "resolve_tasks",
    "sin_mean",
    "tanh_shift",
    "tutorial_task",
    "unregister_task",
]


@dataclass(frozen=True)
class Task:
    """A named regression task ``y = fn(x)``.

    :param name: unique name (used in ``info`` dicts, logs and benchmark tables).
    :param fn: row-wise vectorised map from ``x`` of shape ``(..., d)`` to ``y`` of shape ``(..., d)``.
    """

    name: str
    fn: TaskFn

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Targets for inputs ``x`` of shape ``(..., d)``; returns shape ``(..., d)`` in ``x``'s dtype."""
        return np.asarray(self.fn(x), dtype=x.dtype)


def sin_mean(x: np.ndarray) -> np.ndarray:
    """Tutorial task 0: ``y = sin(mean_j x_j)`` broadcast to every dimension; ``(..., d) -> (..., d)``."""
    return np.broadcast_to(np.sin(x.mean(axis=-1, keepdims=True)), x.shape)


def half_cos_mean(x: np.ndarray) -> np.ndarray:
    """Tutorial task 1: ``y = 0.5 · cos(mean_j x_j)`` broadcast; ``(..., d) -> (..., d)``."""
    return np.broadcast_to(0.5 * np.cos(x.mean(axis=-1, keepdims=True)), x.shape)


def tanh_shift(k: float) -> TaskFn:
    """Tutorial task ``k`` (k ≥ 2 there): ``y = tanh(0.5 · x + k)`` elementwise; ``(..., d) -> (..., d)``.

    :param k: the shift, any finite number.
    :raises ValueError: if ``k`` is not finite.
    """
    k = float(k)
    if not np.isfinite(k):
        raise ValueError(f"tanh_shift: k must be a finite number, got {k!r}")

    def fn(x: np.ndarray) -> np.ndarray:
        y = 0.5 * x
        y += np.asarray(k, dtype=y.dtype)
        return np.tanh(y, out=y)

    fn.__name__ = f"tanh_shift_{k:g}"
    fn.tanh_shift_k = k  # type: ignore[attr-defined]  # lets the native episode kernel recognise it
    return fn


_REGISTRY: dict[str, Task] = {}
_BUILTIN = ("sin_mean", "half_cos_mean")
_TANH_RE = re.compile(r"^tanh_shift_(-?\d+(?:\.\d+)?)$")


def register_task(name: str, fn: TaskFn, *, overwrite: bool = False) -> Task:
    """Register a user task under ``name`` so environments can refer to it by name.

    :param name: a non-empty string; must not clash with an existing task unless ``overwrite``.
    :param fn: row-wise vectorised callable ``(..., d) -> (..., d)``.
    :param overwrite: replace an existing user task of the same name.
    :return: the registered :class:`Task`.
    :raises TypeError: if ``name`` is not a string or ``fn`` is not callable.
    :raises ValueError: if ``name`` is empty, built in, or already registered (without ``overwrite``).
    """
    if not isinstance(name, str) or not name:
        raise TypeError(f"register_task: name must be a non-empty string, got {name!r}")
    if not callable(fn):
        raise TypeError(
            f"register_task: fn must be callable (x (..., d) -> y (..., d)), got {type(fn).__name__}"
        )
    if name in _BUILTIN or _TANH_RE.match(name):
        raise ValueError(f"register_task: {name!r} is a built-in task name; choose another name")
    if name in _REGISTRY and not overwrite:
        raise ValueError(
            f"register_task: task {name!r} is already registered; pass overwrite=True to replace it"
        )
    task = Task(name, fn)
    _REGISTRY[name] = task
    return task


def unregister_task(name: str) -> None:
    """Remove a user task registered with :func:`register_task` (unknown names raise ``KeyError``)."""
    if name not in _REGISTRY:
        raise KeyError(f"unregister_task: no user task named {name!r}; registered: {sorted(_REGISTRY)}")
    del _REGISTRY[name]


def list_tasks() -> list[str]:
    """Names of the built-in tasks (with ``tanh_shift_2`` and ``tanh_shift_3`` as examples) and user tasks."""
    return [*_BUILTIN, "tanh_shift_2", "tanh_shift_3", *sorted(_REGISTRY)]


def get_task(name: str) -> Task:
    """The task called ``name``: ``sin_mean``, ``half_cos_mean``, ``tanh_shift_<k>`` or a user task.

    :raises ValueError: for an unknown name.
    """
    if name == "sin_mean":
        return Task(name, sin_mean)
    if name == "half_cos_mean":
        return Task(name, half_cos_mean)
    match = _TANH_RE.match(name)
    if match:
        return Task(name, tanh_shift(float(match.group(1))))
    if name in _REGISTRY:
        return _REGISTRY[name]
    raise ValueError(f"unknown task {name!r}; allowed: {list_tasks()} or tanh_shift_<number>")


def tutorial_task(task_id: int) -> Task:
    """Tutorial task ``task_id``: 0 -> ``sin_mean``, 1 -> ``half_cos_mean``, k ≥ 2 -> ``tanh_shift_k``."""
    if not isinstance(task_id, int | np.integer) or task_id < 0:
        raise ValueError(f"tutorial_task: task_id must be an integer >= 0, got {task_id!r}")
    if task_id == 0:
        return get_task("sin_mean")
    if task_id == 1:
        return get_task("half_cos_mean")
    return get_task(f"tanh_shift_{int(task_id)}")


def make_task(spec: str | Task | tuple[str, TaskFn]) -> Task:
    """Turn a task spec into a :class:`Task`: a registered name, a ``Task``, or a ``(name, callable)`` pair.

    A ``(name, callable)`` pair is used as is (not registered globally), so it also works in
    subprocess vector environments that pickle the constructor arguments.
    """
    if isinstance(spec, Task):
        return spec
    if isinstance(spec, str):
        return get_task(spec)
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and callable(spec[1]):
        return Task(spec[0], spec[1])
    raise TypeError(f"task spec must be a name, a Task or a (name, callable) pair, got {spec!r}")


def resolve_tasks(specs: Sequence[str | Task | tuple[str, TaskFn]], dim: int) -> tuple[Task, ...]:
    """Resolve and validate a list of task specs for inputs of dimension ``dim``.

    Each task is probed on a ``(2, dim)`` input and must return an array of the same shape with finite values.

    :raises ValueError: for an empty list, duplicate names or a task with the wrong output shape.
    """
    if isinstance(specs, str | Task) or (isinstance(specs, tuple) and len(specs) == 2 and callable(specs[1])):
        raise TypeError(f"tasks must be a sequence of task specs, got a single spec {specs!r}")
    tasks = tuple(make_task(s) for s in specs)
    if not tasks:
        raise ValueError("tasks must name at least one task")
    names = [t.name for t in tasks]
    if len(set(names)) != len(names):
        raise ValueError(f"tasks must have distinct names, got {names}")
    probe = np.linspace(-1.0, 1.0, 2 * dim, dtype=np.float32).reshape(2, dim)
    for task in tasks:
        out = np.asarray(task.fn(probe))
        if out.shape != probe.shape:
            raise ValueError(
                f"task {task.name!r} must map x of shape (..., d) to y of the same shape; "
                f"for x of shape {probe.shape} it returned {out.shape}"
            )
        if not np.all(np.isfinite(out)):
            raise ValueError(f"task {task.name!r} returned non-finite targets")
    return tasks
