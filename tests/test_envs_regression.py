"""NonStationaryRegression: task formulas, switch schedules, feedback, curriculum, seeding, checkers."""

import warnings

import gymnasium as gym
import numpy as np
import pytest
from scipy import stats

import envs
from envs.regression import NonStationaryRegression
from envs.schedules import parse_schedule
from envs.tasks import (
    get_task,
    half_cos_mean,
    register_task,
    resolve_tasks,
    sin_mean,
    tanh_shift,
    tutorial_task,
    unregister_task,
)


@pytest.fixture(autouse=True, params=["native", "numpy"])
def episode_path(request, monkeypatch):
    """Every test runs on the native episode kernel (when it builds) and on the numpy path."""
    monkeypatch.setenv("MEMAGENT_NATIVE", "1" if request.param == "native" else "0")
    return request.param


D = 64


def rollout(env, seed, n_steps, action_fn=None):
    """Run ``n_steps`` with actions ``action_fn(t)`` (zeros by default); returns lists of step tuples."""
    obs, info = env.reset(seed=seed)
    out = [(obs, None, None, None, info)]
    for t in range(n_steps):
        action = np.zeros(env.action_space.shape, np.float32) if action_fn is None else action_fn(t)
        obs, r, term, trunc, info = env.step(action)
        out.append((obs, r, term, trunc, info))
        if term or trunc:
            break
    return out


# ------------------------------------------------------------------------------------------ tasks
def test_task_formulas_match_tutorial_hand_computed():
    x = np.array([[0.0, 1.0, 2.0, -1.0]], dtype=np.float64)  # mean 0.5
    np.testing.assert_allclose(sin_mean(x), np.full((1, 4), np.sin(0.5)))
    np.testing.assert_allclose(half_cos_mean(x), np.full((1, 4), 0.5 * np.cos(0.5)))
    np.testing.assert_allclose(tanh_shift(2)(x), np.tanh(0.5 * x + 2))
    np.testing.assert_allclose(get_task("tanh_shift_3")(x), np.tanh(0.5 * x + 3))
    np.testing.assert_allclose(get_task("tanh_shift_-1.5")(x), np.tanh(0.5 * x - 1.5))
    assert [tutorial_task(i).name for i in range(4)] == [
        "sin_mean",
        "half_cos_mean",
        "tanh_shift_2",
        "tanh_shift_3",
    ]


def test_user_task_registry_and_pairs():
    register_task("neg_x_test", lambda x: -x)
    try:
        with pytest.raises(ValueError, match="already registered"):
            register_task("neg_x_test", lambda x: x)
        env = NonStationaryRegression(
            dim=4,
            tasks=["neg_x_test", ("double", lambda x: 2 * x)],
            schedule="none",
            task_pool=["double"],
            episode_length=3,
        )
        obs, info = env.reset(seed=0)
        _, _, _, _, info = env.step(np.zeros(4, np.float32))
        np.testing.assert_allclose(info["target"], 2 * obs[:4], rtol=1e-6)
        assert info["task_id"] == 1
    finally:
        unregister_task("neg_x_test")
    with pytest.raises(ValueError, match="unknown task"):
        get_task("neg_x_test")
    with pytest.raises(ValueError, match="built-in"):
        register_task("sin_mean", sin_mean)
    with pytest.raises(ValueError, match="same shape"):
        resolve_tasks([("bad", lambda x: x.mean(axis=-1))], 4)


# --------------------------------------------------------------------------------------- targets
@pytest.mark.parametrize("feedback", ["target", "reward", "none"])
def test_targets_rewards_and_feedback_are_the_previous_steps(feedback):
    env = NonStationaryRegression(dim=8, feedback=feedback, episode_length=30, period=7)
    rng = np.random.default_rng(1)
    actions = rng.uniform(-1.5, 1.5, size=(30, 8)).astype(np.float32)
    steps = rollout(env, seed=3, n_steps=30, action_fn=lambda t: actions[t])
    fns = [get_task(n) for n in env.task_names]
    for t in range(30):
        obs_t = steps[t][0]
        obs_next, r, term, trunc, info = steps[t + 1]
        x = obs_t[:8].astype(np.float64)
        y = fns[info["task_id"]](x[None])[0]
        np.testing.assert_allclose(info["target"], y, rtol=1e-5, atol=1e-6)
        # hand-computed reward: -MSE of the clipped prediction
        expected = -np.mean((np.clip(actions[t], -1, 1) - y) ** 2)
        assert r == pytest.approx(expected, rel=1e-5)
        assert term is False and trunc == (t == 29)
        if feedback == "target":
            np.testing.assert_array_equal(obs_next[8:16], info["target"])
            assert obs_next[16] == 1.0 and obs_next.shape == (17,)
        elif feedback == "reward":
            assert obs_next[8] == np.float32(r) and obs_next[9] == 1.0 and obs_next.shape == (10,)
        else:
            assert obs_next.shape == (8,)
    assert np.all(steps[0][0][8:] == 0.0)  # no feedback at t = 0


def test_sparse_feedback_and_noise():
    env = NonStationaryRegression(
        dim=16, reveal_every=4, feedback_noise=0.5, episode_length=400, schedule="none"
    )
    steps = rollout(env, seed=0, n_steps=400)
    diffs = []
    for t in range(1, 401):
        obs = steps[t][0]
        if t % 4 == 0:
            assert obs[32] == 1.0
            diffs.append(obs[16:32] - steps[t][4]["target"])  # steps[t] holds the info of step t-1
        else:
            assert np.all(obs[16:33] == 0.0)
    diffs = np.concatenate(diffs)
    # the noise is N(0, 0.5^2): a chi-square-scale check and a normality check with a fixed seed
    assert abs(diffs.std() - 0.5) < 0.02 and abs(diffs.mean()) < 0.02
    assert stats.kstest(diffs / 0.5, "norm").pvalue > 0.01


def test_oracle_one_hot_names_the_task_that_scores_the_next_action():
    env = NonStationaryRegression(dim=4, oracle=True, episode_length=60, period=10)
    steps = rollout(env, seed=5, n_steps=60)
    for t in range(60):
        one_hot = steps[t][0][4 + 5 :]
        assert one_hot.sum() == 1.0 and int(np.argmax(one_hot)) == steps[t + 1][4]["task_id"]


# ------------------------------------------------------------------------------------- schedules
def test_period_switches_at_scheduled_steps_and_only_there():
    env = NonStationaryRegression(dim=4, period=7, episode_length=50)
    for seed in range(5):
        steps = rollout(env, seed=seed, n_steps=50)
        ids = [s[4]["task_id"] for s in steps[1:]]
        switched = [s[4]["switched"] for s in steps[1:]]
        assert [t for t in range(50) if switched[t]] == [7, 14, 21, 28, 35, 42, 49]
        assert all((ids[t] != ids[t - 1]) == switched[t] for t in range(1, 50))
        assert steps[0][4]["task_id"] == ids[0]


def test_explicit_schedule_follows_the_list():
    sched = [(0, "half_cos_mean"), (5, "tanh_shift_3"), (6, 0), (12, "tanh_shift_3")]
    env = NonStationaryRegression(dim=4, schedule=sched, episode_length=20)
    steps = rollout(env, seed=0, n_steps=20)
    ids = [s[4]["task_id"] for s in steps[1:]]
    assert ids == [1] * 5 + [3] + [0] * 6 + [3] * 8
    assert [t for t in range(20) if steps[t + 1][4]["switched"]] == [5, 6, 12]


def test_hazard_switch_rate_matches_binomial():
    env = NonStationaryRegression(dim=2, schedule="hazard", hazard=0.1, episode_length=1000)
    steps = rollout(env, seed=11, n_steps=1000)
    n_switch = sum(s[4]["switched"] for s in steps[1:])
    assert stats.binomtest(n_switch, 999, 0.1).pvalue > 0.01


def test_pool_of_one_never_switches_and_bad_schedules_raise():
    env = NonStationaryRegression(dim=2, task_pool=["tanh_shift_2"], episode_length=60, period=5)
    steps = rollout(env, seed=0, n_steps=60)
    assert {s[4]["task_id"] for s in steps[1:]} == {2} and not any(s[4]["switched"] for s in steps[1:])
    with pytest.raises(ValueError, match="strictly increasing"):
        NonStationaryRegression(schedule=[(5, 0), (5, 1)])
    with pytest.raises(ValueError, match="outside the episode"):
        NonStationaryRegression(schedule=[(500, 0)], episode_length=100)
    with pytest.raises(ValueError, match="unknown task"):
        NonStationaryRegression(schedule=[(0, "nope")])
    with pytest.raises(ValueError, match="period"):
        NonStationaryRegression(period=0)
    with pytest.raises(ValueError, match="hazard"):
        NonStationaryRegression(schedule="hazard", hazard=1.5)
    with pytest.raises(ValueError, match="schedule must be"):
        parse_schedule("weekly", task_index=int)
    with pytest.raises(ValueError, match="feedback"):
        NonStationaryRegression(feedback="label")
    with pytest.raises(ValueError, match="dim"):
        NonStationaryRegression(dim=0)


# ------------------------------------------------------------------------------------ curriculum
def test_curriculum_phases_change_the_pool_at_next_reset():
    env = gym.make("memagent/ContinualRegression-v0", dim=4, episode_length=20)
    base = env.unwrapped
    assert base.num_phases == 4 and base.task_pool == ("sin_mean",)
    for phase in range(4):
        assert base.set_phase(phase) == (base.task_names[phase],)
        for seed in range(3):
            steps = rollout(env, seed=seed, n_steps=20)
            assert {s[4]["task_id"] for s in steps[1:]} == {phase}
    base.set_task_pool(["half_cos_mean", 3])
    seen = set()
    for seed in range(10):
        seen |= {s[4]["task_id"] for s in rollout(env, seed=seed, n_steps=20)[1:]}
    assert seen == {1, 3}
    with pytest.raises(ValueError, match="phase"):
        base.set_phase(4)
    with pytest.raises(ValueError, match="distinct"):
        base.set_task_pool([1, 1])


# ------------------------------------------------------------------------------------- seeding
def test_determinism_and_separate_eval_stream():
    def trajectory(**kw):
        env = NonStationaryRegression(
            dim=8, episode_length=40, schedule="hazard", hazard=0.2, feedback_noise=0.1, **kw
        )
        return np.stack([s[0] for s in rollout(env, seed=7, n_steps=40)])

    a, b = trajectory(), trajectory()
    np.testing.assert_array_equal(a, b)
    ev1, ev2 = trajectory(eval_mode=True), trajectory(eval_mode=True)
    np.testing.assert_array_equal(ev1, ev2)
    assert not np.allclose(a[:, :8], ev1[:, :8])
    env = NonStationaryRegression(dim=8)
    o1, _ = env.reset(seed=1)
    o2, _ = env.reset(seed=2)
    o3, _ = env.reset(seed=1)
    assert not np.array_equal(o1, o2) and np.array_equal(o1, o3)


def test_step_before_reset_and_after_truncation_raise():
    env = NonStationaryRegression(dim=2, episode_length=2)
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.zeros(2, np.float32))
    rollout(env, seed=0, n_steps=2)
    with pytest.raises(RuntimeError, match="truncated"):
        env.step(np.zeros(2, np.float32))


# ---------------------------------------------------------------------------------- registration
@pytest.mark.parametrize("env_id", sorted(envs.REGRESSION_IDS))
def test_registered_ids_pass_both_env_checkers(env_id):
    from gymnasium.utils.env_checker import check_env
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    env = gym.make(env_id, episode_length=12)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*infinity.*")
        check_env(env.unwrapped, skip_render_check=True)
        sb3_check_env(gym.make(env_id, episode_length=12).unwrapped)
    obs, info = env.reset(seed=0)
    assert env.observation_space.contains(obs) and "task_id" in info
    kwargs = envs.REGRESSION_IDS[env_id]
    assert env.unwrapped.layout.feedback == kwargs["feedback"]
    assert env.unwrapped.layout.oracle == kwargs.get("oracle", False)


def test_inputs_are_standard_normal_and_gaussians_hand_checked():
    from envs.regression import gaussians

    env = NonStationaryRegression(dim=64, episode_length=300)
    xs = np.stack([s[0][:64] for s in rollout(env, seed=0, n_steps=300)]).ravel()
    assert abs(xs.mean()) < 0.02 and abs(xs.std() - 1.0) < 0.02
    assert stats.kstest(xs, "norm").pvalue > 0.01
    # one word: low half h1 = 2^31 (u1 = (2^31 + 0.5) / 2^32 ≈ 0.5), high half h2 = 2^30 (u2 = 0.25)
    word = np.array([[(1 << 30) << 32 | (1 << 31)]], dtype=np.uint64)
    z = gaussians(word, 2)
    r = np.sqrt(-2 * np.log(0.5))
    np.testing.assert_allclose(z[0], [r * np.cos(np.pi / 2), r * np.sin(np.pi / 2)], atol=1e-6)
