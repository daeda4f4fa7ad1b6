"""Roll a trained agent out step by step and record per-step losses, rewards, tasks (and DNC state)."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.vec_env import VecEnv

from memagent.bench.metrics import step_record


def collect_episodes(
    model: Any,
    venv: VecEnv,
    n_episodes: int,
    deterministic: bool = True,
    record_state: bool = False,
    max_steps: int = 100_000,
) -> list[dict[str, Any]]:
    """Run ``n_episodes`` on env 0 of ``venv`` (use a VecEnv with one env).

    Recurrent policies get their state and ``episode_start`` back at every step, as in
    SB3's ``evaluate_policy``.

    :returns: one dict per episode: ``loss`` ``(T,)``, ``reward`` ``(T,)``, ``task`` ``(T,)`` and,
        with ``record_state``, ``states``: the policy state returned after each step (length T).
    """
    episodes: list[dict[str, Any]] = []
    obs = venv.reset()
    state = None
    episode_start = np.ones((venv.num_envs,), dtype=bool)
    loss, reward, task, states = [], [], [], []
    steps = 0
    while len(episodes) < n_episodes and steps < max_steps:
        action, state = model.predict(
            obs, state=state, episode_start=episode_start, deterministic=deterministic
        )
        if record_state:
            states.append(state)
        obs, rewards, dones, infos = venv.step(action)
        step_loss, step_task = step_record(infos[0], float(rewards[0]))
        loss.append(step_loss)
        reward.append(float(rewards[0]))
        task.append(step_task)
        episode_start = dones
        steps += 1
        if dones[0]:
            ep = {"loss": np.asarray(loss), "reward": np.asarray(reward), "task": np.asarray(task)}
            if record_state:
                ep["states"] = states
            episodes.append(ep)
            loss, reward, task, states = [], [], [], []
    return episodes
