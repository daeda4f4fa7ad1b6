"""Sequential regression whose task switches mid-episode (the tutorial's tasks as a Gymnasium environment)."""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs import native
from envs.schedules import SwitchSchedule, parse_schedule, task_sequences, uniforms_needed
from envs.tasks import Task, TaskFn, resolve_tasks

logger = logging.getLogger(__name__)

__all__ = ["EVAL_STREAM", "FEEDBACK_MODES", "NonStationaryRegression", "RegressionLayout", "Stepper"]

FEEDBACK_MODES = ("target", "reward", "none")
#: spawn key of the evaluation random stream: with ``eval_mode=True`` a seed ``s`` seeds the generator
#: ``PCG64(SeedSequence(s, spawn_key=(EVAL_STREAM,)))`` instead of Gymnasium's ``PCG64(SeedSequence(s))``,
#: so evaluation inputs, switch times and noise never coincide with the training stream of any seed.
EVAL_STREAM = 0x5EED_E7A1

TaskSpec = str | Task | tuple[str, TaskFn]


@dataclass(frozen=True)
class RegressionLayout:
    """Static configuration shared by every copy of the environment in a batch (see the class docstring)."""

    dim: int
    episode_length: int
    feedback: str
    reveal_every: int
    feedback_noise: float
    oracle: bool
    reward_scale: float
    action_bound: float
    tasks: tuple[Task, ...]

    @cached_property
    def feedback_size(self) -> int:
        """Width of the feedback block: values (d for targets, 1 for rewards) plus one 'present' flag."""
        return {"target": self.dim + 1, "reward": 2, "none": 0}[self.feedback]

    @cached_property
    def obs_size(self) -> int:
        """Observation width ``d + feedback_size + (num_tasks if oracle)``."""
        return self.dim + self.feedback_size + (len(self.tasks) if self.oracle else 0)

    @cached_property
    def flag_col(self) -> int:
        """Column of the 'feedback present' flag (only when feedback is not ``"none"``)."""
        return self.dim + self.feedback_size - 1

    @cached_property
    def reward_factor(self) -> np.float32:
        """``-reward_scale / d``: the reward is this times the row's sum of squared errors."""
        return np.float32(-self.reward_scale / self.dim)

    @cached_property
    def native_tasks(self) -> tuple[np.ndarray, np.ndarray]:
        """The tasks' codes for the native kernel (:func:`envs.native.task_kinds`): ``(kinds, params)``."""
        return native.task_kinds(self.tasks)


class EpisodePlans(NamedTuple):
    """Precomputed episodes of ``B`` copies (``L = episode_length + 1`` rows; observations are assembled
    per step by :func:`observe`).

    Arrays are indexed *time-major* (the numpy path stores them so, so that step ``t`` reads contiguous
    ``(B, ·)`` slices; the native kernel stores each copy's episode contiguously and these are time-major
    views of its ``(B, L, ·)`` arrays; rows are contiguous either way): ``xs`` (L, B, d) float32
    inputs, ``ys`` (L, B, d) float32 targets, ``feedback`` the fed-back values (target feedback: (L, B, d)
    targets plus noise, the same array as ``ys`` without noise; reward feedback: (L, B) noise added to
    the reward; no feedback: None), ``tasks`` (L, B) int64 and ``switched`` (L, B) bool.
    """

    xs: np.ndarray
    ys: np.ndarray
    feedback: np.ndarray | None
    tasks: np.ndarray
    switched: np.ndarray


def episode_words(layout: RegressionLayout, schedule: SwitchSchedule) -> tuple[int, int, int]:
    """Random 64-bit words one episode consumes: (inputs, feedback noise, schedule).

    Inputs and noise take one word per pair of Gaussians (:func:`gaussians`), the schedule one word per
    uniform (:func:`~envs.schedules.uniforms_needed`).
    """
    length = layout.episode_length + 1
    n_x = -(-length * layout.dim // 2)
    n_noise = 0
    if layout.feedback_noise > 0 and layout.feedback != "none":
        n_noise = -(-(length * layout.dim if layout.feedback == "target" else length) // 2)
    return n_x, n_noise, uniforms_needed(schedule, length)


def gaussians(words: np.ndarray, count: int) -> np.ndarray:
    """Standard normal float32 samples from random words by the Box–Muller transform, vectorised.

    The ``2W`` 32-bit halves ``h`` of a row give ``W`` uniforms ``u1 = (h + ½)·2⁻³² ∈ (0, 1]`` (first half)
    and ``W`` uniforms ``u2 = h·2⁻³²`` (second half), computed in float32, and
    ``z = sqrt(-2 ln u1) · (cos 2πu2, sin 2πu2)`` (cosines first). Rounding the 32-bit integers to float32
    moves the uniforms' CDF by at most 2⁻²⁴; the tails reach ``|z| ≈ 6.8``. One generator call per copy
    and a few array operations on whole rows (long contiguous loops) replace per-copy ziggurat calls.

    :param words: shape ``(B, W)`` uint64 (last axis contiguous).
    :param count: samples wanted per row, ``count ≤ 2W``.
    :return: shape ``(B, count)`` float32.
    """
    b, w = words.shape
    halves = words.view(np.uint32)  # (B, 2W)
    radius = np.add(halves[:, :w], np.float32(0.5), dtype=np.float32)  # cast and shift in one pass
    radius *= np.float32(2.0**-32)
    np.log(radius, out=radius)
    radius *= np.float32(-2.0)
    np.sqrt(radius, out=radius)
    angle = np.multiply(halves[:, w:], np.float32(2.0 * np.pi * 2.0**-32), dtype=np.float32)
    z = np.empty((b, 2, w), np.float32)
    np.cos(angle, out=z[:, 0])
    z[:, 0] *= radius
    np.sin(angle, out=angle)
    np.multiply(radius, angle, out=z[:, 1])
    return z.reshape(b, 2 * w)[:, :count]


def build_episodes(
    layout: RegressionLayout,
    schedule: SwitchSchedule,
    words: np.ndarray,
    pools: Sequence[np.ndarray],
    library: ctypes.CDLL | None = None,
) -> EpisodePlans:
    """Episodes of ``B`` copies from their random words, all copies at once (inputs, noise, tasks, plans).

    :param words: shape ``(B, W)`` uint64, row ``b`` drawn by copy ``b``'s generator
        (:meth:`NonStationaryRegression.draw_words`).
    :param pools: each copy's task pool.
    :param library: the native kernel (:func:`envs.native.load`): inputs, built-in targets and noise in one
        C pass per copy (:func:`build_episodes_native`); None: the numpy path below.
    """
    if library is not None:
        return build_episodes_native(layout, schedule, words, pools, library)
    n_x, n_noise, _ = episode_words(layout, schedule)
    b, length, d = words.shape[0], layout.episode_length + 1, layout.dim
    xs = gaussians(words[:, :n_x], length * d).reshape(b, length, d)
    noise = None
    if n_noise:
        shape = (b, length, d) if layout.feedback == "target" else (b, length)
        noise = gaussians(words[:, n_x : n_x + n_noise], int(np.prod(shape[1:]))).reshape(shape)
        noise *= np.float32(layout.feedback_noise)
        noise = np.moveaxis(noise, 0, 1)  # time-major view
    uniforms = (words[:, n_x + n_noise :] >> np.uint64(11)) * (1.0 / 2.0**53)
    tasks = task_sequences(schedule, uniforms, length, pools)
    ys = episode_targets(layout, xs, tasks)
    # time-major copies: every step then reads contiguous (B, ·) slices
    return build_plans(layout, np.ascontiguousarray(xs.transpose(1, 0, 2)), ys, tasks.T, noise)


def build_episodes_native(
    layout: RegressionLayout,
    schedule: SwitchSchedule,
    words: np.ndarray,
    pools: Sequence[np.ndarray],
    library: ctypes.CDLL,
) -> EpisodePlans:
    """:func:`build_episodes` with the native kernel (:mod:`envs.native`): Box–Muller inputs and noise and
    the built-in targets in one pass per copy, straight into each copy's block of the episode arrays; the
    targets of user tasks (arbitrary numpy callables) are then computed here, one call per user task
    present. Not bitwise equal to the numpy path (max differences: ``tests/test_envs_native.py``)."""
    n_x, n_noise, _ = episode_words(layout, schedule)
    length, d = layout.episode_length + 1, layout.dim
    words = np.ascontiguousarray(words, dtype=np.uint64)
    sequences = native.task_sequences(library, schedule, words, n_x + n_noise, length, pools)
    if sequences is None:  # an explicit schedule: numpy
        uniforms = (words[:, n_x + n_noise :] >> np.uint64(11)) * (1.0 / 2.0**53)
        tasks = np.ascontiguousarray(task_sequences(schedule, uniforms, length, pools), dtype=np.int64)
        tasks_t = np.ascontiguousarray(tasks.T)
        switched = switch_flags(tasks_t)
    else:
        tasks, tasks_t, switched = sequences
    kinds, params = layout.native_tasks
    xs, ys, noisy, n_user = native.build_episodes(
        library,
        words,
        n_x,
        n_noise,
        length,
        d,
        layout.feedback,
        layout.feedback_noise,
        tasks,
        kinds,
        params,
    )
    tasks = tasks_t
    if n_user:  # (t, b) rows of user tasks, one vectorised call per task
        ts, bs = np.nonzero(kinds[tasks] == native.TASK_CUSTOM)
        ids = tasks[ts, bs]
        for k in np.unique(ids).tolist():
            rows = (ts[ids == k], bs[ids == k])
            ys[rows] = layout.tasks[k](xs[rows])
            if noisy is not None and layout.feedback == "target":
                noisy[rows] += ys[rows]  # the kernel wrote sigma * n there
    if layout.feedback == "target":
        feedback = ys if noisy is None else noisy
    elif layout.feedback == "reward":
        feedback = noisy if noisy is not None else np.zeros(tasks.shape, np.float32)
    else:
        feedback = None
    return EpisodePlans(xs, ys, feedback, tasks, switched)


def revealed_mask(layout: RegressionLayout) -> np.ndarray:
    """Whether observation ``t`` carries feedback about step ``t-1``: ``t ≥ 1`` and ``t % reveal_every == 0``.

    :return: shape ``(L,)`` bool.
    """
    t = np.arange(layout.episode_length + 1)
    return (t >= 1) & (t % layout.reveal_every == 0)


def episode_targets(layout: RegressionLayout, xs: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """``y[t, b] = f_{tasks[b, t]}(x[b, t])``, one vectorised call per task present (no loop over copies),
    returned time-major.

    Rows are grouped by task with one stable sort (a radix sort of small integers), so that each task
    runs once on one contiguous block (``take`` moves rows far faster than boolean masks); the blocks are
    then scattered straight to their time-major rows.

    :param xs: inputs, shape ``(B, L, d)`` float32, C-contiguous (copy-major, as drawn).
    :param tasks: task ids, shape ``(B, L)``.
    :return: targets, shape ``(L, B, d)`` float32, C-contiguous (time-major).
    """
    b, length, d = xs.shape
    counts = np.bincount(tasks.ravel(), minlength=len(layout.tasks))
    present = np.flatnonzero(counts)
    if len(present) == 1:
        return np.ascontiguousarray(layout.tasks[present[0]](xs).transpose(1, 0, 2), dtype=np.float32)
    ids = tasks.ravel()
    order = np.argsort(ids.astype(np.int16) if len(layout.tasks) < 2**15 else ids, kind="stable")
    grouped = xs.reshape(-1, d).take(order, axis=0)
    start = 0
    for k in present.tolist():
        block = grouped[start : start + counts[k]]
        block[...] = layout.tasks[k](block)
        start += counts[k]
    ys = np.empty((length * b, d), np.float32)
    ys[(order % length) * b + order // length] = grouped  # copy-major row b·L + t -> time-major t·B + b
    return ys.reshape(length, b, d)


def switch_flags(tasks: np.ndarray) -> np.ndarray:
    """``switched[t, b] = tasks[t, b] != tasks[t-1, b]`` (False at t = 0); ``tasks`` (L, B) -> (L, B) bool."""
    switched = np.zeros(tasks.shape, dtype=bool)
    np.not_equal(tasks[1:], tasks[:-1], out=switched[1:])
    return switched


def build_plans(
    layout: RegressionLayout,
    xs: np.ndarray,
    ys: np.ndarray,
    tasks: np.ndarray,
    noise: np.ndarray | None,
) -> EpisodePlans:
    """Fed-back values and switch flags of ``B`` whole episodes at once.

    :param xs: inputs, shape ``(L, B, d)`` float32.
    :param ys: targets, shape ``(L, B, d)`` float32.
    :param tasks: task ids, shape ``(L, B)``.
    :param noise: feedback noise, shape ``(L, B, d)`` (target) or ``(L, B)`` (reward), or None.
    """
    tasks = np.ascontiguousarray(tasks, dtype=np.int64)
    switched = switch_flags(tasks)
    if layout.feedback == "target":
        feedback = ys if noise is None else ys + noise
    elif layout.feedback == "reward":
        feedback = np.ascontiguousarray(noise) if noise is not None else np.zeros(tasks.shape, np.float32)
    else:
        feedback = None
    return EpisodePlans(xs, ys, feedback, tasks, switched)


@lru_cache(maxsize=64)
def clip_bounds(bound: float, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray]:
    """Read-only float32 arrays ``(-bound, +bound)`` of ``shape``: clipping a batch against full-shape
    bounds runs numpy's contiguous (SIMD) loop once, 2-3× faster than against a scalar or a broadcast row."""
    high = np.full(shape, bound, np.float32)
    low = -high
    high.flags.writeable = low.flags.writeable = False
    return low, high


def _row_dot(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Row-wise dot products ``(B, d), (B, d) -> (B,)``, each row the same operation for any ``B``."""
    return np.einsum("bj,bj->b", a, b)


row_dot = getattr(np, "vecdot", _row_dot)  # numpy >= 2: one dot per row, faster than einsum


def score(layout: RegressionLayout, actions: np.ndarray, ys_t: np.ndarray) -> np.ndarray:
    """Rewards ``r = -reward_scale · mean_j (clip(ŷ)_j - y_j)²`` for a batch.

    :param actions: predictions ``ŷ``, shape ``(B, d)``.
    :param ys_t: targets, shape ``(B, d)``.
    :return: rewards, shape ``(B,)`` float32.
    """
    low, high = clip_bounds(layout.action_bound, np.shape(actions))
    err = np.maximum(actions, low, dtype=np.float32)  # clip(ŷ) as two ufunc calls
    np.minimum(err, high, out=err)
    err -= ys_t
    rewards = row_dot(err, err)
    rewards *= layout.reward_factor
    return rewards


def observe(
    layout: RegressionLayout,
    plans: EpisodePlans,
    t: int,
    rewards: np.ndarray | None,
    revealed: np.ndarray,
) -> np.ndarray:
    """Observations ``(B, D)`` at step ``t``: ``[x_t, feedback about step t-1, one-hot(k_t)]``.

    :param rewards: rewards ``(B,)`` of step ``t-1`` (used by reward feedback; None at ``t = 0``).
    :param revealed: :func:`revealed_mask` of the layout.
    """
    d = layout.dim
    obs = np.empty((plans.xs.shape[1], layout.obs_size), np.float32)
    obs[:, :d] = plans.xs[t]
    if layout.feedback == "target":
        if revealed[t]:
            obs[:, d : 2 * d] = plans.feedback[t - 1]
            obs[:, 2 * d] = 1.0
        else:
            obs[:, d : 2 * d + 1] = 0.0
    elif layout.feedback == "reward":
        if revealed[t]:
            np.add(rewards, plans.feedback[t], out=obs[:, d])
            obs[:, d + 1] = 1.0
        else:
            obs[:, d : d + 2] = 0.0
    if layout.oracle:
        off = d + layout.feedback_size
        obs[:, off:] = np.equal.outer(plans.tasks[t], np.arange(len(layout.tasks)))
    return obs


#: ``stepper(t, actions (B, d)) -> (observations (B, D) of step t+1, rewards (B,) of step t)``
Stepper = Callable[[int, np.ndarray], tuple[np.ndarray, np.ndarray]]


def make_stepper(
    layout: RegressionLayout,
    plans: EpisodePlans,
    revealed: np.ndarray,
    library: ctypes.CDLL | None,
) -> Stepper:
    """The step function of one episode: the native fused step (:class:`envs.native.StepKernel`, on plans
    built by the kernel) with the kernel, else :func:`score` then :func:`observe` (numpy). The single env
    and the batched env use the same one, so they stay exactly equal. Both return fresh arrays every step.
    """
    if library is not None:
        return native.StepKernel(library, layout, plans, revealed)

    def numpy_step(t: int, actions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        rewards = score(layout, actions, plans.ys[t])
        return observe(layout, plans, t + 1, rewards, revealed), rewards

    return numpy_step


class RebuildsStepperOnCopy:
    """Mixin: ``copy.deepcopy``/pickling of an env holding a native step (ctypes pointers), which is left
    out of the state and rebuilt from the episode plans. The env has ``layout``, ``_revealed``,
    ``_native``, ``_stepper`` and its plans in the attribute named :attr:`plans_attribute`."""

    plans_attribute = "_plans"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_stepper"] = None
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        plans = getattr(self, self.plans_attribute)
        if plans is not None:
            library = native.load() if self._native else None
            self._stepper = make_stepper(self.layout, plans, self._revealed, library)  # type: ignore[attr-defined]


class NonStationaryRegression(RebuildsStepperOnCopy, gym.Env):
    """Predict ``y_t = f_{k_t}(x_t)`` where the task ``k_t`` switches during the episode.

    At every step the agent sees an input ``x_t ~ N(0, I_d)`` and feedback about the previous step, and
    predicts the target ``y_t``. The task ``k_t`` (``sin_mean``, ``half_cos_mean``, ``tanh_shift_k``, or
    user tasks, see :mod:`envs.tasks`) is drawn from a *pool* and changes mid-episode according to a
    *schedule*; the agent is never told directly which task is active (unless ``oracle=True``), so it
    must infer the task from the feedback — the more the feedback is delayed, sparse or noisy, the more
    memory it needs. The pool can change between episodes (continual-learning phases).

    ## Action Space

    ``Box(-action_bound, action_bound, (d,), float32)``: the prediction ``ŷ_t``. Actions outside the box
    are clipped before the reward is computed.

    ## Observation Space

    ``Box(-inf, inf, (D,), float32)``, the concatenation of

    ========================  ===================  ========================================================
    block                     width                content of observation ``t``
    ========================  ===================  ========================================================
    input                     ``d``                ``x_t``
    feedback (``"target"``)   ``d + 1``            ``y_{t-1}`` (+ ``N(0, σ²)`` noise), then a flag 1.0
    feedback (``"reward"``)   ``2``                ``r_{t-1}`` (+ ``N(0, σ²)`` noise), then a flag 1.0
    feedback (``"none"``)     ``0``                —
    oracle (``oracle=True``)  ``num_tasks``        one-hot of ``k_t``, the task that will score ``ŷ_t``
    ========================  ===================  ========================================================

    Feedback is *present* (values and flag set, else all zeros) when ``t ≥ 1`` and ``t`` is a multiple of
    ``reveal_every``; with ``reveal_every = 1`` every observation but the first carries it.

    ## Rewards

    ``r_t = -reward_scale · mean_j (clip(ŷ_t)_j - y_{t,j})²`` (negative mean squared error). All built-in
    targets lie in [-1, 1], so with the default bound 1 the reward lies in ``[-4·reward_scale, 0]``;
    a perfect predictor scores 0.

    ## Starting State

    ``x_0`` is drawn, the first task is drawn uniformly from the pool (or fixed by an explicit schedule
    entry at step 0), and the feedback block is zero.

    ## Episode End

    The episode is truncated after ``episode_length`` steps (never terminated). All copies of a batch
    have the same length, so :class:`envs.vector.RegressionVecEnv` resets them together.

    ## Arguments

    :param dim: input/target dimension ``d`` (default 64).
    :param tasks: the task universe: names, :class:`~envs.tasks.Task` objects or ``(name, callable)``
        pairs. Task ids in ``info`` and the oracle one-hot index this tuple.
    :param task_pool: tasks (names or ids) drawn during an episode; default: all of ``tasks``.
    :param phases: optional continual-learning curriculum, a list of pools; ``phase`` selects the active one
        and :meth:`set_phase` switches phases (effective at the next reset).
    :param phase: initial phase when ``phases`` is given.
    :param schedule: ``"period"`` (default), ``"hazard"``, ``"none"`` or a list of ``(step, task)`` pairs
        (see :mod:`envs.schedules`).
    :param period: steps between switches for ``schedule="period"`` (default 50).
    :param hazard: per-step switch probability for ``schedule="hazard"`` (default 0.02).
    :param episode_length: steps per episode (default 200).
    :param feedback: ``"target"`` (previous target, MANN-style), ``"reward"`` (previous reward only) or
        ``"none"``.
    :param reveal_every: feedback is present only every ``reveal_every`` steps (default 1).
    :param feedback_noise: std of Gaussian noise added to the fed-back target or reward (default 0).
        The reward itself is always noiseless.
    :param oracle: append the one-hot id of the current task (an upper bound for benchmarks).
    :param reward_scale: positive factor on the reward.
    :param action_bound: the action box is ``[-action_bound, action_bound]^d``.
    :param eval_mode: draw from the evaluation random stream (see :data:`EVAL_STREAM`), so that an
        evaluation env seeded like the training env sees different inputs and switch times.
    :param render_mode: only ``None`` is supported.

    ``info`` of every step holds ``task_id`` (task of the step just scored), ``switched`` (``True`` on the
    first step of a new task) and ``target`` (``y_t``, shape ``(d,)``); the reset info holds ``task_id``.
    """

    metadata: dict[str, Any] = {"render_modes": []}
    plans_attribute = "_plan"  # for RebuildsStepperOnCopy

    def __init__(
        self,
        dim: int = 64,
        tasks: Sequence[TaskSpec] = ("sin_mean", "half_cos_mean", "tanh_shift_2", "tanh_shift_3"),
        task_pool: Sequence[str | int] | None = None,
        phases: Sequence[Sequence[str | int]] | None = None,
        phase: int = 0,
        schedule: str | Sequence[tuple[int, str | int]] | SwitchSchedule | None = "period",
        period: int = 50,
        hazard: float = 0.02,
        episode_length: int = 200,
        feedback: str = "target",
        reveal_every: int = 1,
        feedback_noise: float = 0.0,
        oracle: bool = False,
        reward_scale: float = 1.0,
        action_bound: float = 1.0,
        eval_mode: bool = False,
        render_mode: str | None = None,
    ) -> None:
        super().__init__()
        _check_int("dim", dim, 1)
        _check_int("episode_length", episode_length, 1)
        _check_int("reveal_every", reveal_every, 1)
        if feedback not in FEEDBACK_MODES:
            raise ValueError(f"feedback must be one of {FEEDBACK_MODES}, got {feedback!r}")
        for name, value, low in (
            ("feedback_noise", feedback_noise, 0.0),
            ("reward_scale", reward_scale, None),
            ("action_bound", action_bound, None),
        ):
            if (
                not isinstance(value, float | int)
                or not np.isfinite(value)
                or (value < low if low is not None else value <= 0)
            ):
                allowed = ">= 0" if low is not None else "> 0"
                raise ValueError(f"{name} must be a finite number {allowed}, got {value!r}")
        if render_mode is not None:
            raise ValueError(f"render_mode must be None (this env does not render), got {render_mode!r}")
        self.render_mode = render_mode
        resolved = resolve_tasks(tasks, int(dim))
        self.layout = RegressionLayout(
            dim=int(dim),
            episode_length=int(episode_length),
            feedback=feedback,
            reveal_every=int(reveal_every),
            feedback_noise=float(feedback_noise),
            oracle=bool(oracle),
            reward_scale=float(reward_scale),
            action_bound=float(action_bound),
            tasks=resolved,
        )
        self.eval_mode = bool(eval_mode)
        self.schedule = parse_schedule(
            schedule,
            period=period,
            hazard=hazard,
            task_index=self.task_index,
            horizon=self.layout.episode_length + 1,
        )
        if phases is not None:
            if isinstance(phases, str) or len(phases) == 0:
                raise ValueError(f"phases must be a non-empty list of task pools, got {phases!r}")
            if task_pool is not None:
                raise ValueError("give either task_pool or phases, not both")
            self.phases = tuple(self._resolve_pool(p, "phases[i]") for p in phases)
        else:
            self.phases = (self._resolve_pool(task_pool, "task_pool"),)
        self._phase = 0
        self._pool = self.phases[0]
        self.set_phase(phase)
        self.action_space = spaces.Box(
            -self.layout.action_bound, self.layout.action_bound, (self.layout.dim,), np.float32
        )
        self.observation_space = spaces.Box(-np.inf, np.inf, (self.layout.obs_size,), np.float32)
        self._plan: EpisodePlans | None = None
        self._stepper: Stepper | None = None
        self._native = False  # whether the current episode was built by the native kernel
        self._t = 0
        self._revealed = revealed_mask(self.layout)
        self._n_words = sum(episode_words(self.layout, self.schedule))

    # ----------------------------------------------------------------------------------------- tasks
    @property
    def tasks(self) -> tuple[Task, ...]:
        """The task universe (``info['task_id']`` indexes it)."""
        return self.layout.tasks

    @property
    def task_names(self) -> tuple[str, ...]:
        """Names of the task universe."""
        return tuple(t.name for t in self.layout.tasks)

    def task_index(self, task: str | int) -> int:
        """Index of ``task`` (a name or an index) in the task universe; raises ``ValueError`` if unknown."""
        names = self.task_names
        if isinstance(task, int | np.integer) and not isinstance(task, bool):
            if 0 <= task < len(names):
                return int(task)
            raise ValueError(f"task index {task} out of range [0, {len(names)}); tasks are {names}")
        if isinstance(task, str) and task in names:
            return names.index(task)
        raise ValueError(f"unknown task {task!r}; this env's tasks are {names}")

    def _resolve_pool(self, pool: Sequence[str | int] | None, arg: str) -> np.ndarray:
        if pool is None:
            return np.arange(len(self.layout.tasks), dtype=np.int64)
        if isinstance(pool, str | int):
            raise ValueError(f"{arg} must be a list of task names or ids, got {pool!r}")
        ids = [self.task_index(t) for t in pool]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"{arg} must list distinct tasks and at least one, got {list(pool)!r}")
        return np.asarray(ids, dtype=np.int64)

    @property
    def task_pool(self) -> tuple[str, ...]:
        """Names of the tasks that the next episodes draw from."""
        return tuple(self.layout.tasks[i].name for i in self._pool)

    @property
    def phase(self) -> int:
        """Index of the active curriculum phase."""
        return self._phase

    @property
    def num_phases(self) -> int:
        """Number of curriculum phases (1 without ``phases``)."""
        return len(self.phases)

    def set_task_pool(self, pool: Sequence[str | int]) -> tuple[str, ...]:
        """Draw future tasks from ``pool`` (names or ids) from the next reset on; returns their names."""
        self._pool = self._resolve_pool(pool, "pool")
        logger.debug("task pool set to %s", self.task_pool)
        return self.task_pool

    def set_phase(self, phase: int) -> tuple[str, ...]:
        """Activate curriculum phase ``phase`` from the next reset on (callable via ``VecEnv.env_method``)."""
        if (
            isinstance(phase, bool)
            or not isinstance(phase, int | np.integer)
            or not 0 <= phase < len(self.phases)
        ):
            raise ValueError(f"phase must be an integer in [0, {len(self.phases)}), got {phase!r}")
        self._phase = int(phase)
        self._pool = self.phases[self._phase]
        return self.task_pool

    @property
    def task_id(self) -> int:
        """Task that will score the next action (``-1`` before the first reset)."""
        if self._plan is None:
            return -1
        return int(self._plan.tasks[min(self._t, self.layout.episode_length), 0])

    # ------------------------------------------------------------------------------------- gym API
    def seed_stream(self, seed: int | None) -> None:
        """Re-seed the generator as ``reset(seed=seed)`` does (evaluation stream when ``eval_mode``)."""
        super().reset(seed=seed)
        if seed is not None and self.eval_mode:
            self._np_random = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(EVAL_STREAM,)))
            )

    def draw_words(self) -> np.ndarray:
        """Draw the next episode's random words from this env's generator (the batched VecEnv calls this)."""
        return self.np_random.bit_generator.random_raw(self._n_words)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Start an episode; ``options`` is unused. Returns ``(obs (D,), {"task_id": k_0})``."""
        self.seed_stream(seed)
        library = native.load()
        self._native = library is not None
        self._plan = build_episodes(
            self.layout, self.schedule, self.draw_words()[None], [self._pool], library
        )
        self._stepper = make_stepper(self.layout, self._plan, self._revealed, library)
        self._t = 0
        obs = observe(self.layout, self._plan, 0, None, self._revealed)
        return obs[0], {"task_id": int(self._plan.tasks[0, 0])}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Score the prediction ``action`` (d,) against ``y_t`` and move to step ``t+1``."""
        plan, t = self._plan, self._t
        if plan is None:
            raise RuntimeError("call reset() before step()")
        if t >= self.layout.episode_length:
            raise RuntimeError("the episode was truncated; call reset() before stepping again")
        y = plan.ys[t]
        obs, rewards = self._stepper(t, np.reshape(action, (1, self.layout.dim)))
        self._t = t = t + 1
        info = {
            "task_id": int(plan.tasks[t - 1, 0]),
            "switched": bool(plan.switched[t - 1, 0]),
            "target": y[0],
        }
        return obs[0], float(rewards[0]), False, t >= self.layout.episode_length, info


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
