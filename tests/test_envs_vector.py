"""RegressionVecEnv equals DummyVecEnv of the single env step for step; sub-env access; make_vec_env."""

import gymnasium as gym
import numpy as np
import pytest
from stable_baselines3.common.vec_env import DummyVecEnv, VecMonitor

import envs  # noqa: F401  (registers the ids)
from envs.regression import NonStationaryRegression
from envs.vector import INFO_KEYS, RegressionVecEnv, make_vec_env


@pytest.fixture(autouse=True, params=["native", "numpy"])
def episode_path(request, monkeypatch):
    """Every test runs on the native episode kernel (when it builds) and on the numpy path."""
    monkeypatch.setenv("MEMAGENT_NATIVE", "1" if request.param == "native" else "0")
    return request.param


CONFIGS = [
    {"dim": 6, "episode_length": 9, "period": 4},
    {
        "dim": 5,
        "episode_length": 7,
        "feedback": "reward",
        "feedback_noise": 0.3,
        "schedule": "hazard",
        "hazard": 0.3,
    },
    {
        "dim": 4,
        "episode_length": 8,
        "reveal_every": 3,
        "feedback_noise": 0.5,
        "oracle": True,
        "reward_scale": 2.0,
    },
    {"dim": 3, "episode_length": 6, "feedback": "none", "schedule": [(0, 1), (2, "tanh_shift_3")]},
    {
        "dim": 4,
        "episode_length": 5,
        "eval_mode": True,
        "task_pool": ["sin_mean", "tanh_shift_2"],
        "period": 2,
    },
]


def assert_infos_equal(a, b):
    assert len(a) == len(b)
    for ia, ib in zip(a, b):
        assert set(ia) == set(ib)
        for key in ia:
            np.testing.assert_array_equal(ia[key], ib[key], err_msg=key)


@pytest.mark.parametrize("kwargs", CONFIGS)
def test_batched_equals_dummy_vec_env_step_for_step(kwargs):
    n = 5
    dummy = DummyVecEnv([lambda: NonStationaryRegression(**kwargs) for _ in range(n)])
    batched = RegressionVecEnv(n, kwargs)
    for venv in (dummy, batched):
        venv.seed(123)
    np.testing.assert_array_equal(dummy.reset(), batched.reset())
    assert_infos_equal(dummy.reset_infos, batched.reset_infos)
    rng = np.random.default_rng(0)
    n_steps = 2 * kwargs["episode_length"] + 3  # crosses two autoresets
    n_done = 0
    for _ in range(n_steps):
        actions = rng.uniform(-1.3, 1.3, size=(n, kwargs["dim"])).astype(np.float32)
        od, rd, dd, id_ = dummy.step(actions)
        ob, rb, db, ib = batched.step(actions)
        np.testing.assert_array_equal(od, ob)
        np.testing.assert_array_equal(rd, rb)
        np.testing.assert_array_equal(dd, db)
        assert rb.dtype == np.float32 and ob.dtype == np.float32 and db.dtype == bool
        assert_infos_equal(id_, ib)
        n_done += int(db.all())
        assert_infos_equal(dummy.reset_infos, batched.reset_infos)
    assert n_done == 2
    # re-seeding reproduces the first episode
    batched.seed(123)
    dummy.seed(123)
    np.testing.assert_array_equal(dummy.reset(), batched.reset())


@pytest.mark.parametrize("info_keys", [("task_id", "switched"), ("target",), ()])
def test_info_keys_opt_out_keeps_the_rest_identical(info_keys):
    kwargs = {"dim": 3, "episode_length": 4, "period": 2}
    dummy = DummyVecEnv([lambda: NonStationaryRegression(**kwargs) for _ in range(3)])
    batched = RegressionVecEnv(3, kwargs, info_keys=info_keys)
    for venv in (dummy, batched):
        venv.seed(5)
    np.testing.assert_array_equal(dummy.reset(), batched.reset())
    assert batched.reset_infos == [
        {"task_id": i["task_id"]} if "task_id" in info_keys else {} for i in dummy.reset_infos
    ]
    dropped = set(INFO_KEYS) - set(info_keys)
    for t in range(5):  # crosses an autoreset
        actions = np.full((3, 3), 0.1 * t, np.float32)
        od, rd, dd, id_ = dummy.step(actions)
        ob, rb, db, ib = batched.step(actions)
        np.testing.assert_array_equal(od, ob)
        np.testing.assert_array_equal(rd, rb)
        np.testing.assert_array_equal(dd, db)
        assert_infos_equal([{k: v for k, v in i.items() if k not in dropped} for i in id_], ib)
    with pytest.raises(ValueError, match="info_keys"):
        RegressionVecEnv(2, kwargs, info_keys=("task_id", "reward"))
    with pytest.raises(ValueError, match="info_keys"):
        RegressionVecEnv(2, kwargs, info_keys="target")


def test_batched_equals_gym_make_dummy_and_seeds_differ_across_copies():
    dummy = DummyVecEnv([lambda: gym.make("memagent/NonStationaryRegressionReward-v0") for _ in range(3)])
    dummy.seed(7)
    batched = make_vec_env("memagent/NonStationaryRegressionReward-v0", n_envs=3, seed=7, monitor=False)
    assert isinstance(batched, RegressionVecEnv)
    od, ob = dummy.reset(), batched.reset()
    np.testing.assert_array_equal(od, ob)
    assert not np.array_equal(ob[0], ob[1])
    for _ in range(3):
        a = np.zeros((3, 64), np.float32)
        np.testing.assert_array_equal(dummy.step(a)[1], batched.step(a)[1])


def test_env_method_get_attr_set_attr_and_curriculum():
    venv = RegressionVecEnv(
        4, {"dim": 3, "episode_length": 4, "phases": [["sin_mean"], ["half_cos_mean"]]}, seed=0
    )
    venv.reset()
    assert venv.get_attr("task_pool") == [("sin_mean",)] * 4
    assert venv.env_method("set_phase", 1, indices=[2, 3]) == [("half_cos_mean",)] * 2
    assert venv.get_attr("phase") == [0, 0, 1, 1]
    # the new pool applies from the next episode on
    infos = [venv.step(np.zeros((4, 3), np.float32))[3] for _ in range(4)]
    assert [i["task_id"] for i in infos[-1]] == [0, 0, 0, 0]
    infos = venv.step(np.zeros((4, 3), np.float32))[3]
    assert [i["task_id"] for i in infos] == [0, 0, 1, 1]
    assert venv.get_attr("task_id") == [0, 0, 1, 1]
    venv.set_attr("eval_mode", True, indices=0)
    assert venv.get_attr("eval_mode") == [True, False, False, False]
    with pytest.raises(ValueError, match="VecEnv's own reset"):
        venv.env_method("reset")
    with pytest.raises(ValueError, match="shared by the whole batch"):
        venv.set_attr("layout", None)
    assert venv.env_is_wrapped(gym.Wrapper) == [False] * 4


def test_step_before_reset_raises_and_monitor_records_episodes():
    venv = RegressionVecEnv(2, {"dim": 2, "episode_length": 3})
    with pytest.raises(RuntimeError, match="reset"):
        venv.step(np.zeros((2, 2), np.float32))
    mon = make_vec_env(
        "memagent/NonStationaryRegression-v0", n_envs=2, seed=0, env_kwargs={"episode_length": 3}
    )
    assert isinstance(mon, VecMonitor)
    mon.reset()
    total = np.zeros(2)
    for _ in range(3):
        _, r, done, infos = mon.step(np.zeros((2, 64), np.float32))
        total += r
    assert done.all() and [i["episode"]["l"] for i in infos] == [3, 3]
    np.testing.assert_allclose([i["episode"]["r"] for i in infos], total, rtol=1e-5)


def test_actions_as_nested_lists_or_float64_score_like_float32_arrays():
    kwargs = {"dim": 2, "episode_length": 3}
    a, b = RegressionVecEnv(2, kwargs, seed=1), RegressionVecEnv(2, kwargs, seed=1)
    a.reset(), b.reset()
    actions = [[0.5, -2.0], [1.0, 0.25]]
    ra, rb = a.step(actions)[1], b.step(np.array(actions, np.float32))[1]
    np.testing.assert_array_equal(ra, rb)
    np.testing.assert_array_equal(a.step(np.array(actions))[1], b.step(np.array(actions, np.float32))[1])


def test_make_vec_env_falls_back_to_dummy_for_other_ids():
    venv = make_vec_env("CartPole-v1", n_envs=2, seed=0)
    assert isinstance(venv.unwrapped, DummyVecEnv)
    assert venv.reset().shape == (2, 4)


def test_sb3_ppo_runs_on_the_batched_env():
    from stable_baselines3 import PPO

    venv = make_vec_env("memagent/NonStationaryRegression-v0", n_envs=4, seed=0, env_kwargs={"dim": 4})
    model = PPO("MlpPolicy", venv, n_steps=8, batch_size=16, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=64)
    assert model.num_timesteps == 64


def test_deepcopy_continues_the_same_episode():
    """A deep copy (e.g. to evaluate from a snapshot) steps exactly like the original, on either path."""
    import copy

    kwargs = {"dim": 3, "episode_length": 6, "period": 2}
    venv, env = RegressionVecEnv(2, kwargs, seed=4), NonStationaryRegression(**kwargs)
    venv.reset()
    env.reset(seed=4)
    actions = np.full((2, 3), 0.2, np.float32)
    venv.step(actions)
    env.step(actions[0])
    venv_copy, env_copy = copy.deepcopy(venv), copy.deepcopy(env)
    for _ in range(8):  # crosses an autoreset
        a, b = venv.step(actions), venv_copy.step(actions)
        for x, y in zip(a[:3], b[:3]):
            np.testing.assert_array_equal(x, y)
    for _ in range(4):
        np.testing.assert_array_equal(env.step(actions[0])[0], env_copy.step(actions[0])[0])
    # each drew its next episode from its own generators (the copy never draws from the original's)
    for a, b in zip(venv.envs, venv_copy.envs):
        assert a.np_random is not b.np_random
        assert a.np_random.bit_generator.state == b.np_random.bit_generator.state
