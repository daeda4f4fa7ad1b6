"""PrioritizedDQN / SAC / TD3: reduce to the SB3 parent at alpha = beta = 0, update priorities, learn."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import DQN, SAC, TD3
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.logger import Logger
from stable_baselines3.common.type_aliases import ReplayBufferSamples

from memagent.algos.prioritized import PrioritizedDQN, PrioritizedSAC, PrioritizedTD3, reduce_twin_td
from memagent.replay import PrioritizedReplayBuffer


def _small():
    """Fresh policy kwargs (SB3 adds keys to the dict it is given)."""
    return {"net_arch": [32, 32]}


def _optimizers(model):
    if isinstance(model, DQN):
        return [model.policy.optimizer]
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    if getattr(model, "ent_coef_optimizer", None) is not None:
        optimizers.append(model.ent_coef_optimizer)
    return optimizers


def _record_gradients(model):
    """Wrap every optimizer's step to keep a copy of the gradients it applies."""
    record = []
    for opt in _optimizers(model):
        original = opt.step

        def step(*args, _original=original, _opt=opt, **kwargs):
            grads = [p.grad.clone() for g in _opt.param_groups for p in g["params"] if p.grad is not None]
            record.append(grads)
            return _original(*args, **kwargs)

        opt.step = step
    return record


def _train_on(model, batch, gradient_steps):
    model.replay_buffer.sample = lambda *args, **kwargs: batch
    model.set_logger(Logger(folder=None, output_formats=[]))
    record = _record_gradients(model)
    th.manual_seed(123)  # SAC's and TD3's sampling noise
    model.train(
        gradient_steps=gradient_steps, batch_size=len(batch.indices) if hasattr(batch, "indices") else 32
    )
    return record, dict(model.logger.name_to_value)


CASES = [
    (DQN, PrioritizedDQN, "CartPole-v1", {"learning_starts": 10**6}),
    (SAC, PrioritizedSAC, "Pendulum-v1", {"learning_starts": 10**6}),
    (TD3, PrioritizedTD3, "Pendulum-v1", {"learning_starts": 10**6}),
]


@pytest.mark.parametrize("parent_cls,ours_cls,env_id,kwargs", CASES, ids=["DQN", "SAC", "TD3"])
def test_alpha_beta_zero_reduces_to_the_sb3_update(parent_cls, ours_cls, env_id, kwargs):
    common = dict(policy_kwargs=_small(), seed=0, buffer_size=1000, **kwargs)
    parent = parent_cls("MlpPolicy", env_id, **common)
    ours = ours_cls("MlpPolicy", env_id, replay_buffer_kwargs=dict(alpha=0.0, beta=0.0), **common)
    ours.policy.load_state_dict(parent.policy.state_dict())
    ours.learn(150)  # collects transitions only (learning_starts is never reached)
    batch = ours.replay_buffer.sample(32)
    np.testing.assert_array_equal(batch.weights.numpy(), 1.0)
    plain = ReplayBufferSamples(*batch[:6])

    grads_parent, logs_parent = _train_on(parent, plain, gradient_steps=2)
    grads_ours, logs_ours = _train_on(ours, batch, gradient_steps=2)

    for key in ("train/loss", "train/critic_loss", "train/actor_loss", "train/ent_coef_loss"):
        if key in logs_parent:
            assert logs_ours[key] == pytest.approx(logs_parent[key], rel=1e-6, abs=1e-9), key
    assert len(grads_ours) == len(grads_parent) > 0
    for step_parent, step_ours in zip(grads_parent, grads_ours):
        assert len(step_parent) == len(step_ours)
        for g_parent, g_ours in zip(step_parent, step_ours):
            th.testing.assert_close(g_ours, g_parent, rtol=1e-6, atol=1e-8)
    for p_parent, p_ours in zip(parent.policy.parameters(), ours.policy.parameters()):
        th.testing.assert_close(p_ours, p_parent, rtol=1e-6, atol=1e-8)


def test_dqn_sets_priorities_to_the_absolute_td_error():
    model = PrioritizedDQN(
        "MlpPolicy",
        "CartPole-v1",
        policy_kwargs=_small(),
        seed=1,
        buffer_size=1000,
        learning_starts=10**6,
        replay_buffer_kwargs=dict(alpha=1.0, beta=0.4, eps=0.0),
    )
    model.learn(100)
    buffer = model.replay_buffer
    batch = buffer.sample(16)
    with th.no_grad():
        q = model.q_net(batch.observations).gather(1, batch.actions.long())
        next_q = model.q_net_target(batch.next_observations).max(dim=1, keepdim=True).values
        target = batch.rewards + (1 - batch.dones) * model.gamma * next_q
    expected = (q - target).abs().numpy()[:, 0]
    _train_on(model, batch, gradient_steps=1)
    np.testing.assert_allclose(buffer.tree[batch.indices], expected, rtol=1e-5)
    assert buffer.max_priority == pytest.approx(max(1.0, expected.max()))


@pytest.mark.parametrize("how,expected", [("mean", [2.0, 2.5]), ("max", [3.0, 4.0]), ("min", [1.0, 1.0])])
def test_twin_critic_reduction(how, expected):
    abs_td = [th.tensor([[1.0], [4.0]]), th.tensor([[3.0], [1.0]])]
    th.testing.assert_close(reduce_twin_td(abs_td, how), th.tensor(expected))
    with pytest.raises(ValueError, match="td_reduction must be one of"):
        reduce_twin_td(abs_td, "median")
    with pytest.raises(ValueError, match="td_reduction must be one of"):
        PrioritizedSAC("MlpPolicy", "Pendulum-v1", td_reduction="median")


def test_n_steps_and_beta_progress_reach_the_buffer():
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)
        model = PrioritizedDQN(
            "MlpPolicy",
            "CartPole-v1",
            n_steps=3,
            gamma=0.9,
            policy_kwargs=_small(),
            learning_starts=50,
            seed=0,
        )
    buffer = model.replay_buffer
    assert isinstance(buffer, PrioritizedReplayBuffer) and buffer.n_steps == 3 and buffer.gamma == 0.9
    model.learn(200)
    assert model.n_steps == 3
    assert buffer.current_beta == pytest.approx(1.0, abs=0.01)  # annealed with SB3's progress
    assert buffer.sample(8).discounts is not None


def test_plain_buffer_is_rejected():
    model = PrioritizedDQN("MlpPolicy", "CartPole-v1", replay_buffer_class=ReplayBuffer)
    model.set_logger(Logger(folder=None, output_formats=[]))
    with pytest.raises(TypeError, match="replay_buffer must be a PrioritizedReplayBuffer"):
        model.train(gradient_steps=1, batch_size=4)


def test_save_and_load_replay_buffer_keeps_priorities(tmp_path):
    kwargs = dict(policy_kwargs=_small(), buffer_size=500, learning_starts=50, seed=0)
    model = PrioritizedDQN("MlpPolicy", "CartPole-v1", **kwargs)
    model.learn(300)
    buffer = model.replay_buffer
    assert len(np.unique(buffer.tree.priorities[: buffer.size()])) > 10  # priorities were updated
    model.save_replay_buffer(tmp_path / "buffer.pkl")
    other = PrioritizedDQN("MlpPolicy", "CartPole-v1", **kwargs)
    other.load_replay_buffer(tmp_path / "buffer.pkl")
    loaded = other.replay_buffer
    assert isinstance(loaded, PrioritizedReplayBuffer)
    np.testing.assert_array_equal(loaded.tree._nodes, buffer.tree._nodes)
    assert (loaded.pos, loaded.full, loaded.max_priority, loaded.num_added) == (
        buffer.pos,
        buffer.full,
        buffer.max_priority,
        buffer.num_added,
    )
    a, b = buffer.sample(64), loaded.sample(64)  # same generator state was saved
    np.testing.assert_array_equal(a.indices, b.indices)
    th.testing.assert_close(a.weights, b.weights)
    th.testing.assert_close(a.observations, b.observations)


def _greedy_return(model, env_id, seed):
    env = gym.make(env_id)
    env.reset(seed=seed)
    mean, _ = evaluate_policy(model, env, n_eval_episodes=3, deterministic=True, warn=False)
    return mean


def test_prioritized_dqn_learns_cartpole():
    model = PrioritizedDQN(
        "MlpPolicy",
        "CartPole-v1",
        learning_rate=2.3e-3,
        buffer_size=10_000,
        learning_starts=200,
        batch_size=64,
        train_freq=1,
        gradient_steps=1,
        target_update_interval=100,
        exploration_fraction=0.25,
        exploration_final_eps=0.05,
        policy_kwargs={"net_arch": [64, 64]},
        replay_buffer_kwargs=dict(alpha=0.6, beta=0.4),
        seed=1,
    )
    before = _greedy_return(model, "CartPole-v1", seed=100)
    model.learn(2000)  # seeds 1 and 2 reach ~240-270
    after = _greedy_return(model, "CartPole-v1", seed=100)
    assert before < 30
    assert after > 100  # a random or untrained policy balances ~10 steps


def test_prioritized_sac_learns_pendulum():
    model = PrioritizedSAC(
        "MlpPolicy",
        "Pendulum-v1",
        learning_rate=3e-3,
        gamma=0.98,
        tau=0.05,
        batch_size=128,
        buffer_size=10_000,
        learning_starts=200,
        policy_kwargs={"net_arch": [64, 64]},
        replay_buffer_kwargs=dict(alpha=0.6, beta=0.4),
        seed=0,
    )
    before = _greedy_return(model, "Pendulum-v1", seed=100)
    model.learn(1500)  # seeds 0 and 1 reach about -480 and -200
    after = _greedy_return(model, "Pendulum-v1", seed=100)
    assert before < -1000  # an untrained policy lets the pendulum hang: about -1200 to -1500
    assert after > -700  # swings up and balances on some starts
