"""Non-stationary Gymnasium environments and wrappers.

Importing ``envs`` registers the ids below with Gymnasium (``gym.make(id, **overrides)``):

=================================================  ===========================================================
id                                                 variant
=================================================  ===========================================================
``memagent/NonStationaryRegression-v0``            feedback = previous target ``y_{t-1}`` (MANN-style)
``memagent/NonStationaryRegressionReward-v0``      feedback = previous reward only (needs memory)
``memagent/NonStationaryRegressionSparse-v0``      previous target revealed every 10 steps (needs memory)
``memagent/NonStationaryRegressionNoisy-v0``       previous target with N(0, 2²) noise (needs memory)
``memagent/NonStationaryRegressionHazard-v0``      like v0, switches at random times (hazard 0.02)
``memagent/NonStationaryRegressionOracle-v0``      like v0 plus the one-hot task id (upper bound)
``memagent/ContinualRegression-v0``                one task per curriculum phase (tutorial tasks 0..3)
``memagent/NonStationaryCartPole-v0``              CartPole-v1; gravity / pole length / pole mass switch
                                                   every 100 steps (``NonStationary`` wrapper)
``memagent/NonStationaryPendulum-v0``              Pendulum-v1; g, m, l and the torque's sign switch every
                                                   50 steps
=================================================  ===========================================================

``REGRESSION_IDS`` maps each id to its constructor keyword arguments; :func:`envs.vector.make_vec_env`
builds the natively batched :class:`~envs.vector.RegressionVecEnv` for them.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from envs.regression import NonStationaryRegression
from envs.tasks import Task, get_task, list_tasks, register_task, tutorial_task

__all__ = [
    "CLASSIC_IDS",
    "REGRESSION_IDS",
    "NonStationaryRegression",
    "Task",
    "get_task",
    "list_tasks",
    "register_task",
    "tutorial_task",
]

_TUTORIAL4 = ("sin_mean", "half_cos_mean", "tanh_shift_2", "tanh_shift_3")
_THREE = ("sin_mean", "half_cos_mean", "tanh_shift_2")

#: registered id -> keyword arguments of :class:`NonStationaryRegression`
REGRESSION_IDS: dict[str, dict[str, Any]] = {
    "memagent/NonStationaryRegression-v0": {"tasks": _TUTORIAL4, "feedback": "target"},
    "memagent/NonStationaryRegressionReward-v0": {"tasks": _THREE, "feedback": "reward"},
    "memagent/NonStationaryRegressionSparse-v0": {"tasks": _THREE, "feedback": "target", "reveal_every": 10},
    "memagent/NonStationaryRegressionNoisy-v0": {
        "tasks": _THREE,
        "feedback": "target",
        "feedback_noise": 2.0,
    },
    "memagent/NonStationaryRegressionHazard-v0": {
        "tasks": _TUTORIAL4,
        "feedback": "target",
        "schedule": "hazard",
        "hazard": 0.02,
    },
    "memagent/NonStationaryRegressionOracle-v0": {"tasks": _TUTORIAL4, "feedback": "target", "oracle": True},
    "memagent/ContinualRegression-v0": {
        "tasks": _TUTORIAL4,
        "feedback": "target",
        "schedule": "none",
        "phases": [[name] for name in _TUTORIAL4],
    },
}


#: registered id -> keyword arguments of :func:`envs.wrappers.make_nonstationary`
CLASSIC_IDS: dict[str, dict[str, Any]] = {
    "memagent/NonStationaryCartPole-v0": {
        "base_id": "CartPole-v1",
        "tasks": [{}, {"gravity": 19.6}, {"length": 1.0}, {"masspole": 0.5, "force_mag": 15.0}],
        "period": 100,
    },
    "memagent/NonStationaryPendulum-v0": {
        "base_id": "Pendulum-v1",
        "tasks": [{}, {"g": 15.0}, {"m": 1.5, "l": 0.7}, {"action_negate": True}],
        "period": 50,
    },
}


def _register() -> None:
    for env_id, kwargs in REGRESSION_IDS.items():
        if env_id not in gym.registry:
            gym.register(
                id=env_id, entry_point="envs.regression:NonStationaryRegression", kwargs=dict(kwargs)
            )
    for env_id, kwargs in CLASSIC_IDS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point="envs.wrappers:make_nonstationary", kwargs=dict(kwargs))


_register()
