"""Scripted reference agents that bound what a learner can score on the regression environments.

All four agents know the task functions exactly (a perfect function approximator); they differ only in
what they know about *which* task is active. Each predicts the posterior mean ``ŷ = Σ_k p_k f_k(x_t)``
(the MSE-optimal prediction under its belief ``p``):

* ``oracle`` — knows ``k_t``: the upper bound (0 for the built-in tasks, whose targets lie in [-1, 1]);
* ``blind`` — ignores the feedback: uniform belief over the pool (the best context-free predictor);
* ``last_feedback`` — a memoryless decoder: its belief comes from the feedback in the current observation
  only (uniform prior, Bayes rule; it is also handed ``x_{t-1}``, so this is an optimistic bound for
  memoryless policies). A fed-back *reward* cannot be decoded without remembering the action that
  earned it, so with reward feedback it equals ``blind``;
* ``memory`` — a Bayes filter over tasks that remembers past inputs, its own actions and all feedback
  (hidden-Markov forward recursion with switch probability ``1/period`` or ``hazard`` per step): what
  an agent with memory can reach.

Run ``python -m envs.reference`` for the table quoted in the README (mean reward per step = −MSE).
"""

from __future__ import annotations

import argparse
from typing import Any

import gymnasium as gym
import numpy as np

from envs.regression import RegressionLayout
from envs.schedules import SwitchSchedule
from envs.vector import RegressionVecEnv

__all__ = ["AGENTS", "evaluate_agent", "reference_table"]

AGENTS = ("oracle", "blind", "last_feedback", "memory")
_MIN_STD = 1e-3  # likelihood width for noiseless feedback (float32 rounding is ~1e-7)


def _switch_probability(schedule: SwitchSchedule) -> float:
    if schedule.kind == "period":
        return 1.0 / schedule.period
    if schedule.kind == "hazard":
        return schedule.hazard
    return 1e-3


def _log_likelihood(
    layout: RegressionLayout, obs: np.ndarray, prev_x: np.ndarray, prev_a: np.ndarray, task_ids: np.ndarray
) -> np.ndarray:
    """``log p(feedback in obs | k)`` for each copy and pool task, shape ``(B, K)`` (0 where no feedback)."""
    d = layout.dim
    present = obs[:, layout.flag_col] > 0.5
    prev_targets = np.stack([layout.tasks[k](prev_x) for k in task_ids], axis=1)  # (B, K, d)
    std = max(layout.feedback_noise, _MIN_STD)
    if layout.feedback == "target":
        fb = obs[:, None, d : 2 * d]
        ll = -0.5 * ((fb - prev_targets) ** 2).sum(-1) / std**2
    else:
        a = np.clip(prev_a, -layout.action_bound, layout.action_bound)[:, None]
        expected = -layout.reward_scale * ((a - prev_targets) ** 2).mean(-1)
        ll = -0.5 * (obs[:, None, d] - expected) ** 2 / std**2
    return np.where(present[:, None], ll, 0.0)


def _normalise(log_p: np.ndarray) -> np.ndarray:
    log_p = log_p - log_p.max(axis=1, keepdims=True)
    p = np.exp(log_p)
    return p / p.sum(axis=1, keepdims=True)


def evaluate_agent(
    agent: str,
    env_id: str,
    n_envs: int = 64,
    episodes: int = 2,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
) -> float:
    """Mean reward per step of a scripted agent on ``env_id`` (evaluation stream, ``n_envs`` copies).

    :param agent: one of :data:`AGENTS`.
    :raises ValueError: for an unknown agent or an env without feedback when a feedback agent is asked.
    """
    if agent not in AGENTS:
        raise ValueError(f"agent must be one of {AGENTS}, got {agent!r}")
    kwargs = {**gym.spec(env_id).kwargs, **(env_kwargs or {}), "eval_mode": True}
    venv = RegressionVecEnv(n_envs, kwargs, seed=seed)
    layout = venv.layout
    pool = venv.envs[0]._pool
    k = len(pool)
    rho = _switch_probability(venv.envs[0].schedule)
    obs = venv.reset()
    log_belief = np.zeros((n_envs, k))
    prev_x = np.zeros((n_envs, layout.dim), np.float32)
    prev_a = np.zeros((n_envs, layout.dim), np.float32)
    total, steps = 0.0, 0
    for _ in range(episodes * layout.episode_length):
        x = obs[:, : layout.dim]
        t = venv._t
        candidates = np.stack([layout.tasks[j](x) for j in pool], axis=1)  # (B, K, d)
        if agent == "oracle":
            current = venv._plans.tasks[t]
            belief = (pool[None, :] == current[:, None]).astype(np.float64)
        elif (
            agent == "blind"
            or layout.feedback == "none"
            or (agent == "last_feedback" and layout.feedback == "reward")
        ):
            belief = np.full((n_envs, k), 1.0 / k)
        else:
            ll = _log_likelihood(layout, obs, prev_x, prev_a, pool) if t > 0 else np.zeros((n_envs, k))
            if agent == "last_feedback":
                belief = _normalise(ll)
            else:
                if t == 0:
                    log_belief[:] = 0.0
                else:  # predict (switch to another task with prob rho), then correct with the feedback
                    p = _normalise(log_belief)
                    p = (1 - rho) * p + rho * (1 - p) / max(k - 1, 1)
                    log_belief = np.log(np.maximum(p, 1e-300)) + ll
                belief = _normalise(log_belief)
        action = np.einsum("bk,bkd->bd", belief, candidates).astype(np.float32)
        prev_x, prev_a = x.copy(), action
        obs, rewards, _, _ = venv.step(action)
        total += float(rewards.sum())
        steps += n_envs
    return total / steps


def reference_table(env_ids: list[str] | None = None, **kwargs: Any) -> str:
    """Markdown table: one row per id, one column per agent (mean reward per step)."""
    import envs

    env_ids = env_ids or [i for i in envs.REGRESSION_IDS if "Continual" not in i]
    lines = ["| id | " + " | ".join(AGENTS) + " |", "|---" * (len(AGENTS) + 1) + "|"]
    for env_id in env_ids:
        scores = [evaluate_agent(a, env_id, **kwargs) for a in AGENTS]
        lines.append(f"| `{env_id}` | " + " | ".join(f"{s:.4f}" for s in scores) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-envs", type=int, default=64)
    parser.add_argument("--episodes", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(reference_table(n_envs=args.n_envs, episodes=args.episodes, seed=args.seed))


if __name__ == "__main__":
    main()
