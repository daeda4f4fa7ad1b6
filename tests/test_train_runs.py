"""Tiny training runs write complete run folders; interrupts save checkpoints that --resume continues."""

import json
import os
import signal

import numpy as np
import pytest
import yaml
from stable_baselines3.common.callbacks import BaseCallback

from memagent.training import TrainConfig
from memagent.training.algos import ALGOS
from memagent.training.run import train

REG = "memagent/NonStationaryRegression-v0"
TINY_ENV = {"dim": 2, "episode_length": 32, "period": 8}
SMALL = {
    "ppo": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
    "ppo_lstm": {
        "n_steps": 32,
        "batch_size": 32,
        "n_epochs": 1,
        "policy_kwargs": {"lstm_hidden_size": 8, "net_arch": [16]},
    },
    "ppo_dnc": {"n_steps": 32, "batch_size": 32, "n_epochs": 1},
    "sac": {"learning_starts": 32, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}},
    "sac_per": {"learning_starts": 32, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}},
    "td3_per": {"learning_starts": 32, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}},
    "ppo_dnc_window": {"n_steps": 32, "batch_size": 32, "n_epochs": 1, "history": 4},
    "dqn": {"learning_starts": 32, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}},
    "dqn_per": {"learning_starts": 32, "batch_size": 16, "policy_kwargs": {"net_arch": [16]}},
}


def tiny(tmp_path, algo, env=REG, n=64, **kw):
    env_kwargs = TINY_ENV if env == REG else {}
    return TrainConfig(
        algo=algo,
        env=env,
        n_timesteps=n,
        n_envs=1,
        env_kwargs=env_kwargs,
        hyperparams=SMALL[algo],
        eval_freq=32,
        eval_episodes=1,
        switch_episodes=2,
        log_folder=str(tmp_path),
        device="cpu",
        command=f"python train.py --algo {algo}",
        **kw,
    )


def _assert_complete(run_dir, env_name, switches=True):
    names = {p.name for p in run_dir.iterdir()}
    for f in (
        "command.txt",
        "args.yml",
        "config.yml",
        f"{env_name}.zip",
        "best_model.zip",
        "evaluations.npz",
        "0.monitor.csv",
        "run.json",
    ):
        assert f in names, (f, sorted(names))
    ev = np.load(run_dir / "evaluations.npz")
    assert len(ev["timesteps"]) >= 1 and ev["results"].shape[0] == len(ev["timesteps"])
    summary = json.loads((run_dir / "run.json").read_text())
    assert summary["steps_per_second"] > 0 and np.isfinite(summary["final_return"])
    assert (run_dir / "figures" / "learning_curve.png").stat().st_size > 0
    if switches:
        sw = json.loads((run_dir / "switch_metrics.json").read_text())
        assert sw["n_switches"] > 0 and sw["recovery_time"] is not None
        assert (run_dir / "figures" / "switch_aligned.png").stat().st_size > 0
    return summary


@pytest.mark.parametrize(
    "algo", ["ppo", "ppo_lstm", "sac", "sac_per", "td3_per", "ppo_dnc", "ppo_dnc_window"]
)
def test_tiny_run_writes_complete_folder(tmp_path, algo):
    if not ALGOS[algo].available():
        pytest.skip(f"{algo} not available in this checkout")
    result = train(tiny(tmp_path, algo))
    assert not result.interrupted and result.num_timesteps >= 64
    assert result.run_dir == tmp_path / algo / "memagent-NonStationaryRegression-v0_1"
    summary = _assert_complete(result.run_dir, "memagent-NonStationaryRegression-v0")
    assert summary["switch"]["n_switches"] >= 2
    config = yaml.safe_load((result.run_dir / "config.yml").read_text())
    assert config["n_timesteps"] == 64 and config["policy"] == ALGOS[algo].policy
    if algo == "ppo_dnc":
        assert (result.run_dir / "figures" / "dnc_memory.png").stat().st_size > 0


@pytest.mark.parametrize("algo", ["dqn", "dqn_per"])
def test_tiny_discrete_run_with_frame_stack(tmp_path, algo):
    if not ALGOS[algo].available():
        pytest.skip(f"{algo} not available in this checkout")
    result = train(tiny(tmp_path, algo, env="CartPole-v1", frame_stack=2))
    _assert_complete(result.run_dir, "CartPole-v1", switches=False)
    assert yaml.safe_load((result.run_dir / "config.yml").read_text())["frame_stack"] == 2


class Interrupt(BaseCallback):
    """Raises KeyboardInterrupt (or sends SIGTERM to this process) after ``at`` steps."""

    def __init__(self, at, sigterm=False):
        super().__init__()
        self.at, self.sigterm = at, sigterm

    def _on_step(self):
        if self.num_timesteps >= self.at:
            if self.sigterm:
                os.kill(os.getpid(), signal.SIGTERM)
            raise KeyboardInterrupt
        return True


def test_interrupt_saves_checkpoint_and_resume_keeps_replay_buffer(tmp_path):
    cfg = tiny(tmp_path, "sac", n=192)
    first = train(cfg, callbacks=[Interrupt(100)])
    assert first.interrupted and first.num_timesteps == 100
    ck = first.run_dir / "checkpoint"
    assert {"model.zip", "replay_buffer.pkl", "state.json"} <= {p.name for p in ck.iterdir()}
    assert json.loads((ck / "state.json").read_text())["num_timesteps"] == 100

    from stable_baselines3 import SAC

    seen = {}

    class Spy(BaseCallback):
        def _on_training_start(self):
            seen["buffer"] = self.model.replay_buffer.size()
            seen["steps"] = self.model.num_timesteps

        def _on_step(self):
            return True

    resumed = train(TrainConfig(algo="sac", resume=str(first.run_dir), device="cpu"), callbacks=[Spy()])
    assert not resumed.interrupted and resumed.run_dir == first.run_dir
    # Buffer and step count restored, not restarted (the transition of the interrupted step is lost).
    assert seen["steps"] == 100 and seen["buffer"] >= 99
    assert resumed.num_timesteps == 192
    assert not ck.exists()
    ev = np.load(first.run_dir / "evaluations.npz")
    assert list(ev["timesteps"]) == [32, 64, 96, 128, 160, 192]  # evaluations before the interrupt are kept
    assert SAC.load(first.run_dir / "memagent-NonStationaryRegression-v0.zip").num_timesteps == 192
    assert "resumed" in (first.run_dir / "command.txt").read_text()


def test_sigterm_saves_checkpoint_and_latest_resume(tmp_path):
    cfg = tiny(tmp_path, "ppo", n=192, normalize=True)
    first = train(cfg, callbacks=[Interrupt(64, sigterm=True)])
    assert first.interrupted and (first.run_dir / "checkpoint" / "model.zip").is_file()
    assert (first.run_dir / "checkpoint" / "vecnormalize.pkl").is_file()
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL  # handler restored
    resumed = train(TrainConfig(algo="ppo", env=REG, resume="latest", log_folder=str(tmp_path), device="cpu"))
    assert resumed.run_dir == first.run_dir and resumed.num_timesteps == 192
    from stable_baselines3.common.vec_env import VecNormalize

    stats = VecNormalize.load(str(resumed.run_dir / "vecnormalize.pkl"), resumed_env(first.run_dir))
    assert stats.obs_rms.count > 192  # statistics carried over the interrupt (64 + 128 more updates)


def resumed_env(run_dir):
    import gymnasium as gym
    from stable_baselines3.common.vec_env import DummyVecEnv

    return DummyVecEnv([lambda: gym.make(REG, **TINY_ENV)])


def test_same_seed_same_result(tmp_path):
    a = train(tiny(tmp_path / "a", "ppo", n=32))
    b = train(tiny(tmp_path / "b", "ppo", n=32))
    assert a.summary["eval_returns"] == b.summary["eval_returns"]
    assert a.summary["switch"]["mean_loss"] == b.summary["switch"]["mean_loss"]


def test_main_job_trains_both_agents_and_summarizes(tmp_path, capsys):
    from memagent.training.main_job import run_main_job

    status = run_main_job(
        log_folder=str(tmp_path),
        n_timesteps=64,
        algos=("ppo_lstm", "ppo"),
        hyperparams={"ppo_lstm": {**SMALL["ppo_lstm"], "n_envs": 1}, "ppo": {**SMALL["ppo"], "n_envs": 1}},
        env_kwargs={"episode_length": 32, "period": 8},
        eval_episodes=1,
        switch_episodes=2,
    )
    assert status == 0
    out = capsys.readouterr().out
    assert "| ppo_lstm |" in out and "| ppo |" in out and "after a task switch" in out and "Figures:" in out
    assert "Reference" in out
    summary = tmp_path / "main" / "memagent-NonStationaryRegression-v0_1"
    assert (summary / "summary.md").is_file()
    assert (summary / "figures" / "learning_curves.png").stat().st_size > 0
    assert (summary / "figures" / "switch_aligned.png").stat().st_size > 0


def test_cli_wrappers_make_any_env_non_stationary(tmp_path, capsys):
    from memagent.training.cli import main

    argv = [
        "--algo",
        "ppo",
        "--env",
        "CartPole-v1",
        "-n",
        "64",
        "--n-envs",
        "1",
        "--hyperparams",
        "n_steps:32",
        "batch_size:32",
        "n_epochs:1",
        "--non-stationary",
        "tasks:[{'gravity': 9.8}, {'gravity': 30.0}]",
        "period:10",
        "--feedback",
        "--history",
        "3",
        "--eval-freq",
        "-1",
        "--eval-episodes",
        "1",
        "--switch-episodes",
        "2",
        "--no-figures",
        "-v",
        "0",
        "-f",
        str(tmp_path),
    ]
    assert main(argv) == 0
    run_dir = tmp_path / "ppo" / "CartPole-v1_1"
    args = yaml.safe_load((run_dir / "args.yml").read_text())
    assert [w["name"] for w in args["wrappers"]] == ["nonstationary", "feedback"] and args["history"] == 3
    assert (run_dir / "command.txt").read_text().startswith("python train.py --algo ppo --env CartPole-v1")
    from stable_baselines3 import PPO

    model = PPO.load(run_dir / "CartPole-v1.zip")
    # CartPole's 4 features + one-hot previous action (2) + previous reward (1), over a window of 3 steps.
    assert model.observation_space.shape == (3, 7)
    sw = json.loads((run_dir / "switch_metrics.json").read_text())
    assert sw["n_switches"] >= 1


def test_batched_vec_env_for_regression_ids(tmp_path):
    cfg = tiny(tmp_path, "ppo", n=64, vec_env="batched")
    cfg.n_envs = 2
    result = train(cfg)
    _assert_complete(result.run_dir, "memagent-NonStationaryRegression-v0")
    bad = tiny(tmp_path, "ppo", env="CartPole-v1", vec_env="batched")
    from memagent.training import UsageError

    with pytest.raises(UsageError, match="--vec-env"):
        train(bad)
