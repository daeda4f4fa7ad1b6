"""Tests of RecurrentDncPPO and its sequence rollout buffer."""

from __future__ import annotations

from typing import NamedTuple

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.envs import (
    FakeImageEnv,
    IdentityEnvBox,
    IdentityEnvMultiBinary,
    IdentityEnvMultiDiscrete,
    SimpleMultiObsEnv,
)
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.policies import ActorCriticPolicy

from memagent.algos.recurrent_buffers import SequenceRolloutBuffer
from memagent.algos.recurrent_ppo import RecurrentDncPPO
from memagent.memory import DNCState
from memagent.policies import CoreStates, LSTMCore
from memagent.policies.state import state_leaves

SMALL_DNC = dict(hidden_size=16, output_size=16, memory_size=8, word_size=8, num_read_heads=2)


class CueRecall(gym.Env):
    """A cue (one of two) is shown at step 0, then ``delay`` blank steps, then a query step.

    Observation ``(3,)``: one-hot cue at step 0, a query flag at the last step, zeros otherwise.
    Action ``Discrete(2)``; reward +1 if the action at the query step equals the cue, else -1; 0 before.
    A memoryless policy cannot beat 0 in expectation; a policy that remembers the cue scores 1.
    """

    def __init__(self, delay: int = 3) -> None:
        self.delay = delay
        self.observation_space = spaces.Box(0.0, 1.0, (3,), np.float32)
        self.action_space = spaces.Discrete(2)
        self.cue, self.t = 0, 0

    def _obs(self) -> np.ndarray:
        obs = np.zeros(3, np.float32)
        if self.t == 0:
            obs[self.cue] = 1.0
        if self.t == self.delay + 1:
            obs[2] = 1.0
        return obs

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return self._obs(), {}

    def step(self, action):
        if self.t == self.delay + 1:
            return self._obs(), (1.0 if int(action) == self.cue else -1.0), True, False, {}
        self.t += 1
        return self._obs(), 0.0, False, False, {}


# ---------------------------------------------------------------------------------------------- buffer
class ToyState(NamedTuple):
    memory: th.Tensor  # (B, 2, 2)
    flag: th.Tensor  # (B,) int64


def test_buffer_stores_states_only_at_sequence_starts_and_yields_whole_sequences() -> None:
    n_steps, n_envs, length = 8, 3, 4
    buffer = SequenceRolloutBuffer(
        n_steps, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), sequence_length=length, n_envs=n_envs, seed=0
    )
    env_ids = th.arange(n_envs)
    for step in range(n_steps):
        code = (10 * step + env_ids).float()  # identifies (step, env)
        states = CoreStates(ToyState(code.view(-1, 1, 1).expand(-1, 2, 2).clone(), code.long()), None)
        buffer.add(
            code.numpy().reshape(n_envs, 1),
            np.zeros(n_envs),
            np.zeros(n_envs),
            np.array([step == 5, False, False]),
            th.zeros(n_envs),
            th.zeros(n_envs),
            states=states,
        )
    # two chunks per env: only steps 0 and 4 are kept
    assert buffer.stored_states.pi.memory.shape == (2, n_envs, 2, 2)
    assert buffer.stored_states.pi.flag[:, 0].tolist() == [0, 40]
    assert buffer.state_bytes_per_env == 4 * 4 + 8
    assert buffer.state_nbytes == 2 * n_envs * (4 * 4 + 8)
    buffer.compute_returns_and_advantage(th.zeros(n_envs), np.zeros(n_envs))
    seen = []
    for batch in buffer.get(batch_size=2 * length):
        obs = batch.observations.reshape(-1, length)
        start = batch.states.pi.flag
        assert batch.states.pi.memory.dtype == th.float32 and start.dtype == th.int64
        # each sequence: L consecutive steps of one env, starting where its stored state was taken
        assert th.equal(obs[:, 0].long(), start)
        assert th.equal(obs - obs[:, :1], th.arange(length).float() * 10 * th.ones_like(obs))
        assert th.equal(batch.mask, th.ones(len(start) * length))
        starts = batch.episode_starts.reshape(-1, length)
        assert th.equal(starts[:, 1], (start == 40).float())  # env 0 started an episode at step 5
        seen += start.tolist()
    assert sorted(seen) == [0, 1, 2, 40, 41, 42]
    with pytest.raises(ValueError, match="multiple of sequence_length"):
        next(buffer.get(batch_size=6))
    with pytest.raises(ValueError, match="must divide"):
        SequenceRolloutBuffer(10, spaces.Box(-1, 1, (1,)), spaces.Discrete(2), sequence_length=4)


def _collect(model: RecurrentDncPPO) -> None:
    """One rollout without training (the PPO loop's first half)."""
    _, callback = model._setup_learn(model.n_steps * model.n_envs, callback=None, reset_num_timesteps=False)
    callback.on_training_start(locals(), globals())
    model.collect_rollouts(model.env, callback, model.rollout_buffer, model.n_steps)


@pytest.mark.parametrize("critic_memory", ["shared", "separate"])
def test_replayed_sequences_reproduce_the_rollout(critic_memory: str) -> None:
    """Stored states + in-sequence resets: re-running the sequences gives the rollout's values and log-probs.

    Episodes of 5 steps and sequences of 8 put episode starts inside sequences; the second rollout starts
    from the memory carried over from the first.
    """
    env = make_vec_env(CueRecall, n_envs=3, seed=0)
    model = RecurrentDncPPO(
        "DncPolicy",
        env,
        n_steps=16,
        sequence_length=8,
        batch_size=16,
        seed=0,
        policy_kwargs=dict(core_kwargs=SMALL_DNC, critic_memory=critic_memory),
    )
    for _ in range(2):
        _collect(model)
        buffer = model.rollout_buffer
        assert buffer.n_sequences == 6 and len(state_leaves(buffer.stored_states)) > 0
        for batch in buffer.get(batch_size=16):
            with th.no_grad():
                values, log_prob, _ = model.policy.evaluate_actions(
                    batch.observations, batch.actions.long().flatten(), batch.states, batch.episode_starts
                )
            assert th.allclose(values.flatten(), batch.old_values, atol=1e-5)
            assert th.allclose(log_prob, batch.old_log_prob, atol=1e-5)
    # the memory is not trivially zero at the second rollout's sequence starts
    assert any(np.abs(leaf).sum() > 0 for leaf in state_leaves(buffer.stored_states))


def test_save_load_round_trip_gives_identical_actions(tmp_path) -> None:
    env = make_vec_env(CueRecall, n_envs=2, seed=0)
    model = RecurrentDncPPO(
        "DncPolicy",
        env,
        n_steps=8,
        sequence_length=4,
        batch_size=8,
        n_epochs=1,
        seed=0,
        policy_kwargs=dict(core_kwargs=SMALL_DNC),
    )
    model.learn(16)
    model.save(tmp_path / "model")
    loaded = RecurrentDncPPO.load(tmp_path / "model", env=env)
    assert loaded.sequence_length == 4 and loaded.policy.core_kwargs == SMALL_DNC
    obs = env.reset()
    states = [None, None]
    rng = np.random.default_rng(0)
    for step in range(6):
        starts = np.array([step == 0, step == 3])
        a0, states[0] = model.predict(obs, state=states[0], episode_start=starts, deterministic=True)
        a1, states[1] = loaded.predict(obs, state=states[1], episode_start=starts, deterministic=True)
        assert np.array_equal(a0, a1)
        for x, y in zip(state_leaves(states[0]), state_leaves(states[1])):
            assert th.equal(x, y)
        obs = rng.uniform(0, 1, obs.shape).astype(np.float32)
    assert isinstance(states[0].pi, DNCState)


def test_evaluate_policy_and_lstm_core() -> None:
    env = make_vec_env(CueRecall, n_envs=2, seed=0)
    model = RecurrentDncPPO(
        "DncPolicy",
        env,
        n_steps=8,
        sequence_length=8,
        batch_size=16,
        n_epochs=1,
        seed=0,
        policy_kwargs=dict(core_class=LSTMCore, core_kwargs=dict(hidden_size=8)),
    )
    model.learn(16)
    rewards, lengths = evaluate_policy(model, env, n_eval_episodes=6, return_episode_rewards=True)
    assert len(rewards) == 6 and all(r in (-1.0, 1.0) for r in rewards) and set(lengths) == {5}


@pytest.mark.parametrize(
    ("env_fn", "policy"),
    [
        (lambda: IdentityEnvBox(ep_length=6), "DncPolicy"),
        (lambda: IdentityEnvMultiDiscrete(dim=2, ep_length=6), "DncPolicy"),
        (lambda: IdentityEnvMultiBinary(dim=2, ep_length=6), "DncPolicy"),
        (lambda: SimpleMultiObsEnv(random_start=True), "MultiInputDncPolicy"),
        (lambda: FakeImageEnv(screen_height=36, screen_width=36), "CnnDncPolicy"),
    ],
)
def test_spaces_and_policy_variants_train(env_fn, policy: str) -> None:
    env = make_vec_env(env_fn, n_envs=2, seed=0)
    model = RecurrentDncPPO(
        policy,
        env,
        n_steps=8,
        sequence_length=4,
        batch_size=8,
        n_epochs=1,
        seed=0,
        policy_kwargs=dict(core_kwargs=SMALL_DNC),
    )
    before = [p.detach().clone() for p in model.policy.core_actor.parameters()]
    model.learn(16)
    assert any(not th.equal(b, p) for b, p in zip(before, model.policy.core_actor.parameters()))
    action, state = model.predict(env.reset(), deterministic=True)
    assert all(env.action_space.contains(a) for a in action)


def test_truncated_episodes_are_bootstrapped_from_the_memory() -> None:
    env = make_vec_env("CartPole-v1", n_envs=2, seed=0, env_kwargs=dict(max_episode_steps=3))
    model = RecurrentDncPPO(
        "DncPolicy",
        env,
        n_steps=8,
        sequence_length=4,
        batch_size=8,
        gamma=0.5,
        seed=0,
        policy_kwargs=dict(core_kwargs=SMALL_DNC),
    )
    _collect(model)
    rewards = model.rollout_buffer.rewards
    truncation = model.rollout_buffer.episode_starts[1:].astype(bool)  # a start follows each truncation
    assert truncation.any()
    assert np.all(rewards[:-1][~truncation] == 1.0) and np.all(rewards[:-1][truncation] != 1.0)


def test_clear_errors() -> None:
    env = make_vec_env(CueRecall, n_envs=2, seed=0)
    with pytest.raises(ValueError, match="sequence_length=5 must divide n_steps=16"):
        RecurrentDncPPO("DncPolicy", env, n_steps=16, sequence_length=5)
    with pytest.raises(ValueError, match="batch_size=12 must be a positive multiple"):
        RecurrentDncPPO("DncPolicy", env, n_steps=16, sequence_length=8, batch_size=12)
    with pytest.raises(TypeError, match="DncPolicy"):
        RecurrentDncPPO(ActorCriticPolicy, env, n_steps=16, sequence_length=8, batch_size=16)


def test_dnc_policy_learns_to_recall_a_cue_that_memoryless_ppo_cannot() -> None:
    """Learning smoke test: the cue must be recalled 4 steps after it was shown (2048 env steps).

    With these settings the default DNC policy reaches a perfect score on seeds 0-5 (about half the budget
    suffices for most seeds); a memoryless PPO can only guess.
    """
    common = dict(n_steps=16, batch_size=64, n_epochs=4, learning_rate=3e-3, ent_coef=0.01, gamma=0.9, seed=0)
    scores = {}
    for name in ("dnc", "mlp"):
        env = make_vec_env(CueRecall, n_envs=8, seed=0)
        if name == "dnc":
            model = RecurrentDncPPO("DncPolicy", env, sequence_length=8, **common).learn(2048)
        else:
            model = PPO("MlpPolicy", env, **common).learn(2048)
        eval_env = make_vec_env(CueRecall, n_envs=4, seed=123)
        scores[name], _ = evaluate_policy(model, eval_env, n_eval_episodes=40, deterministic=True)
    assert scores["dnc"] >= 0.8, scores  # recalls the cue in >= 90% of episodes
    assert scores["mlp"] <= 0.5, scores  # guessing: 0 expected, 0.5 is 3 std above
