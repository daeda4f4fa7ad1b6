"""PrioritizedReplayBuffer: SB3 storage semantics, priorities, weights, beta schedule, save/load."""

import numpy as np
import pytest
import torch as th
from gymnasium import spaces
from scipy import stats
from stable_baselines3.common.buffers import NStepReplayBuffer, ReplayBuffer

from memagent.replay import PrioritizedReplayBuffer, PrioritizedReplayBufferSamples

OBS = spaces.Box(-np.inf, np.inf, shape=(3,), dtype=np.float32)
ACT = spaces.Box(-1.0, 1.0, shape=(2,), dtype=np.float32)


def _fill(buffers, n_envs, steps, seed=0, done_prob=0.1, timeout_prob=0.05):
    """Add the same random transitions to every buffer; obs[..., 0] encodes (step, env)."""
    rng = np.random.default_rng(seed)
    for t in range(steps):
        obs = rng.standard_normal((n_envs, 3)).astype(np.float32)
        obs[:, 0] = t * 100 + np.arange(n_envs)
        next_obs = rng.standard_normal((n_envs, 3)).astype(np.float32)
        action = rng.uniform(-1, 1, (n_envs, 2)).astype(np.float32)
        reward = rng.standard_normal(n_envs).astype(np.float32)
        done = rng.random(n_envs) < done_prob
        infos = [{"TimeLimit.truncated": bool(d and rng.random() < timeout_prob / done_prob)} for d in done]
        for buffer in buffers:
            buffer.add(obs, next_obs, action, reward, done, infos)


def _make(cls=PrioritizedReplayBuffer, size=40, n_envs=3, **kwargs):
    return cls(size, OBS, ACT, device="cpu", n_envs=n_envs, **kwargs)


def _sb3_batch(sb3_buffer, rows, seed):
    """SB3's own gather for rows (B,), with the env indices its RNG will draw after seeding."""
    np.random.seed(seed)  # noqa: NPY002 -- SB3 draws env indices from the legacy global generator
    envs = np.random.randint(0, sb3_buffer.n_envs, size=rows.shape)  # noqa: NPY002
    np.random.seed(seed)  # noqa: NPY002
    return envs, sb3_buffer._get_samples(rows)


@pytest.mark.parametrize(
    "sb3_cls,kwargs",
    [
        (ReplayBuffer, {}),
        (ReplayBuffer, {"handle_timeout_termination": False}),
        (ReplayBuffer, {"optimize_memory_usage": True, "handle_timeout_termination": False}),
        (NStepReplayBuffer, {"n_steps": 3, "gamma": 0.9}),
    ],
)
@pytest.mark.parametrize("steps", [9, 25])  # before and after wrap-around (13 rows)
def test_gather_equals_sb3_for_the_same_transitions(sb3_cls, kwargs, steps):
    sb3 = _make(sb3_cls, **kwargs)
    ours = _make(**kwargs)
    _fill([sb3, ours], n_envs=3, steps=steps)
    rng = np.random.default_rng(1)
    if kwargs.get("optimize_memory_usage") and sb3.full:  # SB3 never samples row `pos`
        rows = (rng.integers(1, sb3.buffer_size, 64) + sb3.pos) % sb3.buffer_size
    else:
        rows = rng.integers(0, sb3.size(), 64)
    envs, want = _sb3_batch(sb3, rows, seed=7)
    got = ours._gather(rows * 3 + envs, np.ones((64, 1), np.float32), env=None)
    for name in ("observations", "actions", "next_observations", "dones", "rewards", "discounts"):
        w, g = getattr(want, name), getattr(got, name)
        if w is None:
            assert g is None, name
        else:
            np.testing.assert_allclose(g, w.numpy(), rtol=1e-6, err_msg=name)
            assert g.dtype == w.numpy().dtype, name


def test_multi_env_indices_address_row_and_env():
    buffer = _make(size=30, n_envs=3, eps=0.0, alpha=1.0)  # 10 rows x 3 envs
    _fill([buffer], n_envs=3, steps=10, done_prob=0.0)
    slots = np.arange(30)
    td = np.zeros(30)
    td[17] = 1.0  # row 5, env 2: the only slot with a positive priority
    buffer.update_priorities(slots, td)
    batch = buffer.sample(32)
    assert isinstance(batch, PrioritizedReplayBufferSamples)
    np.testing.assert_array_equal(batch.indices, 17)
    np.testing.assert_array_equal(batch.observations[:, 0].numpy(), 5 * 100 + 2)
    np.testing.assert_array_equal(batch.actions.numpy(), np.repeat(buffer.actions[5, 2][None], 32, 0))
    # With all priorities positive, every sampled observation belongs to its returned index.
    buffer.update_priorities(slots, np.arange(30) + 1.0)
    batch = buffer.sample(256)
    rows, envs = np.divmod(batch.indices, 3)
    np.testing.assert_array_equal(batch.observations[:, 0].numpy(), rows * 100 + envs)
    np.testing.assert_array_equal(batch.rewards.numpy()[:, 0], buffer.rewards[rows, envs])


def test_sampling_frequencies_follow_p_alpha():
    alpha = 0.7
    buffer = _make(size=300, n_envs=3, alpha=alpha, eps=0.0, seed=0)
    _fill([buffer], n_envs=3, steps=100)
    rng = np.random.default_rng(3)
    td = rng.exponential(1.0, 300)
    buffer.update_priorities(np.arange(300), td)
    counts = np.bincount(np.concatenate([buffer.sample(256).indices for _ in range(300)]), minlength=300)
    expected = td**alpha / np.sum(td**alpha) * counts.sum()
    _, p_value = stats.chisquare(counts, expected)
    assert p_value > 0.01
    # alpha = 0 is uniform sampling
    uniform = _make(size=300, n_envs=3, alpha=0.0, seed=0)
    _fill([uniform], n_envs=3, steps=100)
    uniform.update_priorities(np.arange(300), td)
    counts = np.bincount(np.concatenate([uniform.sample(256).indices for _ in range(100)]), minlength=300)
    _, p_value = stats.chisquare(counts)  # uniform expectation
    assert p_value > 0.01


@pytest.mark.parametrize("normalization", ["buffer", "batch"])
def test_importance_weights_match_the_formula(normalization):
    alpha, beta, eps = 0.6, 0.5, 1e-3
    buffer = _make(size=60, n_envs=2, alpha=alpha, beta=beta, eps=eps, weight_normalization=normalization)
    _fill([buffer], n_envs=2, steps=30)
    td = np.random.default_rng(4).uniform(-2, 2, 60)
    buffer.update_priorities(np.arange(60), td)
    assert buffer.current_beta == beta  # no progress set: beta stays at its initial value
    batch = buffer.sample(128)
    p = (np.abs(td) + eps) ** alpha
    prob = p / p.sum()
    w = (60 * prob) ** (-beta)  # (N P(i))^-beta
    max_w = w.max() if normalization == "buffer" else w[batch.indices].max()
    np.testing.assert_allclose(batch.weights.numpy()[:, 0], w[batch.indices] / max_w, rtol=1e-6)
    assert batch.weights.shape == (128, 1) and batch.weights.dtype == th.float32
    if normalization == "buffer":  # the lowest-priority slot would get weight exactly 1
        assert batch.weights.max() <= 1.0


def test_beta_annealing_and_schedules():
    buffer = _make(beta=0.4)
    assert buffer.current_beta == pytest.approx(0.4)
    buffer.set_progress_remaining(0.5)
    assert buffer.current_beta == pytest.approx(0.7)
    buffer.set_progress_remaining(0.0)
    assert buffer.current_beta == pytest.approx(1.0)
    counted = _make(beta=0.2, beta_final=0.6, total_timesteps=30, n_envs=3)
    _fill([counted], n_envs=3, steps=5)  # 15 of 30 transitions
    assert counted.current_beta == pytest.approx(0.4)
    _fill([counted], n_envs=3, steps=20)
    assert counted.current_beta == pytest.approx(0.6)
    scheduled = _make(beta_schedule=lambda progress: 0.1 + 0.2 * progress)
    scheduled.set_progress_remaining(0.25)
    assert scheduled.current_beta == pytest.approx(0.15)
    _fill([buffer], n_envs=3, steps=2)
    bad = _make(beta_schedule=lambda progress: 2.0)
    with pytest.raises(ValueError, match="beta_schedule"):
        _ = bad.current_beta


def test_new_transitions_get_the_max_priority_and_weights_use_the_min():
    buffer = _make(size=30, n_envs=3, alpha=0.5, eps=0.0)
    _fill([buffer], n_envs=3, steps=4)
    np.testing.assert_array_equal(buffer.tree.priorities[:12], 1.0)  # initial max priority 1
    buffer.update_priorities(np.array([0, 4]), np.array([9.0, -16.0]))
    assert buffer.max_priority == 16.0
    _fill([buffer], n_envs=3, steps=1)
    np.testing.assert_array_equal(buffer.tree.priorities[12:15], 4.0)  # 16 ** 0.5


def test_optimize_memory_usage_never_samples_the_overwritten_row():
    buffer = _make(size=12, n_envs=2, optimize_memory_usage=True, handle_timeout_termination=False)
    _fill([buffer], n_envs=2, steps=15)  # 6 rows: full, pos = 3
    assert buffer.full and buffer.pos == 3
    leaves = buffer.tree.priorities.reshape(6, 2)
    np.testing.assert_array_equal(leaves[3], 0.0)
    assert np.all(np.delete(leaves, 3, axis=0) > 0)
    buffer.update_priorities(np.arange(12), np.full(12, 5.0))  # must not revive row 3
    np.testing.assert_array_equal(buffer.tree.priorities.reshape(6, 2)[3], 0.0)
    rows = buffer.sample(512).indices // 2
    assert 3 not in rows and set(rows) == {0, 1, 2, 4, 5}


def test_bad_inputs_raise_clear_errors_and_keep_the_tree():
    buffer = _make()
    with pytest.raises(ValueError, match="cannot sample from an empty PrioritizedReplayBuffer"):
        buffer.sample(4)
    _fill([buffer], n_envs=3, steps=5)
    before = buffer.tree.priorities.copy()
    with pytest.raises(ValueError, match="td_errors must be finite"):
        buffer.update_priorities(np.array([0, 1]), np.array([1.0, np.nan]))
    with pytest.raises(ValueError, match=r"indices must lie in \[0, 15\)"):
        buffer.update_priorities(np.array([0, 15]), np.array([1.0, 1.0]))
    with pytest.raises(ValueError, match="same length"):
        buffer.update_priorities(np.array([0, 1]), np.array([1.0]))
    np.testing.assert_array_equal(buffer.tree.priorities, before)
    assert buffer.max_priority == 1.0
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        buffer.sample(0)
    for name, value in [("alpha", 1.5), ("alpha", -0.1), ("beta", 2.0), ("beta_final", -1.0), ("gamma", 1.2)]:
        with pytest.raises(ValueError, match=f"{name} must be a number in"):
            _make(**{name: value})
    with pytest.raises(ValueError, match="eps must be"):
        _make(eps=-1.0)
    with pytest.raises(ValueError, match="weight_normalization"):
        _make(weight_normalization="global")
    with pytest.raises(ValueError, match="n_steps"):
        _make(n_steps=0)
    with pytest.raises(ValueError, match="optimize_memory_usage"):
        _make(n_steps=3, optimize_memory_usage=True, handle_timeout_termination=False)
    with pytest.raises(TypeError, match="Dict"):
        PrioritizedReplayBuffer(10, spaces.Dict({"a": OBS}), ACT)


def test_reset_empties_priorities_and_tensors_follow_device():
    buffer = _make(n_steps=2)
    _fill([buffer], n_envs=3, steps=5)
    batch = buffer.sample(8)
    assert batch.discounts is not None and batch.discounts.shape == (8, 1)
    assert batch.observations.device.type == "cpu"
    buffer.reset()
    assert buffer.tree.total == 0.0 and buffer.num_added == 0
    with pytest.raises(ValueError, match="empty"):
        buffer.sample(2)


def test_packed_storage_with_mixed_dtypes_matches_sb3_and_survives_pickling():
    import pickle

    obs_space = spaces.Box(0, 255, shape=(3, 4, 5), dtype=np.uint8)  # 60 bytes: forces alignment padding
    act_space = spaces.Discrete(3)  # int64 actions
    sb3 = ReplayBuffer(20, obs_space, act_space, device="cpu", n_envs=2)
    ours = PrioritizedReplayBuffer(20, obs_space, act_space, device="cpu", n_envs=2)
    assert np.shares_memory(ours.observations, ours._storage) and ours.actions.dtype == np.int64
    rng = np.random.default_rng(5)
    for _ in range(13):
        obs = rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
        next_obs = rng.integers(0, 256, (2, 3, 4, 5), dtype=np.uint8)
        action = rng.integers(0, 3, (2,))
        reward, done = rng.standard_normal(2).astype(np.float32), rng.random(2) < 0.3
        for buffer in (sb3, ours):
            buffer.add(obs, next_obs, action, reward, done, [{}, {}])
    rows = rng.integers(0, sb3.size(), 32)
    envs, want = _sb3_batch(sb3, rows, seed=3)
    got = ours._gather(rows * 2 + envs, np.ones((32, 1), np.float32), env=None)
    for name in ("observations", "actions", "next_observations", "dones", "rewards"):
        np.testing.assert_array_equal(getattr(got, name), getattr(want, name).numpy(), err_msg=name)
    clone = pickle.loads(pickle.dumps(ours))
    assert np.shares_memory(clone.rewards, clone._storage)  # views re-bound to the unpickled array
    clone.rewards[:] = 7.0
    np.testing.assert_array_equal(clone.sample(16).rewards.numpy(), 7.0)
    assert not np.any(ours.rewards == 7.0)


def test_drop_in_for_plain_sb3_algorithms():
    from stable_baselines3 import DQN

    model = DQN(
        "MlpPolicy",
        "CartPole-v1",
        policy_kwargs={"net_arch": [16]},
        learning_starts=50,
        buffer_size=500,
        replay_buffer_class=PrioritizedReplayBuffer,
        replay_buffer_kwargs=dict(alpha=0.6, beta=0.4, seed=0),
        seed=0,
    )
    model.learn(120)
    assert isinstance(model.replay_buffer, PrioritizedReplayBuffer)
    assert model.replay_buffer.size() == 120 and model._n_updates > 0
