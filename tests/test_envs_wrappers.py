"""NonStationary changes the named physics and nothing else, at the scheduled steps; feedback and history."""

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
from gymnasium import spaces

from envs.wrappers import (
    FeedbackWrapper,
    HistoryWrapper,
    NonStationary,
    random_perturbation_tasks,
    random_physics_tasks,
)


def numeric_attrs(env):
    return {
        k: v
        for k, v in vars(env).items()
        if isinstance(v, int | float) and not isinstance(v, bool) and not k.startswith("_")
    } | {k: getattr(env, k) for k in dir(type(env)) if k.startswith("LINK_")}


def run_pair(env_id, tasks, schedule, switch_fn, actions, seed=0, **kwargs):
    """Step a wrapped env and a bare env whose physics ``switch_fn(bare, t)`` sets by hand; compare."""
    wrapped = NonStationary(gym.make(env_id), tasks, schedule=schedule, **kwargs)
    bare = gym.make(env_id)
    ow, iw = wrapped.reset(seed=seed)
    switch_fn(bare.unwrapped, 0)
    ob, _ = bare.reset(seed=seed)
    np.testing.assert_array_equal(ow, ob)
    infos = [iw]
    for t, a in enumerate(actions):
        switch_fn(bare.unwrapped, t)
        ow, rw, tw, uw, iw = wrapped.step(a)
        ob, rb, tb, ub, _ = bare.step(a)
        np.testing.assert_array_equal(ow, ob)
        assert (rw, tw, uw) == (rb, tb, ub)
        infos.append(iw)
        if tw or uw:
            break
    return wrapped, bare, infos


def test_cartpole_physics_switch_at_scheduled_step_and_derived_quantities():
    tasks = [{}, {"gravity": 15.0, "length": 0.8, "masspole": 0.3}]
    defaults = numeric_attrs(gym.make("CartPole-v1").unwrapped)

    def switch(env, t):
        if t == 4:
            env.gravity, env.length, env.masspole = 15.0, 0.8, 0.3
            env.total_mass = env.masspole + env.masscart
            env.polemass_length = env.masspole * env.length

    actions = [0, 1, 1, 0, 1, 0, 0, 1, 1, 1]
    wrapped, bare, infos = run_pair("CartPole-v1", tasks, [(0, 0), (4, 1)], switch, actions)
    assert [i["task_id"] for i in infos] == [0, 0, 0, 0, 0] + [1] * (len(infos) - 5)
    assert [i["switched"] for i in infos[1:]] == [False] * 4 + [True] + [False] * (len(infos) - 6)
    base = wrapped.unwrapped
    assert base.total_mass == pytest.approx(1.3) and base.polemass_length == pytest.approx(0.24)
    changed = {k for k, v in numeric_attrs(base).items() if defaults.get(k) != v}
    assert changed == {"gravity", "length", "masspole", "total_mass", "polemass_length"}
    # a new episode starts with task 0 again: defaults restored
    wrapped.reset(seed=1)
    for k in ("gravity", "length", "masspole", "total_mass", "polemass_length"):
        assert getattr(wrapped.unwrapped, k) == pytest.approx(defaults[k])


@pytest.mark.parametrize(
    ("env_id", "task", "attrs"),
    [
        ("Pendulum-v1", {"g": 4.0, "m": 1.5, "l": 0.7}, {"g": 4.0, "m": 1.5, "l": 0.7}),
        ("MountainCarContinuous-v0", {"power": 0.003}, {"power": 0.003}),
        ("Acrobot-v1", {"link_mass_1": 2.0, "link_length_2": 1.5},
         {"LINK_MASS_1": 2.0, "LINK_LENGTH_2": 1.5, "LINK_COM_POS_2": 0.75}),
    ],
)  # fmt: skip
def test_builtin_parameter_sets_change_named_physics_only(env_id, task, attrs):
    defaults = numeric_attrs(gym.make(env_id).unwrapped)

    def switch(env, t):
        if t == 3:
            for k, v in attrs.items():
                setattr(env, k, v)

    space = gym.make(env_id).action_space
    space.seed(0)
    actions = [space.sample() for _ in range(8)]
    wrapped, _, infos = run_pair(env_id, [{}, task], [(0, 0), (3, 1)], switch, actions)
    assert [i["switched"] for i in infos[1:]] == [False, False, False, True] + [False] * 4
    changed = {k for k, v in numeric_attrs(wrapped.unwrapped).items() if defaults.get(k) != v}
    assert changed == {k for k, v in attrs.items() if defaults[k] != v}


def test_period_and_hazard_schedules_and_determinism():
    tasks = random_physics_tasks(gym.make("CartPole-v1"), 3, ["gravity"], seed=0)
    assert tasks[0] == {} and all(4.9 <= t["gravity"] <= 19.6 for t in tasks[1:])
    env = NonStationary(gym.make("CartPole-v1", max_episode_steps=500), tasks, schedule="period", period=3)
    env.reset(seed=0)
    switched = [env.step(0)[4]["switched"] for _ in range(8)]
    assert switched == [False, False, False, True, False, False, True, False]

    def hazard_ids(seed):
        e = NonStationary(
            gym.make("Pendulum-v1"), tasks=[{}, {"g": 5.0}, {"g": 15.0}], schedule="hazard", hazard=0.2
        )
        e.reset(seed=seed)
        return [e.step(np.zeros(1, np.float32))[4]["task_id"] for _ in range(100)]

    a, b, c = hazard_ids(3), hazard_ids(3), hazard_ids(4)
    assert a == b and a != c
    n_switch = sum(x != y for x, y in zip(a, a[1:]))
    assert 8 <= n_switch <= 35  # Binomial(99, 0.2): mean 19.8, far tails excluded


def test_generic_box_perturbations_transform_observations_and_actions():
    perm = [2, 0, 1]
    tasks = [
        {"obs_scale": [2.0, -1.0, 0.5], "obs_permutation": perm, "action_negate": True, "action_scale": 0.5}
    ]
    wrapped = NonStationary(gym.make("Pendulum-v1"), tasks, schedule="none")
    bare = gym.make("Pendulum-v1")
    ow, _ = wrapped.reset(seed=2)
    ob, _ = bare.reset(seed=2)
    np.testing.assert_allclose(ow, (ob * np.array([2.0, -1.0, 0.5]))[perm], rtol=1e-6)
    for a in (np.array([1.0], np.float32), np.array([-3.0], np.float32)):
        ow, rw, *_ = wrapped.step(a)
        ob, rb, *_ = bare.step(np.clip(-0.5 * a, -2, 2))
        np.testing.assert_allclose(ow, (ob * np.array([2.0, -1.0, 0.5]))[perm], rtol=1e-6)
        assert rw == pytest.approx(rb)
        assert wrapped.observation_space.contains(ow)
    low = gym.make("Pendulum-v1").observation_space.low * np.array([2.0, -1.0, 0.5])
    high = gym.make("Pendulum-v1").observation_space.high * np.array([2.0, -1.0, 0.5])
    np.testing.assert_allclose(wrapped.observation_space.low, np.minimum(low, high)[perm])
    gen = random_perturbation_tasks(
        gym.make("Pendulum-v1"), 3, kinds=("obs_permutation", "obs_scale"), seed=0
    )
    assert len(gen) == 3 and sorted(gen[1]["obs_permutation"]) == [0, 1, 2]


def test_wrappers_pass_env_checkers():
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    makers = [
        lambda: NonStationary(gym.make("CartPole-v1"), [{}, {"gravity": 12.0}], period=5),
        lambda: NonStationary(
            gym.make("Pendulum-v1"), [{}, {"obs_scale": 2.0, "action_negate": True}], period=5
        ),
        lambda: FeedbackWrapper(gym.make("CartPole-v1")),
        lambda: FeedbackWrapper(gym.make("Pendulum-v1")),
        lambda: HistoryWrapper(gym.make("Pendulum-v1"), 4, include_action=True, include_reward=True),
    ]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for make in makers:
            check_env(make(), skip_render_check=True)
            sb3_check_env(make())


def test_bad_arguments_raise_clear_errors():
    with pytest.raises(ValueError, match="unknown parameter 'mass'.*CartPoleEnv"):
        NonStationary(gym.make("CartPole-v1"), [{"mass": 1.0}])
    with pytest.raises(ValueError, match="no numeric attribute 'gravity'"):
        NonStationary(gym.make("FrozenLake-v1"), [{"gravity": 1.0}])
    with pytest.raises(ValueError, match="Box action space"):
        NonStationary(gym.make("CartPole-v1"), [{"action_negate": True}])
    with pytest.raises(ValueError, match="permutation"):
        NonStationary(gym.make("Pendulum-v1"), [{"obs_permutation": [0, 0, 1]}])
    with pytest.raises(ValueError, match="strictly increasing"):
        NonStationary(gym.make("Pendulum-v1"), [{}, {}], schedule=[(3, 0), (1, 1)])
    with pytest.raises(ValueError, match="task must be an index"):
        NonStationary(gym.make("Pendulum-v1"), [{}, {}], schedule=[(3, 5)])
    with pytest.raises(ValueError, match="period"):
        NonStationary(gym.make("Pendulum-v1"), [{}, {}], period=-1)
    with pytest.raises(ValueError, match="finite number"):
        NonStationary(gym.make("Pendulum-v1"), [{"g": "high"}])
    with pytest.raises(ValueError, match="k must be"):
        HistoryWrapper(gym.make("Pendulum-v1"), 0)


# --------------------------------------------------------------------------------------- feedback
def test_feedback_wrapper_discrete_box_and_dict():
    env = FeedbackWrapper(gym.make("CartPole-v1"))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (7,) and np.all(obs[4:] == 0)
    obs, r, *_ = env.step(1)
    np.testing.assert_array_equal(obs[4:], [0.0, 1.0, r])
    env = FeedbackWrapper(gym.make("Pendulum-v1"), reward_scale=0.1)
    env.reset(seed=0)
    obs, r, *_ = env.step(np.array([5.0], np.float32))
    np.testing.assert_allclose(obs[3:], [2.0, 0.1 * r], rtol=1e-6)  # action clipped to the bound 2

    class DictEnv(gym.Env):
        observation_space = spaces.Dict({"pos": spaces.Box(-1, 1, (2,), np.float32), "k": spaces.Discrete(3)})
        action_space = spaces.MultiDiscrete([2, 3])

        def reset(self, *, seed=None, options=None):
            super().reset(seed=seed)
            return {"pos": np.zeros(2, np.float32), "k": 0}, {}

        def step(self, action):
            return {"pos": np.ones(2, np.float32), "k": 2}, 0.5, False, False, {}

    env = FeedbackWrapper(DictEnv())
    obs, _ = env.reset()
    assert set(obs) == {"pos", "k", "prev_action", "prev_reward"}
    obs, *_ = env.step(np.array([1, 2]))
    np.testing.assert_array_equal(obs["prev_action"], [0, 1, 0, 0, 1])
    np.testing.assert_array_equal(obs["prev_reward"], [0.5])
    assert env.observation_space.contains(obs)


def test_history_wrapper_stacks_last_k_steps():
    env = HistoryWrapper(gym.make("CartPole-v1"), 3, include_action=True, include_reward=True)
    o0, _ = env.reset(seed=0)
    assert o0.shape == (3, 7) and np.all(o0[:2] == 0)
    o1, r1, *_ = env.step(1)
    o2, r2, *_ = env.step(0)
    o3, *_ = env.step(1)
    np.testing.assert_array_equal(o1[1], o0[2])
    np.testing.assert_array_equal(o3[:2], o2[1:])
    np.testing.assert_array_equal(o2[2, 4:], [1.0, 0.0, r2])
    np.testing.assert_array_equal(o1[2, 4:], [0.0, 1.0, r1])
    assert env.observation_space.contains(o3)


@pytest.mark.parametrize("env_id", ["memagent/NonStationaryCartPole-v0", "memagent/NonStationaryPendulum-v0"])
def test_registered_nonstationary_classic_ids(env_id):
    from gymnasium.utils.env_checker import check_env

    import envs
    from envs.wrappers import make_nonstationary

    env = gym.make(env_id, period=4)
    env.reset(seed=0)
    env.action_space.seed(0)
    switched = [env.step(env.action_space.sample())[4]["switched"] for _ in range(9)]
    assert switched == [False] * 4 + [True] + [False] * 3 + [True]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(make_nonstationary(**envs.CLASSIC_IDS[env_id]), skip_render_check=True)


# ------------------------------------------------------------------------ every SB3 space, Dict history
OBS_CASES = {
    "box": (spaces.Box(-2, 2, (2,), np.float32), np.array([0.5, -1.5], np.float32), [0.5, -1.5]),
    "discrete": (spaces.Discrete(4), 3, [0, 0, 0, 1]),
    "multidiscrete": (spaces.MultiDiscrete([2, 2]), np.array([1, 0]), [0, 1, 1, 0]),
    "multibinary": (spaces.MultiBinary(2), np.array([1, 1], np.int8), [1, 1]),
}
ACTION_CASES = {  # space, action, its encoding
    "box": (spaces.Box(-1, 1, (2,), np.float32), np.array([0.5, 3.0], np.float32), [0.5, 1.0]),
    "discrete": (spaces.Discrete(3), 2, [0, 0, 1]),
    "multidiscrete": (spaces.MultiDiscrete([2, 3]), np.array([1, 2]), [0, 1, 0, 0, 1]),
    "multibinary": (spaces.MultiBinary(3), np.array([1, 0, 1], np.int8), [1, 0, 1]),
}


class FixedEnv(gym.Env):
    """Returns the same observation every step and reward 1.5; episodes of 5 steps."""

    def __init__(self, observation_space, action_space, value):
        self.observation_space, self.action_space, self.value = observation_space, action_space, value

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return copy.deepcopy(self.value), {}

    def step(self, action):
        self.t += 1
        return copy.deepcopy(self.value), 1.5, False, self.t >= 5, {}


def check_both(env):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        check_env(env, skip_render_check=True)
        sb3_check_env(env)


@pytest.mark.parametrize("act_name", sorted(ACTION_CASES))
@pytest.mark.parametrize("obs_name", [*sorted(OBS_CASES), "dict", "image"])
def test_feedback_wrapper_covers_every_sb3_space(obs_name, act_name):
    act_space, action, encoding = ACTION_CASES[act_name]
    if obs_name == "dict":
        obs_space = spaces.Dict({k: OBS_CASES[k][0] for k in ("box", "discrete")})
        value = {"box": OBS_CASES["box"][1], "discrete": 3}
    elif obs_name == "image":
        obs_space = spaces.Box(0, 255, (36, 36, 3), np.uint8)
        value = np.full((36, 36, 3), 7, np.uint8)
    else:
        obs_space, value, flat = OBS_CASES[obs_name]
    env = FeedbackWrapper(FixedEnv(obs_space, act_space, value), reward_scale=2.0)
    obs0, _ = env.reset(seed=0)
    obs1, *_ = env.step(action)
    assert env.observation_space.contains(obs0) and env.observation_space.contains(obs1)
    if obs_name in OBS_CASES:  # one flat float32 vector [flatten(o), enc(a), 2 * r]
        assert obs1.dtype == np.float32 and obs1.shape == (len(flat) + len(encoding) + 1,)
        np.testing.assert_array_equal(obs0, flat + [0] * len(encoding) + [0])
        np.testing.assert_array_equal(obs1, flat + encoding + [3.0])
    else:
        keys = {"box", "discrete"} if obs_name == "dict" else {"obs"}
        assert set(obs1) == keys | {"prev_action", "prev_reward"}
        np.testing.assert_array_equal(obs0["prev_action"], [0] * len(encoding))
        np.testing.assert_array_equal(obs1["prev_action"], encoding)
        np.testing.assert_array_equal(obs1["prev_reward"], [3.0])
        if obs_name == "image":
            assert obs1["obs"].dtype == np.uint8 and np.all(obs1["obs"] == 7)
    check_both(FeedbackWrapper(FixedEnv(obs_space, act_space, value)))


class CounterDictEnv(gym.Env):
    """Dict observations that count steps: after ``t`` steps ``pos = [t+1, -(t+1)]``, every pixel of
    ``img`` is ``10(t+1)``, ``mode = (t+1) % 3``; reward ``t + 0.5`` for step ``t``; 6 steps an episode."""

    observation_space = spaces.Dict(
        {
            "pos": spaces.Box(-10, 10, (2,), np.float32),
            "img": spaces.Box(0, 255, (2, 2, 1), np.uint8),
            "mode": spaces.Discrete(3),
        }
    )
    action_space = spaces.Box(-1, 1, (1,), np.float32)

    def _obs(self):
        n = self.t + 1
        return {
            "pos": np.array([n, -n], np.float32),
            "img": np.full((2, 2, 1), 10 * n, np.uint8),
            "mode": n % 3,
        }

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self._obs(), {}

    def step(self, action):
        reward = self.t + 0.5
        self.t += 1
        return self._obs(), reward, False, self.t >= 6, {}


def test_history_wrapper_stacks_each_dict_entry():
    env = HistoryWrapper(CounterDictEnv(), 3, include_action=True, include_reward=True)
    space = env.observation_space
    assert set(space) == {"pos", "img", "mode", "prev_action", "prev_reward"}
    assert space["pos"].shape == (3, 2) and space["pos"].dtype == np.float32
    assert np.all(space["pos"].low == -10) and np.all(space["pos"].high == 10)
    assert space["img"].shape == (3, 2, 2, 1) and space["img"].dtype == np.uint8
    assert np.all(space["img"].low == 0) and np.all(space["img"].high == 255)
    assert space["mode"].shape == (3, 3) and space["mode"].dtype == np.float32  # one-hot rows
    assert space["prev_action"].shape == (3, 1) and np.all(space["prev_action"].low == -1)
    assert space["prev_reward"].shape == (3, 1) and np.all(np.isinf(space["prev_reward"].high))
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(obs["pos"], [[0, 0], [0, 0], [1, -1]])
    np.testing.assert_array_equal(obs["img"][:, 0, 0, 0], [0, 0, 10])
    np.testing.assert_array_equal(obs["mode"], [[0, 0, 0], [0, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(obs["prev_action"], [[0], [0], [0]])
    for a in (0.25, -0.5, 0.75):
        obs, *_ = env.step(np.array([a], np.float32))
        assert space.contains(obs)
    np.testing.assert_array_equal(obs["pos"], [[2, -2], [3, -3], [4, -4]])
    np.testing.assert_array_equal(obs["img"][:, 1, 1, 0], [20, 30, 40])
    np.testing.assert_array_equal(obs["mode"], [[0, 0, 1], [1, 0, 0], [0, 1, 0]])
    np.testing.assert_array_equal(obs["prev_action"], [[0.25], [-0.5], [0.75]])
    np.testing.assert_array_equal(obs["prev_reward"], [[0.5], [1.5], [2.5]])
    obs["pos"][:] = 99  # the returned arrays are copies
    obs, _ = env.reset(seed=1)  # a new episode clears the history
    np.testing.assert_array_equal(obs["pos"], [[0, 0], [0, 0], [1, -1]])
    np.testing.assert_array_equal(obs["prev_reward"], [[0], [0], [0]])
    check_both(HistoryWrapper(CounterDictEnv(), 2, include_action=True))
    check_both(HistoryWrapper(FeedbackWrapper(CounterDictEnv()), 2))


def test_history_wrapper_rejects_unsupported_dict_entries():
    def dict_env(**entries):
        return FixedEnv(spaces.Dict(entries), spaces.Discrete(2), None)

    box = spaces.Box(-1, 1, (2,), np.float32)
    with pytest.raises(TypeError, match="key 'inner'.*Dict"):
        HistoryWrapper(dict_env(pos=box, inner=spaces.Dict({"x": box})), 2)
    with pytest.raises(TypeError, match="key 'pair'"):
        HistoryWrapper(dict_env(pair=spaces.Tuple((box, box))), 2)
    with pytest.raises(ValueError, match="prev_action"):
        HistoryWrapper(dict_env(prev_action=box), 2, include_action=True)
    with pytest.raises(TypeError, match="Tuple"):
        HistoryWrapper(FixedEnv(spaces.Tuple((box, box)), spaces.Discrete(2), None), 2)


def test_multi_input_ppo_trains_on_dict_history():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    venv = DummyVecEnv(
        [lambda: HistoryWrapper(CounterDictEnv(), 3, include_action=True, include_reward=True)]
    )
    model = PPO("MultiInputPolicy", venv, n_steps=16, batch_size=8, n_epochs=1, seed=0, device="cpu")
    model.learn(total_timesteps=32)
    assert model.num_timesteps == 32
    action, _ = model.predict(venv.reset(), deterministic=True)
    assert action.shape == (1, 1)


class CueEnv(gym.Env):
    """A random sign is shown at step 0 only; at step 2 the agent must name it (reward +1, else -1).

    Without a memory of step 0 the expected reward is 0; with a history of 3 steps it is learnable."""

    observation_space = spaces.Dict({"cue": spaces.Box(-1, 1, (1,), np.float32), "clock": spaces.Discrete(3)})
    action_space = spaces.Discrete(2)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.sign = 0, int(self.np_random.integers(2))
        return {"cue": np.array([2.0 * self.sign - 1.0], np.float32), "clock": 0}, {}

    def step(self, action):
        self.t += 1
        reward = 0.0 if self.t < 2 else (1.0 if int(action) == self.sign else -1.0)
        return {"cue": np.zeros(1, np.float32), "clock": self.t}, reward, False, self.t >= 2, {}


def test_dict_history_lets_a_memoryless_policy_solve_a_recall_task():
    from stable_baselines3 import PPO
    from stable_baselines3.common.vec_env import DummyVecEnv

    def trained_score(k):
        venv = DummyVecEnv([lambda: HistoryWrapper(CueEnv(), k) for _ in range(4)])
        venv.seed(0)
        model = PPO(
            "MultiInputPolicy",
            venv,
            n_steps=32,
            batch_size=64,
            n_epochs=4,
            learning_rate=3e-3,
            seed=0,
            device="cpu",
        )
        model.learn(3000)
        env, total = HistoryWrapper(CueEnv(), k), 0.0
        for episode in range(100):
            obs, _ = env.reset(seed=1000 + episode)
            for _ in range(2):
                obs, reward, *_ = env.step(model.predict(obs, deterministic=True)[0])
                total += reward
        return total / 100

    assert trained_score(3) >= 0.9  # the cue is still in the window at step 2
    assert trained_score(1) <= 0.4  # chance is 0 (±0.1 over 100 episodes)
