"""A natively batched Stable-Baselines3 ``VecEnv`` for :class:`~envs.regression.NonStationaryRegression`.

``RegressionVecEnv(n, env_kwargs)`` behaves exactly like ``DummyVecEnv([lambda: NonStationaryRegression(
**env_kwargs)] * n)`` — same observations, rewards, dones and infos step for step under the same seeds,
same-step autoreset with ``info["terminal_observation"]`` and ``info["TimeLimit.truncated"]``, ``seed``,
``get_attr``/``set_attr``/``env_method`` — but steps all copies in one computation.

How: every copy keeps its own :class:`NonStationaryRegression` instance for its random generator, its task
pool and its methods. At reset each copy's episode randomness is drawn from its own generator (the same
words as the single env's ``random_raw``, all copies in one call of the native kernel, or one numpy call
per copy); inputs and targets of the whole episode are then computed for all copies at once — by the
native episode kernel (:mod:`envs.native`: one C pass per copy) or, with ``MEMAGENT_NATIVE=0`` or without
a C compiler, by numpy — into ``(L, n, ·)`` arrays, and a step is one fused kernel call (or a handful
of array operations) on slice ``t``. The single env uses the same code with ``n = 1``, so both paths
keep the two exactly equal. ``info_keys`` can leave out per-step info entries for speed.

All copies share one clock (episodes have a fixed length), so they are reset together. Call ``reset`` on
the VecEnv, never ``env_method("reset")``; methods that change the task pool (``set_phase``,
``set_task_pool``) take effect at the next reset, as in the single env.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv, VecMonitor
from stable_baselines3.common.vec_env.base_vec_env import VecEnvIndices, VecEnvObs, VecEnvStepReturn

from envs import native
from envs.regression import (
    EpisodePlans,
    NonStationaryRegression,
    RebuildsStepperOnCopy,
    Stepper,
    build_episodes,
    episode_words,
    make_stepper,
    observe,
    revealed_mask,
)

__all__ = ["INFO_KEYS", "RegressionVecEnv", "make_vec_env"]

_ENTRY_POINT = "envs.regression:NonStationaryRegression"
#: the per-step ``info`` entries of :class:`NonStationaryRegression`, all returned by default
INFO_KEYS = ("task_id", "switched", "target")


class RegressionVecEnv(RebuildsStepperOnCopy, VecEnv):
    """``n`` copies of :class:`NonStationaryRegression` stepped as one batch.

    :param num_envs: number of copies ``n``.
    :param env_kwargs: keyword arguments of :class:`NonStationaryRegression` (the same for every copy).
    :param seed: if given, ``seed(seed)`` is called: copy ``i`` is seeded with ``seed + i`` at the next reset,
        exactly as SB3's ``VecEnv.seed`` does.
    :param info_keys: which of the env's step ``info`` entries (:data:`INFO_KEYS`: ``task_id``, ``switched``,
        ``target``) to return; default all, exactly as ``DummyVecEnv``. An opt-out for speed: building 64
        info dicts is about a third of a step, the ``target`` row views a third of that. SB3's own entries
        (``TimeLimit.truncated``, ``terminal_observation``) are always there.

    ``step`` takes actions of shape ``(n, d)`` and returns observations ``(n, D)`` float32, rewards ``(n,)``
    float32, dones ``(n,)`` bool and ``n`` info dicts.
    """

    def __init__(
        self,
        num_envs: int,
        env_kwargs: dict[str, Any] | None = None,
        seed: int | None = None,
        info_keys: Sequence[str] = INFO_KEYS,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int | np.integer) or num_envs < 1:
            raise ValueError(f"num_envs must be an integer >= 1, got {num_envs!r}")
        if isinstance(info_keys, str) or not set(info_keys) <= set(INFO_KEYS):
            raise ValueError(f"info_keys must be a subset of {INFO_KEYS}, got {info_keys!r}")
        self.info_keys = tuple(k for k in INFO_KEYS if k in set(info_keys))
        self.env_kwargs = dict(env_kwargs or {})
        self.envs = [NonStationaryRegression(**self.env_kwargs) for _ in range(int(num_envs))]
        first = self.envs[0]
        self._t = -1  # -1: not reset yet
        self._plans: EpisodePlans | None = None
        self._stepper: Stepper | None = None
        self._native = False  # whether the current episodes were built by the native kernel
        super().__init__(int(num_envs), first.observation_space, first.action_space)
        self.layout = first.layout
        self.schedule = first.schedule
        self._n_words = sum(episode_words(self.layout, self.schedule))
        self._revealed = revealed_mask(self.layout)
        self._actions: np.ndarray | None = None
        self._action_shape = (self.num_envs, self.layout.dim)
        # the episodes' random words, drawn into the same buffer every episode
        self._words = np.empty((self.num_envs, self._n_words), np.uint64)
        # the copies' generators as the kernel draws from them, rebuilt whenever one is replaced
        self._word_source: native.WordSource | None = None
        self.metadata = first.metadata
        if seed is not None:
            self.seed(seed)

    # ---------------------------------------------------------------------------------- episodes
    def _start_episodes(self, seeds: Sequence[int | None]) -> np.ndarray:
        """Draw and build new episodes for all copies; returns the first observations ``(n, D)``.

        Each copy draws its episode's random words from its own generator in one call (the only loop over
        copies, once per episode); Gaussians, task sequences, targets and observations are then computed
        for all copies at once.
        """
        words = self._words
        for env, seed in zip(self.envs, seeds):
            if seed is not None:
                env.seed_stream(seed)
        library = native.load()
        self._native = library is not None
        if library is not None:  # = each env's draw_words(), in one C call
            generators = [env.np_random for env in self.envs]
            source = getattr(self, "_word_source", None)  # (absent from envs pickled by earlier versions)
            if source is None or source.library is not library or not source.matches(generators):
                source = self._word_source = native.WordSource(library, generators)
            source(words)
        else:
            for i, env in enumerate(self.envs):
                words[i] = env.draw_words()
        pools = [env._pool for env in self.envs]
        self._plans = self._stepper = None  # the old episode's memory is freed unless a caller holds a view
        self._plans = build_episodes(self.layout, self.schedule, words, pools, library)
        self._stepper = make_stepper(self.layout, self._plans, self._revealed, library)
        self._t = 0
        if "task_id" in self.info_keys:
            self.reset_infos = [{"task_id": k} for k in self._plans.tasks[0].tolist()]
        else:
            self.reset_infos = [{} for _ in range(self.num_envs)]
        return observe(self.layout, self._plans, 0, None, self._revealed)

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state["_word_source"] = None  # the addresses of this object's generators, never a copy's
        return state

    def reset(self) -> VecEnvObs:
        """Reset every copy (copy ``i`` seeded with ``seeds[i]`` if :meth:`seed` was called); ``(n, D)``."""
        obs = self._start_episodes(self._seeds)
        self._reset_seeds()
        self._reset_options()
        return obs

    def step_async(self, actions: np.ndarray) -> None:
        self._actions = actions

    def step_wait(self) -> VecEnvStepReturn:
        """Score all predictions ``(n, d)`` at once and observe the next step (the episode's stepper:
        :func:`envs.regression.make_stepper`); autoreset at the end."""
        t = self._t
        if t < 0:
            raise RuntimeError("call reset() before step()")
        plans, actions = self._plans, self._actions
        if getattr(actions, "shape", None) != self._action_shape:
            actions = np.reshape(actions, self._action_shape)
        obs, rewards = self._stepper(t, actions)
        truncated = t + 1 >= self.layout.episode_length
        infos = self._infos(plans, t, truncated)
        self._t = t = t + 1
        if truncated:
            for i, info in enumerate(infos):
                info["terminal_observation"] = obs[i]
            obs = self._start_episodes([None] * self.num_envs)
        dones = np.ones(self.num_envs, bool) if truncated else np.zeros(self.num_envs, bool)
        return obs, rewards, dones, infos

    def _infos(self, plans: EpisodePlans, t: int, truncated: bool) -> list[dict[str, Any]]:
        """The ``n`` info dicts of step ``t`` (one comprehension: a third of a step's time)."""
        keys = self.info_keys
        if keys == INFO_KEYS:
            return [
                {"task_id": k, "switched": s, "target": yy, "TimeLimit.truncated": truncated}
                for k, s, yy in zip(plans.tasks[t].tolist(), plans.switched[t].tolist(), plans.ys[t])
            ]
        if keys == ("task_id", "switched"):
            return [
                {"task_id": k, "switched": s, "TimeLimit.truncated": truncated}
                for k, s in zip(plans.tasks[t].tolist(), plans.switched[t].tolist())
            ]
        if not keys:
            return [{"TimeLimit.truncated": truncated} for _ in range(self.num_envs)]
        columns = {
            "task_id": plans.tasks[t].tolist(),
            "switched": plans.switched[t].tolist(),
            "target": plans.ys[t],
        }
        return [
            {**dict(zip(keys, values)), "TimeLimit.truncated": truncated}
            for values in zip(*(columns[k] for k in keys), range(self.num_envs))
        ]

    def close(self) -> None:
        for env in self.envs:
            env.close()

    # ------------------------------------------------------------------------------ sub-env access
    def _target_envs(self, indices: VecEnvIndices) -> list[NonStationaryRegression]:
        """Sub-envs at ``indices``, with their views of the batch's current episode brought up to date."""
        idx = list(self._get_indices(indices))
        for i in idx:
            env = self.envs[i]
            if self._plans is not None:
                p = self._plans
                env._plan = EpisodePlans(*(None if a is None else a[:, i : i + 1] for a in p))
                env._t = self._t
        return [self.envs[i] for i in idx]

    def get_attr(self, attr_name: str, indices: VecEnvIndices = None) -> list[Any]:
        """Attribute ``attr_name`` of each copy (e.g. ``task_id``, ``task_pool``, ``phase``)."""
        return [getattr(env, attr_name) for env in self._target_envs(indices)]

    def set_attr(self, attr_name: str, value: Any, indices: VecEnvIndices = None) -> None:
        """Set an attribute on each copy; the static layout (dim, feedback, …) cannot change this way."""
        if attr_name in {"layout", "observation_space", "action_space"}:
            raise ValueError(
                f"set_attr: {attr_name!r} is shared by the whole batch; build a new RegressionVecEnv"
            )
        for env in self._target_envs(indices):
            setattr(env, attr_name, value)

    def env_method(
        self, method_name: str, *method_args, indices: VecEnvIndices = None, **method_kwargs
    ) -> list[Any]:
        """Call ``method_name`` on each copy (e.g. ``env_method("set_phase", 2)``); not ``reset``/``step``."""
        if method_name in {"reset", "step"}:
            raise ValueError(f"env_method({method_name!r}): call the VecEnv's own {method_name}() instead")
        return [
            getattr(env, method_name)(*method_args, **method_kwargs) for env in self._target_envs(indices)
        ]

    def env_is_wrapped(self, wrapper_class: type[gym.Wrapper], indices: VecEnvIndices = None) -> list[bool]:
        """The copies are bare environments: always ``False``."""
        return [False for _ in self._get_indices(indices)]


def make_vec_env(
    env_id: str,
    n_envs: int = 1,
    seed: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    monitor: bool = True,
    vec_env_cls: type[VecEnv] | None = None,
    info_keys: Sequence[str] = INFO_KEYS,
) -> VecEnv:
    """Vectorised environment for ``env_id``, batched natively when possible.

    For ids whose entry point is :class:`NonStationaryRegression` (all ``memagent/*Regression*`` ids) this
    returns a :class:`RegressionVecEnv` (wrapped in ``VecMonitor`` if ``monitor``); for any other id it
    falls back to SB3's ``make_vec_env`` (``DummyVecEnv`` by default, ``Monitor`` per env).

    :param env_id: a registered Gymnasium id.
    :param n_envs: number of copies.
    :param seed: copy ``i`` is seeded with ``seed + i``.
    :param env_kwargs: overrides of the registered keyword arguments.
    :param monitor: record episode returns/lengths (``info["episode"]``) for SB3 loggers (SB3's fallback
        always adds a ``Monitor``).
    :param vec_env_cls: for non-regression ids, the SB3 ``VecEnv`` class (default ``DummyVecEnv``).
    :param info_keys: for regression ids, the step ``info`` entries to return (see
        :class:`RegressionVecEnv`); other ids always return all of theirs.
    """
    spec = gym.spec(env_id)
    if spec.entry_point == _ENTRY_POINT or spec.entry_point is NonStationaryRegression:
        kwargs = {**spec.kwargs, **(env_kwargs or {})}
        venv: VecEnv = RegressionVecEnv(n_envs, kwargs, seed=seed, info_keys=info_keys)
        if seed is not None:
            venv.action_space.seed(seed)
        return VecMonitor(venv) if monitor else venv
    from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env

    return sb3_make_vec_env(
        env_id,
        n_envs=n_envs,
        seed=seed,
        env_kwargs=env_kwargs,
        vec_env_cls=vec_env_cls or DummyVecEnv,
    )
