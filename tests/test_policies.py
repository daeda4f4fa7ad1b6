"""Tests of memagent.policies: recurrent cores, structured states, DncPolicy and DNCExtractor."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from stable_baselines3 import A2C, DQN, PPO, SAC, TD3
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack

from memagent.memory import DNC, DNCState
from memagent.policies import (
    CoreStates,
    DNCExtractor,
    DncPolicy,
    LSTMCore,
    MultiInputDncPolicy,
    build_dnc_core,
    state_nbytes_per_sample,
)
from memagent.policies.state import detach_state, index_state, map_state, state_batch_size, state_leaves

SMALL_DNC = dict(hidden_size=16, output_size=16, memory_size=8, word_size=8, num_read_heads=2)


def lr(_: float) -> float:
    return 1e-3


def make_policy(obs_space=None, action_space=None, **kwargs) -> DncPolicy:
    obs_space = obs_space or spaces.Box(-1, 1, (3,), np.float32)
    action_space = action_space or spaces.Discrete(3)
    kwargs.setdefault("core_kwargs", SMALL_DNC)
    th.manual_seed(0)
    return DncPolicy(obs_space, action_space, lr, **kwargs)


# ------------------------------------------------------------------------------------------------ states
def test_state_helpers_on_a_nested_state() -> None:
    state = CoreStates(DNCState(*[th.arange(6.0).reshape(3, 2)] * 9), None)
    assert state_batch_size(state) == 3
    assert len(state_leaves(state)) == 9
    picked = index_state(state, slice(1, 2))
    assert picked.vf is None and isinstance(picked.pi, DNCState)
    assert th.equal(picked.pi.memory, th.tensor([[2.0, 3.0]]))
    doubled = map_state(lambda a, b: a + b, state, state)
    assert th.equal(doubled.pi.usage, 2 * state.pi.usage)
    assert state_nbytes_per_sample(state) == 9 * 2 * 4
    with pytest.raises(ValueError, match="leading batch dimension"):
        state_batch_size((th.zeros(2, 1), th.zeros(3, 1)))


def test_dnc_state_size_of_default_core() -> None:
    """The documented per-env state size of the default DNC core: 3 008 bytes (float32)."""
    core = build_dnc_core(input_size=4)
    state = core.initial_state(5)
    # controller h, c (64 + 64) + memory 16x16 + usage 16 + link 16x16 + precedence 16
    # + read weights 2x16 + write weights 16 + read vectors 2x16 = 752 floats
    assert state_nbytes_per_sample(state) == 752 * 4
    assert state_nbytes_per_sample(detach_state(state)) == 752 * 4


# ------------------------------------------------------------------------------------------------- cores
def test_lstm_core_sequence_with_resets_equals_stepping() -> None:
    th.manual_seed(0)
    core = LSTMCore(input_size=3, hidden_size=5, output_size=4)
    x = th.randn(2, 7, 3)
    starts = th.zeros(2, 7, dtype=th.bool)
    starts[0, 3] = starts[1, 5] = True
    state0 = map_state(lambda t: th.randn_like(t), core.initial_state(2))
    y, final = core(x, state0, starts)
    state, ys = state0, []
    for t in range(7):
        y_t, state = core(x[:, t : t + 1], state, starts[:, t : t + 1])
        ys.append(y_t)
    assert y.shape == (2, 7, 4)
    assert th.allclose(y, th.cat(ys, 1), atol=1e-6)
    assert th.allclose(final.hidden, state.hidden, atol=1e-6)
    # sample 0 restarts from zero at t=3: its outputs from t=3 on equal a fresh run of x[0, 3:]
    fresh, _ = core(x[:1, 3:], core.initial_state(1))
    assert th.allclose(y[:1, 3:], fresh, atol=1e-6)


# ------------------------------------------------------------------------------------------------ policy
def _step_through(policy: DncPolicy, obs: th.Tensor, starts: th.Tensor, state: CoreStates):
    """Run ``policy.forward`` one step at a time over ``obs`` (B, T, ...) -> values, log-probs, actions."""
    values, actions, log_probs = [], [], []
    for t in range(obs.shape[1]):
        a, v, lp, state = policy(obs[:, t], state, starts[:, t].float())
        values.append(v.flatten())
        actions.append(a)
        log_probs.append(lp)
    return th.stack(values, 1), th.stack(actions, 1), th.stack(log_probs, 1), state


@pytest.mark.parametrize("critic_memory", ["shared", "separate", "none"])
@pytest.mark.parametrize("core", ["dnc", "lstm"])
def test_evaluate_actions_over_a_sequence_equals_stepping(critic_memory: str, core: str) -> None:
    """BPTT view (whole sequences from the stored state) == rollout view (one step at a time)."""
    kwargs = {} if core == "dnc" else dict(core_class=LSTMCore, core_kwargs=dict(hidden_size=8))
    policy = make_policy(critic_memory=critic_memory, **kwargs)
    n_seq, steps = 3, 9
    gen = th.Generator().manual_seed(1)
    obs = th.rand(n_seq, steps, 3, generator=gen) * 2 - 1
    starts = th.rand(n_seq, steps, generator=gen) < 0.2
    starts[1, 4] = True
    # a non-trivial state at the sequence start: run a few warm-up steps
    state = policy.initial_state(n_seq)
    with th.no_grad():
        _, _, _, state = _step_through(policy, th.rand(n_seq, 4, 3, generator=gen), th.zeros(n_seq, 4), state)
        values, actions, log_probs, _ = _step_through(policy, obs, starts, state)
        v_seq, lp_seq, entropy = policy.evaluate_actions(
            obs.reshape(n_seq * steps, 3), actions.reshape(-1), state, starts.reshape(-1).float()
        )
    assert th.allclose(v_seq.reshape(n_seq, steps), values, atol=1e-5)
    assert th.allclose(lp_seq.reshape(n_seq, steps), log_probs, atol=1e-5)
    assert entropy.shape == (n_seq * steps,)


def test_bptt_reaches_the_memory_across_steps() -> None:
    """The loss at the last step of a sequence has a gradient w.r.t. the first observation (no detach)."""
    policy = make_policy()
    obs = th.rand(2 * 6, 3, requires_grad=True)
    values, _, _ = policy.evaluate_actions(obs, th.zeros(12), policy.initial_state(2), th.zeros(12))
    values.reshape(2, 6)[:, -1].sum().backward()
    grad = obs.grad.reshape(2, 6, 3)
    assert grad[:, 0].abs().sum() > 0


def test_per_env_reset_only_touches_flagged_envs() -> None:
    policy = make_policy(critic_memory="separate")
    obs = th.rand(3, 3)
    with th.no_grad():
        _, _, _, state = policy(obs, policy.initial_state(3), th.zeros(3))
        _, v_reset, _, after = policy(obs, state, th.tensor([0.0, 1.0, 0.0]))
        _, v_fresh, _, fresh = policy(obs, policy.initial_state(3), th.zeros(3))
        _, v_kept, _, kept = policy(obs, state, th.zeros(3))
    for got, want_reset, want_kept in zip(state_leaves(after), state_leaves(fresh), state_leaves(kept)):
        assert th.allclose(got[1], want_reset[1], atol=1e-6)
        assert th.allclose(got[[0, 2]], want_kept[[0, 2]], atol=1e-6)
    assert th.allclose(v_reset[1], v_fresh[1], atol=1e-6) and th.allclose(v_reset[0], v_kept[0], atol=1e-6)


def test_predict_with_state_matches_the_sequence_and_resets() -> None:
    policy = make_policy(action_space=spaces.Box(-1, 1, (2,), np.float32))
    rng = np.random.default_rng(0)
    obs = rng.uniform(-1, 1, (5, 2, 3)).astype(np.float32)  # (T, n_envs, 3)
    state, actions = None, []
    for t in range(5):
        action, state = policy.predict(
            obs[t], state=state, episode_start=np.array([t == 0, False]), deterministic=True
        )
        actions.append(action)
    assert isinstance(state, CoreStates) and state.vf is None and isinstance(state.pi, DNCState)
    assert state.pi.memory.shape == (2, 8, 8)
    # the same steps as one sequence per env
    flat = th.as_tensor(obs.swapaxes(0, 1).reshape(10, 3))
    with th.no_grad():
        dist, _ = policy.get_distribution(flat, policy.initial_state(2), th.zeros(10))
    expected = np.clip(dist.get_actions(deterministic=True).numpy().reshape(2, 5, 2), -1, 1)
    assert np.allclose(np.stack(actions, 1), expected, atol=1e-5)
    # episode_start=True forgets: same action as a fresh memory; numpy states are accepted
    numpy_state = CoreStates(map_state(lambda t: t.numpy(), state.pi), None)
    a_reset, _ = policy.predict(
        obs[0], state=numpy_state, episode_start=np.array([True, True]), deterministic=True
    )
    a_fresh, _ = policy.predict(obs[0], deterministic=True)
    assert np.allclose(a_reset, a_fresh, atol=1e-6)
    with pytest.raises(ValueError, match="batch size"):
        policy.predict(obs[0][:1], state=state)


@pytest.mark.parametrize(
    "action_space",
    [
        spaces.Discrete(4),
        spaces.Box(-2, 2, (3,), np.float32),
        spaces.MultiDiscrete([2, 3]),
        spaces.MultiBinary(3),
    ],
)
def test_action_spaces(action_space: spaces.Space) -> None:
    policy = make_policy(action_space=action_space)
    action, state = policy.predict(np.zeros((4, 3), np.float32))
    assert action.shape == (4, *action_space.shape)
    assert all(action_space.contains(a) for a in action)


def test_observation_spaces_discrete_and_dict() -> None:
    policy = make_policy(obs_space=spaces.Discrete(5))
    action, _ = policy.predict(np.array([1, 4]))
    assert action.shape == (2,)
    dict_space = spaces.Dict({"a": spaces.Box(-1, 1, (2,), np.float32), "b": spaces.Discrete(3)})
    th.manual_seed(0)
    policy = MultiInputDncPolicy(dict_space, spaces.Discrete(2), lr, core_kwargs=SMALL_DNC)
    action, _ = policy.predict({"a": np.zeros((3, 2), np.float32), "b": np.array([0, 1, 2])})
    assert action.shape == (3,)


def test_clear_errors_for_bad_spaces_and_kwargs() -> None:
    with pytest.raises(TypeError, match="lstm_hidden_size.*core_kwargs"):
        make_policy(lstm_hidden_size=64)
    with pytest.raises(ValueError, match="critic_memory"):
        make_policy(critic_memory="both")
    with pytest.raises(ValueError, match="share_features_extractor"):
        make_policy(share_features_extractor=False, critic_memory="shared")
    with pytest.raises(TypeError, match="observation_space.*allowed: Box"):
        make_policy(obs_space=spaces.Tuple((spaces.Discrete(2), spaces.Discrete(2))))
    with pytest.raises(TypeError, match="MultiInputDncPolicy"):
        make_policy(obs_space=spaces.Dict({"a": spaces.Discrete(2)}))
    with pytest.raises(TypeError, match="lacks \\['initial_state'\\]"):
        make_policy(core_class=lambda input_size: th.nn.Linear(input_size, 4), core_kwargs={})
    with pytest.raises(TypeError, match="slots.*accepted.*memory_size"):
        make_policy(core_kwargs=dict(memory_size=8, slots=3))


def test_separate_extractors_with_separate_memories() -> None:
    policy = make_policy(share_features_extractor=False, critic_memory="separate")
    assert isinstance(policy.core_critic, DNC) and policy.core_critic is not policy.core_actor
    state = policy.initial_state(2)
    values, _, _ = policy.evaluate_actions(th.zeros(4, 3), th.zeros(4), state, th.zeros(4))
    assert values.shape == (4, 1)


# --------------------------------------------------------------------------------------------- extractor
def test_dnc_extractor_runs_the_window_from_a_fresh_memory() -> None:
    th.manual_seed(0)
    space = spaces.Box(-1, 1, (4, 3), np.float32)
    extractor = DNCExtractor(
        space, features_dim=8, core_kwargs=dict(hidden_size=8, memory_size=4, word_size=4)
    )
    obs = th.rand(5, 4, 3)
    features = extractor(obs)
    y, _ = extractor.core(obs, extractor.core.initial_state(5))
    assert features.shape == (5, 8)
    assert th.allclose(features, y[:, -1])
    # stateless and per sample: a call on a sub-batch gives the same features
    assert th.allclose(extractor(obs[2:4]), features[2:4], atol=1e-6)
    # flat (k * d,) observations with window=k read the same windows
    flat = DNCExtractor(
        spaces.Box(-1, 1, (12,), np.float32),
        features_dim=8,
        window=4,
        core_kwargs=dict(hidden_size=8, memory_size=4, word_size=4),
    )
    flat.load_state_dict(extractor.state_dict())
    assert th.allclose(flat(obs.reshape(5, 12)), features, atol=1e-6)


def test_dnc_extractor_errors() -> None:
    with pytest.raises(ValueError, match="window=k"):
        DNCExtractor(spaces.Box(-1, 1, (12,), np.float32))
    with pytest.raises(ValueError, match="divisor"):
        DNCExtractor(spaces.Box(-1, 1, (12,), np.float32), window=5)
    with pytest.raises(ValueError, match="does not match"):
        DNCExtractor(spaces.Box(-1, 1, (4, 3), np.float32), window=3)
    with pytest.raises(TypeError, match="Box"):
        DNCExtractor(spaces.Discrete(3))
    with pytest.raises(ValueError, match="images"):
        DNCExtractor(spaces.Box(0, 255, (3, 8, 8), np.uint8))


EXTRACTOR_KWARGS = dict(
    features_extractor_class=DNCExtractor,
    features_extractor_kwargs=dict(
        window=3, features_dim=16, core_kwargs=dict(hidden_size=16, memory_size=8, word_size=8)
    ),
    net_arch=[16],
)


@pytest.mark.parametrize("algo", [PPO, A2C, DQN, SAC, TD3])
def test_dnc_extractor_with_sb3_algorithms(algo) -> None:
    """Every SB3 algorithm trains a few steps on VecFrameStack'ed observations through the extractor."""
    env_id = "CartPole-v1" if algo in (PPO, A2C, DQN) else "Pendulum-v1"
    env = VecFrameStack(make_vec_env(env_id, n_envs=1, seed=0), n_stack=3)
    kwargs: dict = dict(seed=0, policy_kwargs=dict(EXTRACTOR_KWARGS))
    if algo in (PPO, A2C):
        kwargs.update(n_steps=16)
        if algo is PPO:
            kwargs.update(batch_size=16, n_epochs=1)
    else:
        kwargs.update(learning_starts=8, batch_size=8, buffer_size=100, train_freq=4, gradient_steps=1)
    model = algo("MlpPolicy", env, **kwargs)
    before = [p.detach().clone() for p in model.policy.parameters()]
    model.learn(32)
    extractor = model.policy.features_extractor if algo is not DQN else model.policy.q_net.features_extractor
    if algo in (SAC, TD3):
        extractor = model.actor.features_extractor
    assert isinstance(extractor, DNCExtractor)
    changed = any(not th.equal(b, p) for b, p in zip(before, model.policy.parameters()))
    assert changed
    action, _ = model.predict(env.reset(), deterministic=True)
    assert env.action_space.contains(action[0])


def test_dnc_extractor_with_a_history_observation() -> None:
    """A (k, d) history observation goes straight into the extractor (no window kwarg needed)."""

    class History(gym.ObservationWrapper):
        def __init__(self, env: gym.Env, k: int = 3) -> None:
            super().__init__(env)
            d = env.observation_space.shape[0]
            self.k, self.buffer = k, np.zeros((k, d), np.float32)
            self.observation_space = spaces.Box(-np.inf, np.inf, (k, d), np.float32)

        def reset(self, **kwargs):
            self.buffer[:] = 0
            return super().reset(**kwargs)

        def observation(self, obs):
            self.buffer = np.roll(self.buffer, -1, axis=0)
            self.buffer[-1] = obs
            return self.buffer.copy()

    env = DummyVecEnv([lambda: History(gym.make("CartPole-v1"))])
    kwargs = dict(
        EXTRACTOR_KWARGS, features_extractor_kwargs=dict(EXTRACTOR_KWARGS["features_extractor_kwargs"])
    )
    kwargs["features_extractor_kwargs"].pop("window")
    model = PPO("MlpPolicy", env, n_steps=16, batch_size=16, n_epochs=1, seed=0, policy_kwargs=kwargs)
    model.learn(16)
    assert model.policy.features_extractor.window == 3


def test_shared_memory_is_trained_by_the_policy_loss_only() -> None:
    policy = make_policy(critic_memory="shared")
    values, log_prob, _ = policy.evaluate_actions(
        th.rand(6, 3), th.zeros(6), policy.initial_state(2), th.zeros(6)
    )
    values.sum().backward()
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in policy.core_actor.parameters())
    log_prob.sum().backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in policy.core_actor.parameters())
