"""PPO with a DNC memory core: throughput vs RecurrentPPO-LSTM, CartPole, and a memory-requiring regression.

Three measurements, each printed as a Markdown table and written to ``benchmarks/results/ppo_dnc.md``:

1. **Throughput** -- env steps/s of ``learn()`` (rollouts + PPO updates) for ``RecurrentDncPPO("DncPolicy")``
   and ``sb3_contrib.RecurrentPPO("MlpLstmPolicy")``, both at their default configuration, 8 envs, on
   CartPole-v1 and on ``memagent/NonStationaryRegressionReward-v0``; PPO-MLP for reference. The
   algorithms are timed in interleaved rounds in one process and each cell is the best round (least
   disturbed by other load); the claim is the ratio DNC / LSTM (target >= 1/3).
2. **CartPole-v1** -- PPO-DNC (default DNC core, hyper-parameters below) trained for a budget of env
   steps, then 20 deterministic evaluation episodes (target: mean return >= 475).
3. **Regression with reward feedback** -- ``memagent/NonStationaryRegressionReward-v0`` (the task switches
   every 50 steps and only the previous reward is fed back, so the task must be inferred from memory):
   PPO-MLP, RecurrentPPO-LSTM and PPO-DNC with the same PPO hyper-parameters and the same number of env
   steps, several seeds, evaluated on the env's separate evaluation stream (``eval_mode=True``). A
   zero-prediction policy is given for scale.

Run:  .venv/bin/python benchmarks/ppo_dnc.py [--quick] [--seeds 3] [--cartpole-steps N] [--regression-steps N]
"""

from __future__ import annotations

import argparse
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch as th  # noqa: E402
from sb3_contrib import RecurrentPPO  # noqa: E402
from stable_baselines3 import PPO  # noqa: E402
from stable_baselines3.common.base_class import BaseAlgorithm  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env as sb3_make_vec_env  # noqa: E402
from stable_baselines3.common.evaluation import evaluate_policy  # noqa: E402
from stable_baselines3.common.utils import LinearSchedule  # noqa: E402
from stable_baselines3.common.vec_env import VecEnv  # noqa: E402

import envs  # noqa: E402, F401  (registers the memagent/* ids)
from envs.vector import make_vec_env as memagent_make_vec_env  # noqa: E402
from memagent.algos.recurrent_ppo import RecurrentDncPPO  # noqa: E402
from memagent.policies import state_nbytes_per_sample  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "ppo_dnc.md"
REGRESSION_ID = "memagent/NonStationaryRegressionReward-v0"
N_ENVS = 8

#: PPO-DNC on CartPole: rl-zoo's PPO CartPole settings (gamma 0.98, GAE 0.8, linear schedules from 1e-3 and
#: 0.2) with longer rollouts and fewer, larger minibatches (the DNC's cost is per sequential pass, nearly
#: independent of the batch size): 128 steps x 8 envs, BPTT over 16 steps, 2 minibatches of 32 sequences.
CARTPOLE_DNC = dict(
    n_steps=128,
    batch_size=512,
    sequence_length=16,
    n_epochs=10,
    gamma=0.98,
    gae_lambda=0.8,
    ent_coef=0.0,
    learning_rate=LinearSchedule(1e-3, 0.0, 1.0),
    clip_range=LinearSchedule(0.2, 0.0, 1.0),
)
#: PPO hyper-parameters shared by the three agents on the regression env (rollouts of 128 steps x 8 envs).
REGRESSION_PPO = dict(n_steps=128, batch_size=256, n_epochs=5, learning_rate=3e-4, gamma=0.9, gae_lambda=0.9)


def make_env(env_id: str, n_envs: int, seed: int, eval_mode: bool = False) -> VecEnv:
    if env_id.startswith("memagent/"):
        return memagent_make_vec_env(env_id, n_envs=n_envs, seed=seed, env_kwargs=dict(eval_mode=eval_mode))
    return sb3_make_vec_env(env_id, n_envs=n_envs, seed=seed)


# ------------------------------------------------------------------------------------------ throughput
def throughput(env_id: str, steps: int, rounds: int) -> dict[str, float]:
    """Best-of-``rounds`` env steps/s of ``learn(steps)`` for each agent at its default configuration."""
    builders: dict[str, Callable[[VecEnv], BaseAlgorithm]] = {
        "RecurrentPPO-LSTM": lambda env: RecurrentPPO("MlpLstmPolicy", env, seed=0),
        "PPO-DNC": lambda env: RecurrentDncPPO("DncPolicy", env, seed=0),
        "PPO-MLP": lambda env: PPO("MlpPolicy", env, seed=0),
    }
    models = {name: build(make_env(env_id, N_ENVS, seed=0)) for name, build in builders.items()}
    for model in models.values():  # warm-up: one rollout and update each
        model.learn(model.n_steps * N_ENVS)
    best = dict.fromkeys(models, 0.0)
    for _ in range(rounds):
        for name, model in models.items():
            start = time.perf_counter()
            model.learn(steps, reset_num_timesteps=False)
            best[name] = max(best[name], steps / (time.perf_counter() - start))
    return best


# ------------------------------------------------------------------------------------------- learning
def evaluate(model: BaseAlgorithm | None, env_id: str, seed: int, episodes: int) -> float:
    """Mean return over ``episodes`` deterministic episodes (``model=None``: the all-zeros action)."""
    env = make_env(
        env_id, n_envs=min(episodes, N_ENVS), seed=10_000 + seed, eval_mode=env_id.startswith("memagent/")
    )
    if model is None:

        class Zero:
            def predict(self, obs, state=None, episode_start=None, deterministic=True):
                return np.zeros((len(obs), *env.action_space.shape), np.float32), None

        mean, _ = evaluate_policy(Zero(), env, n_eval_episodes=episodes)  # type: ignore[arg-type]
    else:
        mean, _ = evaluate_policy(model, env, n_eval_episodes=episodes, deterministic=True)
    return float(mean)


def cartpole(steps: int, seed: int = 0) -> tuple[float, float]:
    """Train PPO-DNC on CartPole-v1 for ``steps``; returns (mean evaluation return, wall seconds)."""
    start = time.perf_counter()
    model = RecurrentDncPPO("DncPolicy", make_env("CartPole-v1", N_ENVS, seed), seed=seed, **CARTPOLE_DNC)
    model.learn(steps)
    return evaluate(model, "CartPole-v1", seed, episodes=20), time.perf_counter() - start


def regression(steps: int, seeds: list[int], episodes: int) -> dict[str, list[float]]:
    """Mean evaluation return per seed of each agent on the reward-feedback regression env."""
    builders: dict[str, Callable[[VecEnv, int], BaseAlgorithm]] = {
        "PPO-MLP": lambda env, s: PPO("MlpPolicy", env, seed=s, **REGRESSION_PPO),
        "RecurrentPPO-LSTM": lambda env, s: RecurrentPPO("MlpLstmPolicy", env, seed=s, **REGRESSION_PPO),
        "PPO-DNC": lambda env, s: RecurrentDncPPO(
            "DncPolicy", env, seed=s, sequence_length=32, **REGRESSION_PPO
        ),
    }
    scores: dict[str, list[float]] = {"zero prediction": [], **{name: [] for name in builders}}
    for seed in seeds:
        scores["zero prediction"].append(evaluate(None, REGRESSION_ID, seed, episodes))
        for name, build in builders.items():
            model = build(make_env(REGRESSION_ID, N_ENVS, seed), seed).learn(steps)
            scores[name].append(evaluate(model, REGRESSION_ID, seed, episodes))
    return scores


# -------------------------------------------------------------------------------------------- report
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="small budgets (a few minutes on 2 CPU cores)")
    parser.add_argument("--seeds", type=int, default=None, help="seeds of the regression comparison (>= 3)")
    parser.add_argument("--cartpole-steps", type=int, default=None)
    parser.add_argument("--regression-steps", type=int, default=None)
    parser.add_argument("--tp-steps", type=int, default=None, help="env steps per timed round")
    parser.add_argument("--tp-rounds", type=int, default=None, help="interleaved timed rounds")
    parser.add_argument("--tp-envs", nargs="*", default=["CartPole-v1", REGRESSION_ID])
    parser.add_argument("--skip", nargs="*", default=[], choices=["throughput", "cartpole", "regression"])
    parser.add_argument(
        "--out", type=Path, default=None, help=f"results file (default {RESULTS}; --quick writes none)"
    )
    args = parser.parse_args()
    th.set_num_threads(1)
    quick = args.quick
    seeds = list(range(args.seeds if args.seeds is not None else (1 if quick else 3)))
    cartpole_steps = args.cartpole_steps or (10_240 if quick else 286_720)
    regression_steps = args.regression_steps or (4_096 if quick else 30_720)
    tp_steps = args.tp_steps or (1024 if quick else 2048)
    tp_rounds = args.tp_rounds or 2

    lines = [
        "# PPO with a DNC memory core",
        "",
        f"Command: `.venv/bin/python benchmarks/ppo_dnc.py{' --quick' if quick else ''}`"
        + (f" (seeds {len(seeds)}, CartPole {cartpole_steps} steps, regression {regression_steps} steps)"),
        f"Machine: {platform.processor() or platform.machine()}, torch {th.__version__}, 1 torch thread, "
        f"{os.cpu_count()} cores shared; {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC",
        "",
    ]

    policy = RecurrentDncPPO("DncPolicy", make_env("CartPole-v1", 1, 0)).policy
    state_bytes = state_nbytes_per_sample(policy.initial_state(1))
    lines += [
        "## Memory cost of the default DNC core (N=16, W=16, R=2, controller 64)",
        "",
        f"- state per environment: {state_bytes} bytes for the actor's and the critic's DNC (each: memory "
        "16x16, link 16x16, usage, precedence, read/write weights, read words, controller h and c; float32)",
        f"- rollout buffer (n_steps=128, sequence_length=32): {128 // 32} stored states per env = "
        f"{128 // 32 * state_bytes} bytes/env (storing it at every step, as sb3-contrib does for the LSTM, "
        f"would take {128 * state_bytes})",
        "",
    ]

    if "throughput" not in args.skip:
        lines += [
            "## Throughput (env steps/s of learn(), default configurations, 8 envs, best of "
            f"{tp_rounds} interleaved rounds of {tp_steps} steps)",
            "",
            "| env | RecurrentPPO-LSTM | PPO-DNC | PPO-DNC / LSTM | PPO-MLP |",
            "|---|---:|---:|---:|---:|",
        ]
        for env_id in args.tp_envs:
            best = throughput(env_id, tp_steps, tp_rounds)
            ratio = best["PPO-DNC"] / best["RecurrentPPO-LSTM"]
            lines.append(
                f"| {env_id} | {best['RecurrentPPO-LSTM']:.0f} | {best['PPO-DNC']:.0f} | {ratio:.2f} "
                f"| {best['PPO-MLP']:.0f} |"
            )
            print(lines[-1], flush=True)
        lines.append("")

    if "cartpole" not in args.skip:
        score, seconds = cartpole(cartpole_steps)
        lines += [
            "## CartPole-v1, PPO-DNC (target: mean return >= 475)",
            "",
            "| env steps | mean return (20 episodes, deterministic) | wall time |",
            "|---:|---:|---:|",
            f"| {cartpole_steps} | {score:.1f} | {seconds / 60:.1f} min |",
            "",
        ]
        print(lines[-2], flush=True)

    if "regression" not in args.skip:
        scores = regression(regression_steps, seeds, episodes=8)
        lines += [
            f"## {REGRESSION_ID}: mean evaluation return after {regression_steps} env steps",
            "",
            "Return of a 200-step episode (0 is perfect); evaluation stream, 8 episodes per seed; "
            f"seeds {seeds}; same PPO hyper-parameters {_fmt(REGRESSION_PPO)}.",
            "",
            "| agent | mean +- std over seeds | per seed |",
            "|---|---:|---|",
        ]
        for name, values in scores.items():
            per_seed = ", ".join(f"{v:.1f}" for v in values)
            lines.append(f"| {name} | {np.mean(values):.1f} +- {np.std(values):.1f} | {per_seed} |")
        lines.append("")

    text = "\n".join(lines)
    print(text)
    out = args.out if args.out is not None else (None if quick else RESULTS)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")


def _fmt(kwargs: dict[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in kwargs.items())


if __name__ == "__main__":
    main()
