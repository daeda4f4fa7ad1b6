"""Task-switch schedules shared by the regression env and the :class:`~envs.wrappers.NonStationary` wrapper.

A schedule says at which steps of an episode the task changes:

* ``"none"``: the task drawn at reset holds for the whole episode;
* ``"period"``: the task changes every ``period`` steps (at steps ``period, 2·period, …``);
* ``"hazard"``: at every step ``t ≥ 1`` the task changes with probability ``hazard`` (geometric gaps);
* an explicit list of ``(step, task)`` pairs: from ``step`` on, the task is ``task``. A pair with step 0
  fixes the task at reset; otherwise the initial task is drawn from the pool.

At a ``"period"`` or ``"hazard"`` switch the new task is drawn uniformly from the pool *excluding the
current task*, so every scheduled switch really changes the task (a pool of one task never switches).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["SwitchSchedule", "parse_schedule", "task_sequences", "uniforms_needed"]

SCHEDULE_KINDS = ("none", "period", "hazard", "explicit")


@dataclass(frozen=True)
class SwitchSchedule:
    """A validated switch schedule.

    :param kind: one of ``"none"``, ``"period"``, ``"hazard"``, ``"explicit"``.
    :param period: steps between switches (``kind="period"``).
    :param hazard: per-step switch probability (``kind="hazard"``).
    :param events: ``(step, task_index)`` pairs sorted by step (``kind="explicit"``).
    """

    kind: str
    period: int = 50
    hazard: float = 0.0
    events: tuple[tuple[int, int], ...] = ()

    def switches_at(self, t: int, rng: np.random.Generator) -> bool:
        """Whether a pool switch happens at step ``t`` (online; ``"explicit"`` is handled by the caller)."""
        if t <= 0:
            return False
        if self.kind == "period":
            return t % self.period == 0
        if self.kind == "hazard":
            return bool(rng.random() < self.hazard)
        return False


def parse_schedule(
    schedule: str | Sequence[tuple[int, Any]] | SwitchSchedule | None,
    *,
    period: int = 50,
    hazard: float = 0.02,
    task_index: Callable[[Any], int],
    horizon: int | None = None,
) -> SwitchSchedule:
    """Validate a user schedule spec.

    :param schedule: ``"none"``/``None``, ``"period"``, ``"hazard"``, a list of ``(step, task)`` pairs,
        or a :class:`SwitchSchedule`.
    :param period: used when ``schedule == "period"``; an integer >= 1.
    :param hazard: used when ``schedule == "hazard"``; a probability in [0, 1].
    :param task_index: maps a task given in an explicit pair (a name or an index) to its index; raises
        ``ValueError`` for unknown tasks.
    :param horizon: if given, explicit steps must lie in ``[0, horizon)``.
    :raises ValueError: for an unknown kind, a bad period/hazard, or unsorted/duplicate/out-of-range steps.
    """
    if isinstance(schedule, SwitchSchedule):
        return schedule
    if schedule is None or (isinstance(schedule, str) and schedule == "none"):
        return SwitchSchedule("none")
    if isinstance(schedule, str):
        if schedule == "period":
            if isinstance(period, bool) or not isinstance(period, int | np.integer) or period < 1:
                raise ValueError(f"period must be an integer >= 1, got {period!r}")
            return SwitchSchedule("period", period=int(period))
        if schedule == "hazard":
            if not (isinstance(hazard, float | int) and 0.0 <= float(hazard) <= 1.0):
                raise ValueError(f"hazard must be a probability in [0, 1], got {hazard!r}")
            return SwitchSchedule("hazard", hazard=float(hazard))
        raise ValueError(
            f"schedule must be one of {SCHEDULE_KINDS[:3]}, a list of (step, task) pairs or a SwitchSchedule,"
            " "
            f"got {schedule!r}"
        )
    try:
        pairs = [tuple(p) for p in schedule]
    except TypeError as exc:
        raise ValueError(
            f"schedule must be a string or a list of (step, task) pairs, got {schedule!r}"
        ) from exc
    if not pairs:
        raise ValueError("an explicit schedule needs at least one (step, task) pair")
    events = []
    for pair in pairs:
        if len(pair) != 2:
            raise ValueError(f"schedule entries must be (step, task) pairs, got {pair!r}")
        step, task = pair
        if isinstance(step, bool) or not isinstance(step, int | np.integer) or step < 0:
            raise ValueError(f"schedule step must be an integer >= 0, got {step!r} in {pair!r}")
        if horizon is not None and step >= horizon:
            raise ValueError(f"schedule step {step} is outside the episode [0, {horizon})")
        events.append((int(step), int(task_index(task))))
    steps = [s for s, _ in events]
    if any(b <= a for a, b in zip(steps, steps[1:])):
        raise ValueError(f"schedule steps must be strictly increasing, got {steps}")
    return SwitchSchedule("explicit", events=tuple(events))


def uniforms_needed(schedule: SwitchSchedule, length: int) -> int:
    """How many uniforms :func:`task_sequences` consumes per episode of ``length`` steps."""
    return {"none": 1, "explicit": 1, "period": 1 + length, "hazard": 1 + 2 * length}[schedule.kind]


def task_sequences(
    schedule: SwitchSchedule, uniforms: np.ndarray, length: int, pools: Sequence[np.ndarray]
) -> np.ndarray:
    """The task of every step of ``B`` episodes, vectorised over episodes and steps.

    Uniform ``u[:, 0]`` picks the initial task; for ``"period"`` the next ``L`` pick the task at each
    switch (one of the *other* ``P - 1`` pool tasks: position += 1 + ⌊u·(P-1)⌋ mod P); for ``"hazard"``
    the last ``L`` decide the switch times (``u < hazard``, never at step 0).

    :param schedule: the switch schedule.
    :param uniforms: shape ``(B, uniforms_needed(schedule, L))``, values in [0, 1).
    :param length: episode length ``L`` (steps).
    :param pools: each episode's pool of task indices, ``B`` arrays of shape ``(P_b,)``.
    :return: task index of each step, shape ``(B, L)`` int64.
    """
    b = len(pools)
    sizes = np.fromiter(map(len, pools), dtype=np.int64, count=b)
    if np.all(sizes == sizes[0]):  # the usual case: one stacking call instead of a loop over episodes
        padded = np.stack(pools).astype(np.int64, copy=False)
    else:
        padded = np.zeros((b, sizes.max()), dtype=np.int64)
        for i, p in enumerate(pools):
            padded[i, : len(p)] = p
    start = np.floor(uniforms[:, 0] * sizes).astype(np.int64)
    if schedule.kind == "explicit":
        seq = np.empty((b, length), dtype=np.int64)
        first_step = schedule.events[0][0]
        seq[:, :first_step] = padded[np.arange(b), start][:, None]
        for i, (step, task) in enumerate(schedule.events):
            end = schedule.events[i + 1][0] if i + 1 < len(schedule.events) else length
            seq[:, step:end] = task
        return seq
    if schedule.kind == "none":
        return np.repeat(padded[np.arange(b), start][:, None], length, axis=1)
    if schedule.kind == "period":
        cols = np.arange(schedule.period, length, schedule.period)  # the switch steps
        switch = np.ones((b, len(cols)), dtype=bool)
    else:  # hazard
        cols = np.arange(1, length)  # never at step 0
        switch = uniforms[:, 1 + length + 1 :] < schedule.hazard
    others = (sizes - 1)[:, None]
    offsets = 1 + np.floor(uniforms[:, 1 + cols] * others).astype(np.int64)
    moves = np.zeros((b, length), dtype=np.int64)
    moves[:, cols] = np.where(switch & (others > 0), offsets, 0)
    position = (start[:, None] + np.cumsum(moves, axis=1)) % sizes[:, None]
    return np.take_along_axis(padded, position, axis=1)
