"""Environment construction for ``train.py``: ids, ``--env-kwargs``, wrappers, VecEnv stack."""

from __future__ import annotations

import importlib
import logging
import os
import time
from collections.abc import Callable
from typing import Any

import gymnasium as gym
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.vec_env import (
    DummyVecEnv,
    SubprocVecEnv,
    VecEnv,
    VecFrameStack,
    VecMonitor,
    VecNormalize,
)

from memagent.training.config import UsageError

logger = logging.getLogger(__name__)

#: Wrappers that ``--wrapper NAME`` and the ``env_wrapper`` config key may name.
WRAPPERS: dict[str, str] = {
    "nonstationary": "envs.wrappers:NonStationary",
    "feedback": "envs.wrappers:FeedbackWrapper",
    "history": "envs.wrappers:HistoryWrapper",
    "time_limit": "gymnasium.wrappers:TimeLimit",
    "flatten_observation": "gymnasium.wrappers:FlattenObservation",
}


def import_gym_packages(packages: list[str]) -> None:
    """Import our ``envs`` package (registers ``memagent/...`` ids) and every ``--gym-packages`` entry."""
    try:
        importlib.import_module("envs")
    except ImportError as exc:  # the env package is optional for non-memagent ids
        logger.debug("envs package not importable: %s", exc)
    for name in packages:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise UsageError("--gym-packages", f"cannot import {name!r} ({exc})") from None


def check_env_id(env_id: str) -> None:
    """Raise :class:`UsageError` for ``--env`` when the id is not registered."""
    try:
        gym.spec(env_id)
    except gym.error.Error as exc:
        raise UsageError("--env", f"{env_id!r} is not a registered Gymnasium id ({exc})") from None


def wrapper_class(name: str, flag: str = "--wrapper") -> type:
    """Import an allow-listed wrapper class."""
    if name not in WRAPPERS:
        raise UsageError(flag, f"unknown wrapper {name!r}; choose from {', '.join(WRAPPERS)}")
    module, attr = WRAPPERS[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(flag, f"wrapper {name!r} needs {module}.{attr}, not available ({exc})") from None


def normalize_wrappers(spec: Any, flag: str) -> list[dict[str, Any]]:
    """Accept ``"name"``, ``{"name": kwargs}``, ``{"name": n, "kwargs": {...}}`` or a list of them."""
    if spec is None:
        return []
    items = spec if isinstance(spec, list) else [spec]
    out = []
    for item in items:
        if isinstance(item, str):
            out.append({"name": item, "kwargs": {}})
        elif isinstance(item, dict) and set(item) <= {"name", "kwargs"} and "name" in item:
            out.append({"name": item["name"], "kwargs": dict(item.get("kwargs") or {})})
        elif isinstance(item, dict) and len(item) == 1:
            ((name, kwargs),) = item.items()
            out.append({"name": name, "kwargs": dict(kwargs or {})})
        else:
            raise UsageError(flag, f"bad wrapper entry {item!r}; use a name or {{name: {{kwargs}}}}")
    for w in out:
        wrapper_class(w["name"], flag)
    return out


REGRESSION_ENTRY_POINT = "envs.regression:NonStationaryRegression"


def is_regression_env(env_id: str) -> bool:
    """Whether ``env_id`` is one of the ``envs`` regression ids (batched VecEnv, ``eval_mode`` available)."""
    entry = gym.spec(env_id).entry_point
    return entry == REGRESSION_ENTRY_POINT or getattr(entry, "__name__", "") == "NonStationaryRegression"


def eval_env_kwargs(env_id: str, env_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments of evaluation envs: the regression envs draw from their evaluation stream."""
    if is_regression_env(env_id) and "eval_mode" not in env_kwargs:
        return {**env_kwargs, "eval_mode": True}
    return env_kwargs


def make_env_fn(
    env_id: str,
    env_kwargs: dict[str, Any],
    wrappers: list[dict[str, Any]],
    seed: int,
    rank: int,
    monitor_dir: str | None,
    append_monitor: bool = False,
) -> Callable[[], gym.Env]:
    """A thunk building one env: ``gym.make(env_id, **env_kwargs)``, wrappers in order, Monitor."""

    def thunk() -> gym.Env:
        env = gym.make(env_id, **env_kwargs)
        for w in wrappers:
            env = wrapper_class(w["name"])(env, **w["kwargs"])
        filename = os.path.join(monitor_dir, str(rank)) if monitor_dir else None
        env = Monitor(env, filename=filename, override_existing=not append_monitor)
        env.action_space.seed(seed + rank)
        return env

    return thunk


def probe_env(env_id: str, env_kwargs: dict[str, Any], wrappers: list[dict[str, Any]]) -> gym.Env:
    """Build one env to validate ``--env-kwargs`` and wrappers; errors name the flag."""
    try:
        env = gym.make(env_id, **env_kwargs)
    except TypeError as exc:
        raise UsageError("--env-kwargs", f"{env_id!r} rejected {env_kwargs!r} ({exc})") from None
    except (ValueError, gym.error.Error) as exc:
        raise UsageError("--env-kwargs", f"{env_id!r} with {env_kwargs!r}: {exc}") from None
    for w in wrappers:
        try:
            env = wrapper_class(w["name"])(env, **w["kwargs"])
        except (TypeError, ValueError) as exc:
            raise UsageError("--wrapper", f"{w['name']} with {w['kwargs']!r}: {exc}") from None
    return env


def make_vec_env(
    env_id: str,
    n_envs: int,
    seed: int,
    env_kwargs: dict[str, Any],
    wrappers: list[dict[str, Any]],
    monitor_dir: str | None,
    vec_env: str = "dummy",
    frame_stack: int | None = None,
    normalize: bool = False,
    normalize_kwargs: dict[str, Any] | None = None,
    training: bool = True,
    append_monitor: bool = False,
    vecnormalize_path: str | None = None,
) -> VecEnv:
    """The VecEnv stack of a run: N monitored envs, optional VecNormalize, optional VecFrameStack.

    ``seed + rank`` seeds env ``rank``; evaluation envs use a different ``seed`` (see ``run.py``).
    With ``vecnormalize_path`` (an existing file) the normalisation statistics are loaded from it.
    """
    venv: VecEnv
    if vec_env == "batched":
        if wrappers or not is_regression_env(env_id):
            raise UsageError(
                "--vec-env",
                f"'batched' needs a memagent regression id without wrappers, got "
                f"{env_id!r} with wrappers {[w['name'] for w in wrappers]}",
            )
        from envs.vector import RegressionVecEnv

        venv = RegressionVecEnv(n_envs, {**gym.spec(env_id).kwargs, **env_kwargs}, seed=seed)
        venv.action_space.seed(seed)
        filename = os.path.join(monitor_dir, "0") if monitor_dir else None
        if filename and append_monitor and os.path.isfile(filename + ".monitor.csv"):
            os.replace(filename + ".monitor.csv", filename + f".{int(time.time())}.monitor.csv")
        venv = VecMonitor(venv, filename=filename)
    else:
        fns = [
            make_env_fn(env_id, env_kwargs, wrappers, seed, i, monitor_dir, append_monitor)
            for i in range(n_envs)
        ]
        venv = SubprocVecEnv(fns) if vec_env == "subproc" and n_envs > 1 else DummyVecEnv(fns)
        venv.seed(seed)
    if normalize and vecnormalize_path and os.path.isfile(vecnormalize_path):
        venv = VecNormalize.load(vecnormalize_path, venv)
        if not training:
            venv.training, venv.norm_reward = False, False
    elif normalize:
        kwargs = dict(normalize_kwargs or {})
        if not training:
            kwargs.update(training=False, norm_reward=False)
        venv = VecNormalize(venv, **kwargs)
    if frame_stack:
        venv = VecFrameStack(venv, n_stack=frame_stack)
    return venv
