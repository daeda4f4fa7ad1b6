"""Wrappers that make any Gymnasium environment non-stationary, or give an agent the feedback memory needs.

* :class:`NonStationary` switches an environment's *task* mid-episode on a schedule (:mod:`envs.schedules`).
  A task is a dict of physics parameters (built-in sets for CartPole, Pendulum, MountainCar(Continuous)
  and Acrobot, with derived quantities kept consistent) and/or generic perturbations of any Box
  environment (observation scaling and permutation, action negation and scaling).
* :class:`FeedbackWrapper` appends the previous action and reward to the observation (RL², Duan et al. 2016).
* :class:`HistoryWrapper` stacks the last ``k`` steps into a ``(k, F)`` window (for window extractors), or
  each entry of a ``Dict`` observation into its own ``(k, ...)`` stack.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from envs.schedules import SwitchSchedule, parse_schedule

logger = logging.getLogger(__name__)

__all__ = [
    "PERTURBATIONS",
    "PHYSICS_PARAMETERS",
    "FeedbackWrapper",
    "HistoryWrapper",
    "NonStationary",
    "random_perturbation_tasks",
    "random_physics_tasks",
]

#: spawn key of the wrappers' own random stream (switch times, task draws); the wrapped env's
#: generator is never touched, so wrapping changes nothing but the named parameters.
WRAPPER_STREAM = 0x4E5741


def _cartpole_derived(env: Any) -> None:
    env.total_mass = env.masspole + env.masscart
    env.polemass_length = env.masspole * env.length


def _acrobot_derived(env: Any) -> None:
    # uniform links: the centre of mass sits at half the link's length (0.5 for the default length 1)
    env.LINK_COM_POS_1 = 0.5 * env.LINK_LENGTH_1
    env.LINK_COM_POS_2 = 0.5 * env.LINK_LENGTH_2


@dataclass(frozen=True)
class PhysicsSet:
    """Parameters of one environment class: public name -> attribute, and the derived-quantity update."""

    attributes: Mapping[str, str]
    derived: Callable[[Any], None] | None = None


#: built-in parameter sets, keyed by the class name of ``env.unwrapped``
PHYSICS_PARAMETERS: dict[str, PhysicsSet] = {
    "CartPoleEnv": PhysicsSet(
        {
            "gravity": "gravity",
            "masscart": "masscart",
            "masspole": "masspole",
            "length": "length",
            "force_mag": "force_mag",
        },
        _cartpole_derived,
    ),  # fmt: skip
    "PendulumEnv": PhysicsSet({"g": "g", "m": "m", "l": "l", "max_torque": "max_torque"}),
    "Continuous_MountainCarEnv": PhysicsSet({"power": "power"}),
    "MountainCarEnv": PhysicsSet({"force": "force", "gravity": "gravity"}),
    "AcrobotEnv": PhysicsSet(
        {
            "link_length_1": "LINK_LENGTH_1",
            "link_length_2": "LINK_LENGTH_2",
            "link_mass_1": "LINK_MASS_1",
            "link_mass_2": "LINK_MASS_2",
        },
        _acrobot_derived,
    ),  # fmt: skip
}

#: generic perturbations of Box environments (task keys that are not physics parameters)
PERTURBATIONS = ("obs_scale", "obs_permutation", "action_negate", "action_scale")


def _physics_set(env: gym.Env) -> PhysicsSet | None:
    for cls in type(env.unwrapped).__mro__:
        if cls.__name__ in PHYSICS_PARAMETERS:
            return PHYSICS_PARAMETERS[cls.__name__]
    return None


class NonStationary(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Switch the wrapped environment's task mid-episode.

    A *task* is a dict. Its physics keys name parameters of the environment (see
    :data:`PHYSICS_PARAMETERS`; for other environments any existing numeric attribute of
    ``env.unwrapped`` may be named, without derived-quantity updates); parameters a task does not name
    take their default values. Its perturbation keys (:data:`PERTURBATIONS`) transform Box spaces:

    * ``obs_scale``: float or array of the observation's shape; ``o' = o · obs_scale`` (non-zero);
    * ``obs_permutation``: permutation of ``range(obs_dim)`` for 1-D observations; ``o' = o[perm]``
      (applied after scaling);
    * ``action_negate``: ``True`` -> the env receives ``-a``;
    * ``action_scale``: float or array; the env receives ``clip(action_scale · a)`` (after negation).

    Task ``k_t`` governs step ``t`` (0-based, counted from reset): a switch at step ``t`` sets the new
    parameters before the env's ``step`` runs, and the observation it returns is perturbed the new way.
    ``info`` carries ``task_id`` and ``switched`` (``True`` on the first step of a new task); the reset
    info carries ``task_id``. The wrapper draws switch times and tasks from its own generator, seeded by
    ``reset(seed=...)`` (spawn key :data:`WRAPPER_STREAM`), and never consumes the env's generator.

    :param env: any Gymnasium environment.
    :param tasks: the list of tasks (dicts); ``task_id`` indexes it.
    :param schedule: ``"period"``, ``"hazard"``, ``"none"`` or a list of ``(step, task index)`` pairs.
    :param period: steps between switches for ``"period"`` (default 100).
    :param hazard: per-step switch probability for ``"hazard"`` (default 0.01).
    :param task_pool: indices of the tasks drawn at reset and at switches (default: all).
    :raises ValueError: for an unknown parameter, a parameter the env does not have, a perturbation the
        spaces do not allow, or a bad schedule.
    """

    def __init__(
        self,
        env: gym.Env,
        tasks: Sequence[Mapping[str, Any]],
        schedule: str | Sequence[tuple[int, int]] | SwitchSchedule | None = "period",
        period: int = 100,
        hazard: float = 0.01,
        task_pool: Sequence[int] | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, tasks=tasks, schedule=schedule, period=period, hazard=hazard, task_pool=task_pool
        )
        super().__init__(env)
        if isinstance(tasks, Mapping) or not isinstance(tasks, Sequence) or len(tasks) == 0:
            raise ValueError(f"tasks must be a non-empty list of dicts, got {tasks!r}")
        self._physics = _physics_set(env)
        self.tasks = tuple(self._validate_task(i, dict(t)) for i, t in enumerate(tasks))
        self.schedule = parse_schedule(schedule, period=period, hazard=hazard, task_index=self._task_index)
        self._pool = np.arange(len(self.tasks)) if task_pool is None else np.asarray(
            [self._task_index(k) for k in task_pool], dtype=np.int64
        )  # fmt: skip
        if len(self._pool) == 0 or len(set(self._pool.tolist())) != len(self._pool):
            raise ValueError(f"task_pool must list distinct task indices, got {task_pool!r}")
        names = sorted({k for t in self.tasks for k in t if k not in PERTURBATIONS})
        self._defaults = {k: getattr(self.env.unwrapped, self._attribute(k)) for k in names}
        self._events = dict(self.schedule.events)
        self._rng = np.random.default_rng()
        self._t = 0
        self._task = -1
        self._obs_dtype = None
        self.observation_space = self._perturbed_observation_space()

    # ------------------------------------------------------------------------------------ validation
    def _task_index(self, k: Any) -> int:
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or not 0 <= k < len(self.tasks):
            raise ValueError(f"task must be an index in [0, {len(self.tasks)}), got {k!r}")
        return int(k)

    def _attribute(self, name: str) -> str:
        if self._physics is not None:
            return self._physics.attributes[name]
        return name

    def _validate_task(self, i: int, task: dict[str, Any]) -> dict[str, Any]:
        base = self.env.unwrapped
        for key, value in task.items():
            if key in PERTURBATIONS:
                continue
            if self._physics is not None:
                if key not in self._physics.attributes:
                    raise ValueError(
                        f"tasks[{i}]: unknown parameter {key!r} for {type(base).__name__}; allowed: "
                        f"{sorted(self._physics.attributes)} and perturbations {list(PERTURBATIONS)}"
                    )
            elif not isinstance(getattr(base, key, None), int | float | np.floating) or isinstance(
                getattr(base, key), bool
            ):
                raise ValueError(
                    f"tasks[{i}]: {type(base).__name__} has no numeric attribute {key!r} to vary "
                    f"(perturbations: {list(PERTURBATIONS)})"
                )
            if not isinstance(value, int | float | np.floating) or not np.isfinite(value):
                raise ValueError(f"tasks[{i}][{key!r}] must be a finite number, got {value!r}")
        obs_space, act_space = self.env.observation_space, self.env.action_space
        if ("obs_scale" in task or "obs_permutation" in task) and not isinstance(obs_space, spaces.Box):
            raise ValueError(
                f"tasks[{i}]: observation perturbations need a Box observation space, got {obs_space}"
            )
        if ("action_scale" in task or "action_negate" in task) and not isinstance(act_space, spaces.Box):
            raise ValueError(f"tasks[{i}]: action perturbations need a Box action space, got {act_space}")
        if "obs_scale" in task:
            scale = np.broadcast_to(np.asarray(task["obs_scale"], dtype=np.float64), obs_space.shape)
            if not np.all(np.isfinite(scale)) or np.any(scale == 0):
                raise ValueError(
                    f"tasks[{i}]['obs_scale'] must be finite and non-zero, got {task['obs_scale']!r}"
                )
            task["obs_scale"] = scale
        if "obs_permutation" in task:
            perm = np.asarray(task["obs_permutation"])
            if len(obs_space.shape) != 1 or sorted(perm.tolist()) != list(range(obs_space.shape[0])):
                raise ValueError(
                    f"tasks[{i}]['obs_permutation'] must be a permutation of range({obs_space.shape}) "
                    f"for a 1-D observation, got {task['obs_permutation']!r}"
                )
            task["obs_permutation"] = perm.astype(np.int64)
        if "action_scale" in task:
            scale = np.broadcast_to(np.asarray(task["action_scale"], dtype=np.float64), act_space.shape)
            if not np.all(np.isfinite(scale)):
                raise ValueError(f"tasks[{i}]['action_scale'] must be finite, got {task['action_scale']!r}")
            task["action_scale"] = scale
        if "action_negate" in task and not isinstance(task["action_negate"], bool | np.bool_):
            raise ValueError(f"tasks[{i}]['action_negate'] must be a bool, got {task['action_negate']!r}")
        return task

    def _perturbed_observation_space(self) -> gym.Space:
        space = self.env.observation_space
        if not any("obs_scale" in t or "obs_permutation" in t for t in self.tasks):
            return space
        lows, highs = [], []
        for task in self.tasks:
            low, high = self._transform_obs_bounds(
                task, space.low.astype(np.float64), space.high.astype(np.float64)
            )
            lows.append(low)
            highs.append(high)
        dtype = space.dtype if np.issubdtype(space.dtype, np.floating) else np.float32
        self._obs_dtype = dtype
        return spaces.Box(
            np.min(lows, axis=0).astype(dtype), np.max(highs, axis=0).astype(dtype), dtype=dtype
        )

    @staticmethod
    def _transform_obs_bounds(task: Mapping[str, Any], low: np.ndarray, high: np.ndarray) -> tuple:
        if "obs_scale" in task:
            s = task["obs_scale"]
            with np.errstate(invalid="ignore"):
                low, high = np.minimum(low * s, high * s), np.maximum(low * s, high * s)
        if "obs_permutation" in task:
            low, high = low[task["obs_permutation"]], high[task["obs_permutation"]]
        return low, high

    # ----------------------------------------------------------------------------------- switching
    @property
    def task_id(self) -> int:
        """Index of the active task (``-1`` before the first reset)."""
        return self._task

    @property
    def task_pool(self) -> tuple[int, ...]:
        """Task indices drawn at reset and at switches."""
        return tuple(self._pool.tolist())

    def set_task_pool(self, pool: Sequence[int]) -> tuple[int, ...]:
        """Draw tasks from ``pool`` (indices) from now on (callable through ``VecEnv.env_method``)."""
        ids = [self._task_index(k) for k in pool]
        if not ids or len(set(ids)) != len(ids):
            raise ValueError(f"pool must list distinct task indices, got {pool!r}")
        self._pool = np.asarray(ids, dtype=np.int64)
        return self.task_pool

    def _apply(self, k: int) -> None:
        """Set the physics of task ``k`` (defaults for unnamed parameters) and update derived quantities."""
        base = self.env.unwrapped
        task = self.tasks[k]
        for name, default in self._defaults.items():
            setattr(base, self._attribute(name), task.get(name, default))
        if self._physics is not None and self._physics.derived is not None and self._defaults:
            self._physics.derived(base)
        self._task = k

    def _draw_other(self) -> int:
        others = self._pool[self._pool != self._task]
        if len(others) == 0:
            return self._task
        return int(others[self._rng.integers(len(others))])

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        if seed is not None:
            self._rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(WRAPPER_STREAM,)))
        self._t = 0
        first = self._events.get(0)
        self._apply(first if first is not None else int(self._pool[self._rng.integers(len(self._pool))]))
        obs, info = self.env.reset(seed=seed, options=options)
        info = dict(info)
        info["task_id"] = self._task
        return self._observation(obs), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        t = self._t
        previous = self._task
        if self.schedule.kind == "explicit":
            if t > 0 and t in self._events:
                self._apply(self._events[t])
        elif self.schedule.switches_at(t, self._rng):
            self._apply(self._draw_other())
        obs, reward, terminated, truncated, info = self.env.step(self._action(action))
        self._t = t + 1
        info = dict(info)
        info["task_id"] = self._task
        info["switched"] = self._task != previous
        return self._observation(obs), reward, terminated, truncated, info

    def _observation(self, obs: Any) -> Any:
        task = self.tasks[self._task]
        if "obs_scale" in task:
            obs = obs * task["obs_scale"]
        if "obs_permutation" in task:
            obs = obs[task["obs_permutation"]]
        if self._obs_dtype is not None:
            obs = np.asarray(obs, dtype=self._obs_dtype)
        return obs

    def _action(self, action: Any) -> Any:
        task = self.tasks[self._task]
        if "action_negate" not in task and "action_scale" not in task:
            return action
        a = np.asarray(action, dtype=np.float64)
        if task.get("action_negate", False):
            a = -a
        if "action_scale" in task:
            a = a * task["action_scale"]
        space = self.env.action_space
        return np.clip(a, space.low, space.high).astype(space.dtype)


def random_physics_tasks(
    env: gym.Env,
    num_tasks: int,
    parameters: Sequence[str] | None = None,
    scale_range: tuple[float, float] = (0.5, 2.0),
    seed: int | None = None,
) -> list[dict[str, float]]:
    """Tasks that multiply each named default parameter by a log-uniform factor in ``scale_range``.

    :param env: an environment with a built-in parameter set (:data:`PHYSICS_PARAMETERS`).
    :param num_tasks: number of tasks; task 0 keeps the defaults.
    :param parameters: parameter names (default: the whole set).
    :param scale_range: ``(low, high)`` with ``0 < low <= high``.
    :param seed: seed of the factors.
    """
    physics = _physics_set(env)
    if physics is None:
        raise ValueError(
            f"random_physics_tasks: no built-in parameter set for {type(env.unwrapped).__name__}; "
            f"known: {sorted(PHYSICS_PARAMETERS)}"
        )
    names = list(physics.attributes) if parameters is None else list(parameters)
    unknown = [p for p in names if p not in physics.attributes]
    if unknown:
        raise ValueError(
            f"random_physics_tasks: unknown parameters {unknown}; allowed {sorted(physics.attributes)}"
        )
    low, high = scale_range
    if not 0 < low <= high:
        raise ValueError(f"scale_range must satisfy 0 < low <= high, got {scale_range!r}")
    if num_tasks < 1:
        raise ValueError(f"num_tasks must be >= 1, got {num_tasks!r}")
    rng = np.random.default_rng(seed)
    base = env.unwrapped
    tasks: list[dict[str, float]] = [{}]
    for _ in range(num_tasks - 1):
        factors = np.exp(rng.uniform(np.log(low), np.log(high), size=len(names)))
        tasks.append({p: float(getattr(base, physics.attributes[p]) * f) for p, f in zip(names, factors)})
    return tasks


def random_perturbation_tasks(
    env: gym.Env,
    num_tasks: int,
    kinds: Sequence[str] = ("obs_permutation", "action_negate"),
    seed: int | None = None,
) -> list[dict[str, Any]]:
    """Generic tasks for a Box environment: task 0 is the identity, the others draw random perturbations.

    :param kinds: which of :data:`PERTURBATIONS` to draw (scales log-uniform in [0.5, 2], random signs for
        ``obs_scale``; a random permutation; ``action_negate`` alternates True/False).
    """
    unknown = [k for k in kinds if k not in PERTURBATIONS]
    if unknown:
        raise ValueError(f"random_perturbation_tasks: unknown kinds {unknown}; allowed {list(PERTURBATIONS)}")
    rng = np.random.default_rng(seed)
    tasks: list[dict[str, Any]] = [{}]
    for i in range(1, num_tasks):
        task: dict[str, Any] = {}
        if "obs_scale" in kinds:
            shape = env.observation_space.shape
            task["obs_scale"] = np.exp(rng.uniform(np.log(0.5), np.log(2.0), shape)) * rng.choice(
                [-1.0, 1.0], shape
            )
        if "obs_permutation" in kinds:
            task["obs_permutation"] = rng.permutation(env.observation_space.shape[0])
        if "action_negate" in kinds:
            task["action_negate"] = bool(i % 2)
        if "action_scale" in kinds:
            task["action_scale"] = float(np.exp(rng.uniform(np.log(0.5), np.log(2.0))))
        tasks.append(task)
    return tasks


# ------------------------------------------------------------------------------------- feedback
def _action_encoding_space(space: gym.Space) -> spaces.Box:
    """Box of the flattened action (one-hot for discrete spaces)."""
    if isinstance(space, spaces.Box):
        return spaces.Box(space.low.reshape(-1).astype(np.float32), space.high.reshape(-1).astype(np.float32))
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
        return spaces.Box(0.0, 1.0, (spaces.flatdim(space),), np.float32)
    raise TypeError(f"unsupported action space {space}; allowed: Box, Discrete, MultiDiscrete, MultiBinary")


def _encode_action(space: gym.Space, action: Any) -> np.ndarray:
    if isinstance(space, spaces.Box):
        return np.clip(
            np.asarray(action, dtype=np.float32).reshape(-1), space.low.reshape(-1), space.high.reshape(-1)
        )
    if isinstance(space, spaces.Discrete):
        action = int(np.asarray(action).reshape(()))
    return np.asarray(spaces.flatten(space, action), dtype=np.float32)


def _is_image(space: gym.Space) -> bool:
    return isinstance(space, spaces.Box) and space.dtype == np.uint8 and len(space.shape) == 3


class FeedbackWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Append the previous action and reward to the observation (RL², Duan et al. 2016).

    Observation ``t`` becomes ``[o_t, enc(a_{t-1}), r_{t-1}]`` with ``enc`` the flattened action (one-hot
    for ``Discrete``, concatenated one-hots for ``MultiDiscrete``); both are zero after reset.

    * vector observations (Box, Discrete, MultiDiscrete, MultiBinary) -> one flat float32 ``Box``;
    * ``Dict`` observations -> the same ``Dict`` plus keys ``prev_action`` and ``prev_reward``;
    * image observations (uint8, 3-D) -> ``Dict(obs=image, prev_action=..., prev_reward=...)``.

    :param env: any environment whose action space is Box, Discrete, MultiDiscrete or MultiBinary.
    :param reward_scale: factor on the fed-back reward.
    """

    def __init__(self, env: gym.Env, reward_scale: float = 1.0) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, reward_scale=reward_scale)
        super().__init__(env)
        self._act_space = _action_encoding_space(env.action_space)
        self._rew_space = spaces.Box(-np.inf, np.inf, (1,), np.float32)
        self.reward_scale = float(reward_scale)
        obs_space = env.observation_space
        if isinstance(obs_space, spaces.Dict):
            clash = {"prev_action", "prev_reward"} & set(obs_space.spaces)
            if clash:
                raise ValueError(f"observation Dict already has keys {sorted(clash)}")
            self._mode = "dict"
            self.observation_space = spaces.Dict(
                {**obs_space.spaces, "prev_action": self._act_space, "prev_reward": self._rew_space}
            )
        elif _is_image(obs_space):
            self._mode = "image"
            self.observation_space = spaces.Dict(
                {"obs": obs_space, "prev_action": self._act_space, "prev_reward": self._rew_space}
            )
        elif isinstance(obs_space, spaces.Box | spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
            self._mode = "flat"
            flat = spaces.flatten_space(obs_space)
            self.observation_space = spaces.Box(
                np.concatenate([flat.low, self._act_space.low, [-np.inf]]).astype(np.float32),
                np.concatenate([flat.high, self._act_space.high, [np.inf]]).astype(np.float32),
                dtype=np.float32,
            )
        else:
            raise TypeError(f"FeedbackWrapper: unsupported observation space {obs_space}")

    def _augment(self, obs: Any, action_enc: np.ndarray, reward: float) -> Any:
        rew = np.array([reward * self.reward_scale], dtype=np.float32)
        if self._mode == "dict":
            return {**obs, "prev_action": action_enc, "prev_reward": rew}
        if self._mode == "image":
            return {"obs": obs, "prev_action": action_enc, "prev_reward": rew}
        flat = spaces.flatten(self.env.observation_space, obs)
        return np.concatenate([flat, action_enc, rew]).astype(np.float32)

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        return self._augment(obs, np.zeros(self._act_space.shape, np.float32), 0.0), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        enc = _encode_action(self.env.action_space, action)
        return self._augment(obs, enc, float(reward)), reward, terminated, truncated, info


def _stacked_box(low: np.ndarray, high: np.ndarray, k: int, dtype: Any) -> spaces.Box:
    """Box of ``k`` stacked rows with the given per-row bounds, widened to contain the zero padding."""
    low = np.minimum(low, 0).astype(dtype)
    high = np.maximum(high, 0).astype(dtype)
    return spaces.Box(
        np.broadcast_to(low, (k, *low.shape)), np.broadcast_to(high, (k, *high.shape)), dtype=dtype
    )


def _history_subspace(key: str, space: gym.Space, k: int) -> spaces.Box:
    """Stacked space of one ``Dict`` entry: ``(k, *shape)`` for a Box (its dtype kept), ``(k, n)`` float32
    one-hot/flat encodings for Discrete, MultiDiscrete and MultiBinary; anything else raises ``TypeError``."""
    if isinstance(space, spaces.Box):
        return _stacked_box(space.low, space.high, k, space.dtype)
    if isinstance(space, spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
        flat = spaces.flatten_space(space)
        return _stacked_box(flat.low, flat.high, k, np.float32)
    raise TypeError(
        f"HistoryWrapper: observation key {key!r} has unsupported space {space}; allowed sub-spaces: "
        "Box, Discrete, MultiDiscrete, MultiBinary (flatten nested Dict/Tuple entries first)"
    )


class HistoryWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """Stack the last ``k`` steps, oldest first; steps before the episode's start are zeros.

    * Box, Discrete, MultiDiscrete or MultiBinary observations -> a float32 ``Box`` of shape ``(k, F)``:
      row ``i`` holds ``[flatten(o), enc(a_prev), r_prev]`` of one step (the action and reward parts
      only with ``include_action`` / ``include_reward``). Meant for window extractors that run a memory
      over ``k`` steps.
    * ``Dict`` observations -> a ``Dict`` with the same keys, each entry the stack of its last ``k`` values:
      a Box entry of shape ``S`` becomes ``(k, *S)`` with its dtype; Discrete, MultiDiscrete and
      MultiBinary entries become ``(k, n)`` float32 one-hot / flat encodings. ``include_action`` and
      ``include_reward`` add the keys ``prev_action`` ``(k, A)`` and ``prev_reward`` ``(k, 1)``. SB3's
      ``MultiInputPolicy`` trains on it. Other entries (nested Dict, Tuple, …) raise ``TypeError`` naming
      the key.

    The newest row is the current step; every box is widened to contain the zero padding.

    :param env: an environment with a Box, Discrete, MultiDiscrete, MultiBinary or Dict observation space.
    :param k: window length >= 1.
    :param include_action: add the previous action (flattened / one-hot) to every row.
    :param include_reward: add the previous reward to every row.
    """

    def __init__(
        self, env: gym.Env, k: int, include_action: bool = False, include_reward: bool = False
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(
            self, k=k, include_action=include_action, include_reward=include_reward
        )
        super().__init__(env)
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
            raise ValueError(f"k must be an integer >= 1, got {k!r}")
        self.k = int(k)
        self.include_action, self.include_reward = bool(include_action), bool(include_reward)
        obs_space = env.observation_space
        act = _action_encoding_space(env.action_space) if self.include_action else None
        if isinstance(obs_space, spaces.Dict):
            stacked = {key: _history_subspace(key, sub, self.k) for key, sub in obs_space.spaces.items()}
            extra = {}
            if act is not None:
                extra["prev_action"] = _stacked_box(act.low, act.high, self.k, np.float32)
            if self.include_reward:
                extra["prev_reward"] = _stacked_box(
                    np.array([-np.inf]), np.array([np.inf]), self.k, np.float32
                )
            clash = set(extra) & set(stacked)
            if clash:
                raise ValueError(f"HistoryWrapper: observation Dict already has keys {sorted(clash)}")
            self.observation_space = spaces.Dict({**stacked, **extra})
            self.row_size = None
        elif isinstance(obs_space, spaces.Box | spaces.Discrete | spaces.MultiDiscrete | spaces.MultiBinary):
            flat = spaces.flatten_space(obs_space)
            lows, highs = [flat.low], [flat.high]
            if act is not None:
                lows.append(act.low)
                highs.append(act.high)
            if self.include_reward:
                lows.append(np.array([-np.inf]))
                highs.append(np.array([np.inf]))
            self.observation_space = _stacked_box(
                np.concatenate(lows), np.concatenate(highs), self.k, np.float32
            )
            self.row_size = self.observation_space.shape[1]
        else:
            raise TypeError(
                "HistoryWrapper: observation space must be Box/Discrete/MultiDiscrete/MultiBinary or a Dict "
                f"of them, got {obs_space}"
            )
        self._window = self._zeros()

    def _zeros(self) -> Any:
        space = self.observation_space
        if isinstance(space, spaces.Dict):
            return {key: np.zeros(sub.shape, sub.dtype) for key, sub in space.spaces.items()}
        return np.zeros(space.shape, space.dtype)

    def _action_row(self, action: Any) -> np.ndarray:
        if action is None:
            return np.zeros(spaces.flatdim(self.env.action_space), np.float32)
        return _encode_action(self.env.action_space, action)

    def _row(self, obs: Any, action: Any, reward: float) -> Any:
        """The newest row: one flat float32 vector, or a dict of per-key rows (``action`` None at reset)."""
        space = self.env.observation_space
        if isinstance(space, spaces.Dict):
            row = {}
            for key, sub in space.spaces.items():
                if isinstance(sub, spaces.Box):
                    row[key] = np.asarray(obs[key], dtype=sub.dtype).reshape(sub.shape)
                else:
                    row[key] = np.asarray(spaces.flatten(sub, obs[key]), dtype=np.float32)
            if self.include_action:
                row["prev_action"] = self._action_row(action)
            if self.include_reward:
                row["prev_reward"] = np.array([reward], np.float32)
            return row
        parts = [np.asarray(spaces.flatten(space, obs), dtype=np.float32)]
        if self.include_action:
            parts.append(self._action_row(action))
        if self.include_reward:
            parts.append(np.array([reward], np.float32))
        return np.concatenate(parts)

    def _push(self, row: Any) -> Any:
        """Shift the window one step (oldest row out) and write ``row`` last; returns a copy."""
        if isinstance(self._window, dict):
            for key, window in self._window.items():
                window[:-1] = window[1:]
                window[-1] = row[key]
            return {key: window.copy() for key, window in self._window.items()}
        self._window[:-1] = self._window[1:]
        self._window[-1] = row
        return self._window.copy()

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        obs, info = self.env.reset(seed=seed, options=options)
        self._window = self._zeros()
        return self._push(self._row(obs, None, 0.0)), info

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._push(self._row(obs, action, float(reward))), reward, terminated, truncated, info


def make_nonstationary(
    base_id: str,
    tasks: Sequence[Mapping[str, Any]],
    schedule: str | Sequence[tuple[int, int]] = "period",
    period: int = 100,
    hazard: float = 0.01,
    feedback: bool = False,
    **make_kwargs: Any,
) -> gym.Env:
    """``NonStationary(gym.make(base_id, **make_kwargs), tasks, ...)``, optionally wrapped in feedback.

    The entry point of the registered ``memagent/NonStationary<Env>-v0`` ids.
    """
    env: gym.Env = NonStationary(
        gym.make(base_id, **make_kwargs), tasks, schedule=schedule, period=period, hazard=hazard
    )
    return FeedbackWrapper(env) if feedback else env
