"""Scripted reference agents: the memory variants separate memoryless from memory agents."""

import pytest

from envs.reference import evaluate_agent


def scores(env_id, **kw):
    kw = {"n_envs": 8, "episodes": 1, "seed": 1, "env_kwargs": {"episode_length": 100, **kw}}
    return {a: evaluate_agent(a, env_id, **kw) for a in ("oracle", "blind", "last_feedback", "memory")}


def test_target_feedback_is_solvable_without_memory():
    s = scores("memagent/NonStationaryRegression-v0", period=25)
    assert s["oracle"] == pytest.approx(0.0, abs=1e-6)
    assert s["blind"] < -0.1 and s["last_feedback"] > -0.02 and s["memory"] > -0.02


def test_reward_feedback_needs_memory_and_is_solvable_with_it():
    s = scores("memagent/NonStationaryRegressionReward-v0", period=25)
    assert s["last_feedback"] == s["blind"] < -0.1
    assert s["memory"] > -0.02  # one step after each switch identifies the new task


def test_sparse_and_noisy_feedback_reward_memory():
    sparse = scores("memagent/NonStationaryRegressionSparse-v0", period=25)
    assert sparse["memory"] > sparse["last_feedback"] + 0.03
    noisy = scores("memagent/NonStationaryRegressionNoisy-v0", period=25)
    assert noisy["memory"] > noisy["last_feedback"] + 0.01 and noisy["last_feedback"] > noisy["blind"]


def test_unknown_agent_raises():
    with pytest.raises(ValueError, match="agent must be one of"):
        evaluate_agent("psychic", "memagent/NonStationaryRegression-v0")
