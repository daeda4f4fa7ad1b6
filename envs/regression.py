"""Sequential regression whose task switches mid-episode (the tutorial's tasks as a Gymnasium environment)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.schedules import SwitchSchedule, parse_schedule, task_sequence
from envs.tasks import Task, TaskFn, resolve_tasks

logger = logging.getLogger(__name__)

__all__ = ["EVAL_STREAM", "FEEDBACK_MODES", "NonStationaryRegression", "RegressionLayout"]

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

    @property
    def feedback_size(self) -> int:
        """Width of the feedback block: values (d for targets, 1 for rewards) plus one 'present' flag."""
        return {"target": self.dim + 1, "reward": 2, "none": 0}[self.feedback]

    @property
    def obs_size(self) -> int:
        """Observation width ``d + feedback_size + (num_tasks if oracle)``."""
        return self.dim + self.feedback_size + (len(self.tasks) if self.oracle else 0)

    @property
    def flag_col(self) -> int:
        """Column of the 'feedback present' flag (only when feedback is not ``"none"``)."""
        return self.dim + self.feedback_size - 1


class EpisodeDraws(NamedTuple):
    """Everything random about one episode, drawn from the env's generator at reset.

    ``xs`` (L, d) float32 inputs, ``noise`` feedback noise ((L, d) or (L,), or None), ``tasks`` (L,) int64,
    with ``L = episode_length + 1`` (the last row makes the final observation).
    """

    xs: np.ndarray
    noise: np.ndarray | None
    tasks: np.ndarray


class EpisodePlans(NamedTuple):
    """Precomputed episodes of ``B`` copies, vectorised over copies and steps.

    ``obs`` (B, L, D) float32 observations (reward feedback values are filled at step time),
    ``ys`` (B, L, d) float32 targets, ``tasks`` (B, L) int64, ``switched`` (B, L) bool,
    ``noise`` (B, L) float32 reward-feedback noise or None.
    """

    obs: np.ndarray
    ys: np.ndarray
    tasks: np.ndarray
    switched: np.ndarray
    noise: np.ndarray | None


def draw_episode(
    layout: RegressionLayout,
    schedule: SwitchSchedule,
    pool: np.ndarray,
    rng: np.random.Generator,
    xs_out: np.ndarray | None = None,
    noise_out: np.ndarray | None = None,
) -> EpisodeDraws:
    """Draw one episode's randomness; order: inputs, feedback noise, task sequence (fixed for determinism).

    :param xs_out: optional C-contiguous float32 array of shape ``(L, d)`` that receives the inputs
        (lets a batch draw straight into its ``(B, L, d)`` buffer).
    :param noise_out: likewise for the feedback noise.
    """
    length = layout.episode_length + 1
    if xs_out is None:
        xs_out = np.empty((length, layout.dim), np.float32)
    xs = rng.standard_normal(dtype=np.float32, out=xs_out)
    noise = None
    if layout.feedback_noise > 0 and layout.feedback != "none":
        if noise_out is None:
            shape = (length, layout.dim) if layout.feedback == "target" else (length,)
            noise_out = np.empty(shape, np.float32)
        noise = rng.standard_normal(dtype=np.float32, out=noise_out)
        noise *= np.float32(layout.feedback_noise)
    tasks = task_sequence(schedule, rng, length, pool)
    return EpisodeDraws(xs, noise, tasks)


def revealed_mask(layout: RegressionLayout) -> np.ndarray:
    """Whether observation ``t`` carries feedback about step ``t-1``: ``t ≥ 1`` and ``t % reveal_every == 0``.

    :return: shape ``(L,)`` bool.
    """
    t = np.arange(layout.episode_length + 1)
    return (t >= 1) & (t % layout.reveal_every == 0)


def episode_targets(layout: RegressionLayout, xs: np.ndarray, tasks: np.ndarray) -> np.ndarray:
    """``y[b, t] = f_{tasks[b, t]}(x[b, t])``, one vectorised call per task present (no loop over copies).

    :param xs: inputs, shape ``(B, L, d)``.
    :param tasks: task ids, shape ``(B, L)``.
    :return: targets, shape ``(B, L, d)``, dtype of ``xs``.
    """
    ys = np.empty_like(xs)
    present = np.flatnonzero(np.bincount(tasks.ravel(), minlength=len(layout.tasks)))
    if len(present) == 1:
        ys[...] = layout.tasks[present[0]](xs)
        return ys
    for k in present:
        mask = tasks == k
        ys[mask] = layout.tasks[k](xs[mask])
    return ys


def build_plans(
    layout: RegressionLayout, xs: np.ndarray, tasks: np.ndarray, noise: np.ndarray | None
) -> EpisodePlans:
    """Targets and observations of ``B`` whole episodes at once.

    Observation ``t`` is ``[x_t, feedback about step t-1, one-hot(k_t)]`` (see the class docstring);
    reward feedback depends on the action and is written at step time (:func:`observe`).

    :param xs: inputs, shape ``(B, L, d)`` float32.
    :param tasks: task ids, shape ``(B, L)`` int64.
    :param noise: feedback noise, shape ``(B, L, d)`` (target) or ``(B, L)`` (reward), or None.
    """
    d = layout.dim
    b, length = tasks.shape
    ys = episode_targets(layout, xs, tasks)
    switched = np.zeros((b, length), dtype=bool)
    np.not_equal(tasks[:, 1:], tasks[:, :-1], out=switched[:, 1:])
    obs = np.empty((b, length, layout.obs_size), dtype=np.float32)
    obs[:, :, :d] = xs
    rev = revealed_mask(layout)
    reward_noise = None
    if layout.feedback == "target":
        fb = obs[:, :, d : 2 * d]
        fb[:, 0] = 0.0
        if noise is not None:
            np.add(ys[:, :-1], noise[:, 1:], out=fb[:, 1:])
        else:
            fb[:, 1:] = ys[:, :-1]
        if layout.reveal_every > 1:
            fb *= rev[:, None]
    elif layout.feedback == "reward":
        obs[:, :, d] = 0.0
        reward_noise = noise if noise is not None else np.zeros((b, length), dtype=np.float32)
    if layout.feedback != "none":
        obs[:, :, layout.flag_col] = rev
    if layout.oracle:
        off = d + layout.feedback_size
        obs[:, :, off:] = tasks[:, :, None] == np.arange(len(layout.tasks))
    return EpisodePlans(obs, ys, tasks, switched, reward_noise)


def score(layout: RegressionLayout, actions: np.ndarray, ys_t: np.ndarray) -> np.ndarray:
    """Rewards ``r = -reward_scale · mean_j (clip(ŷ)_j - y_j)²`` for a batch.

    :param actions: predictions ``ŷ``, shape ``(B, d)``.
    :param ys_t: targets, shape ``(B, d)``.
    :return: rewards, shape ``(B,)`` float32.
    """
    err = np.clip(np.asarray(actions, dtype=np.float32), -layout.action_bound, layout.action_bound)
    err -= ys_t
    err *= err
    rewards = np.add.reduce(err, axis=1)
    rewards *= np.float32(-layout.reward_scale / layout.dim)
    return rewards


def observe(
    layout: RegressionLayout, plans: EpisodePlans, t: int, rewards: np.ndarray, revealed: np.ndarray
) -> np.ndarray:
    """Observations ``(B, D)`` at step ``t`` given the rewards ``(B,)`` of step ``t-1`` (a fresh array)."""
    obs = plans.obs[:, t].copy()
    if plans.noise is not None and revealed[t]:
        np.add(rewards, plans.noise[:, t], out=obs[:, layout.dim])
    return obs


class NonStationaryRegression(gym.Env):
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
        self._t = 0
        self._revealed = revealed_mask(self.layout)

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
        return int(self._plan.tasks[0, min(self._t, self.layout.episode_length)])

    # ------------------------------------------------------------------------------------- gym API
    def seed_stream(self, seed: int | None) -> None:
        """Re-seed the generator as ``reset(seed=seed)`` does (evaluation stream when ``eval_mode``)."""
        super().reset(seed=seed)
        if seed is not None and self.eval_mode:
            self._np_random = np.random.Generator(
                np.random.PCG64(np.random.SeedSequence(seed, spawn_key=(EVAL_STREAM,)))
            )

    def draw_episode(
        self, xs_out: np.ndarray | None = None, noise_out: np.ndarray | None = None
    ) -> EpisodeDraws:
        """Draw the next episode's randomness from this env's generator (the batched VecEnv calls this)."""
        return draw_episode(self.layout, self.schedule, self._pool, self.np_random, xs_out, noise_out)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict]:
        """Start an episode; ``options`` is unused. Returns ``(obs (D,), {"task_id": k_0})``."""
        self.seed_stream(seed)
        draws = self.draw_episode()
        noise = None if draws.noise is None else draws.noise[None]
        self._plan = build_plans(self.layout, draws.xs[None], draws.tasks[None], noise)
        self._t = 0
        return self._plan.obs[0, 0].copy(), {"task_id": int(self._plan.tasks[0, 0])}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict]:
        """Score the prediction ``action`` (d,) against ``y_t`` and move to step ``t+1``."""
        plan, t = self._plan, self._t
        if plan is None:
            raise RuntimeError("call reset() before step()")
        if t >= self.layout.episode_length:
            raise RuntimeError("the episode was truncated; call reset() before stepping again")
        y = plan.ys[:, t]
        rewards = score(self.layout, np.reshape(action, (1, self.layout.dim)), y)
        self._t = t = t + 1
        obs = observe(self.layout, plan, t, rewards, self._revealed)
        info = {
            "task_id": int(plan.tasks[0, t - 1]),
            "switched": bool(plan.switched[0, t - 1]),
            "target": y[0],
        }
        return obs[0], float(rewards[0]), False, t >= self.layout.episode_length, info


def _check_int(name: str, value: Any, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
