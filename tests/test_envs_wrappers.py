"""NonStationary changes the named physics and nothing else, at the scheduled steps; feedback and history."""

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
