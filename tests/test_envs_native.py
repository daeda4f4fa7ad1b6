"""The native episode kernel (envs.native): accuracy against float64, statistics, agreement with the numpy
path, user tasks next to built-in ones, fresh arrays: nothing a caller holds ever changes."""

from __future__ import annotations

import ctypes
import pickle

import numpy as np
import pytest
from scipy import stats

from envs import native
from envs.regression import NonStationaryRegression, gaussians
from envs.tasks import get_task
from envs.vector import RegressionVecEnv

if native.load() is None:  # pragma: no cover - only without a C compiler
    pytest.skip("the native episode kernel is unavailable (no C compiler)", allow_module_level=True)

#: max |native - float64 reference| of the Gaussians (|z| <= 6.8) and of the targets (|y| <= 1)
GAUSS_ATOL, TARGET_ATOL = 1e-6, 2e-7
#: max |native - numpy path|: numpy rounds the angle 2*pi*u to float32 before its cos/sin (<= ~4e-7 rad)
PATH_ATOL = 4e-6


def random_words(n: int, seed: int = 0) -> np.ndarray:
    words = np.random.default_rng(seed).integers(0, 2**64, size=(1, n), dtype=np.uint64)
    edges = np.array([0, 2**64 - 1, 2**32 - 1, 2**32, 1 << 63, 0x80000000FFFFFFFF], dtype=np.uint64)
    words[0, : len(edges)] = edges  # extreme halves: u1 at 2^-33 and at 1, u2 at 0 and near 1
    return words


def reference_gaussians(words: np.ndarray) -> np.ndarray:
    """float64 Box-Muller on the same float32 uniforms as the kernel (its only roundings are the
    uniforms'); the kernel's error is then that of its float32 log, sqrt, cos and sin."""
    halves = words.view(np.uint32)
    w = words.shape[1]
    u1 = (halves[:, :w].astype(np.float32) + np.float32(0.5)) * np.float32(2.0**-32)
    u2 = halves[:, w:].astype(np.float32) * np.float32(2.0**-32)
    radius = np.sqrt(-2.0 * np.log(u1.astype(np.float64)))
    angle = 2.0 * np.pi * u2.astype(np.float64)
    return np.concatenate([radius * np.cos(angle), radius * np.sin(angle)], axis=1)


def test_gaussians_match_float64_and_the_numpy_path():
    words = random_words(50_000)
    z = native.gaussians(words, 100_000)
    ref = reference_gaussians(words)
    assert z.dtype == np.float32 and z.shape == (1, 100_000)
    err = np.abs(z - ref)
    assert err.max() <= GAUSS_ATOL
    assert (err / np.maximum(np.abs(ref), 1.0)).max() <= 5e-7  # a few float32 ulps
    assert np.abs(z - gaussians(words, 100_000)).max() <= PATH_ATOL
    # hand-checked word (see test_envs_regression): u1 ~ 0.5, u2 = 0.25 -> (0, sqrt(2 ln 2))
    word = np.array([[(1 << 30) << 32 | (1 << 31)]], dtype=np.uint64)
    np.testing.assert_allclose(native.gaussians(word, 2)[0], [0.0, np.sqrt(2 * np.log(2))], atol=1e-6)
    assert native.gaussians(words[:, :3], 5).shape == (1, 5)  # an odd count
    with pytest.raises(ValueError, match="count"):
        native.gaussians(words[:, :3], 7)


def test_gaussians_are_standard_normal():
    z = native.gaussians(random_words(100_000, seed=1), 200_000).ravel().astype(np.float64)
    assert abs(z.mean()) < 4 * np.sqrt(1 / z.size)  # 4 standard errors
    assert abs(z.var() - 1.0) < 4 * np.sqrt(2 / z.size)
    assert stats.kstest(z, "norm").pvalue > 0.01
    assert stats.kstest(z[::2], "norm").pvalue > 0.01 and stats.kstest(z[1::2], "norm").pvalue > 0.01
    # cos and sin halves are uncorrelated
    half = z.size // 2
    assert abs(np.corrcoef(z[:half], z[half:])[0, 1]) < 4 / np.sqrt(half)


@pytest.mark.parametrize(
    "task", ["sin_mean", "half_cos_mean", "tanh_shift_2", "tanh_shift_-1.5", "tanh_shift_0"]
)
def test_builtin_targets_match_float64(task):
    env = NonStationaryRegression(dim=64, tasks=[task], schedule="none", episode_length=300)
    env.reset(seed=3)
    xs, ys = env._plan.xs[:, 0].astype(np.float64), env._plan.ys[:, 0]
    fn = get_task(task).fn
    ref = fn(xs)  # the task formula in float64 on the kernel's float32 inputs
    assert np.abs(ys - ref).max() <= TARGET_ATOL


def rollout(kwargs, seed, n_steps, native_on, monkeypatch):
    monkeypatch.setenv("MEMAGENT_NATIVE", "1" if native_on else "0")
    env = NonStationaryRegression(**kwargs)
    rng = np.random.default_rng(0)
    obs, info = env.reset(seed=seed)
    out = [(obs, 0.0, info["task_id"], False, None)]
    for _ in range(n_steps):
        obs, r, _, trunc, info = env.step(rng.uniform(-1.2, 1.2, env.action_space.shape).astype(np.float32))
        out.append((obs, r, info["task_id"], info["switched"], info["target"]))
        if trunc:
            obs, _ = env.reset()
    return out


@pytest.mark.parametrize(
    "kwargs",
    [
        {"dim": 64, "episode_length": 40, "period": 7},
        {"dim": 5, "episode_length": 30, "feedback": "reward", "feedback_noise": 0.5, "schedule": "hazard"},
        {"dim": 7, "episode_length": 25, "feedback_noise": 2.0, "oracle": True, "reveal_every": 3},
        {"dim": 3, "episode_length": 20, "feedback": "none", "tasks": ["tanh_shift_2", "half_cos_mean"]},
    ],
)
def test_native_path_agrees_with_numpy_path(kwargs, monkeypatch):
    """Same seeds: the same task sequences exactly; inputs, targets, rewards within float32 rounding."""
    a = rollout(kwargs, 11, 2 * kwargs["episode_length"] + 5, True, monkeypatch)
    b = rollout(kwargs, 11, 2 * kwargs["episode_length"] + 5, False, monkeypatch)
    for (oa, ra, ka, sa, ya), (ob, rb, kb, sb, yb) in zip(a, b):
        assert ka == kb and sa == sb
        np.testing.assert_allclose(oa, ob, rtol=0, atol=PATH_ATOL * (1 + kwargs.get("feedback_noise", 0)))
        assert ra == pytest.approx(rb, rel=1e-5, abs=1e-6)
        if ya is not None:
            np.testing.assert_allclose(ya, yb, rtol=0, atol=PATH_ATOL)


def test_user_tasks_next_to_builtin_ones_on_the_native_path(monkeypatch):
    """Rows of user tasks are computed by their numpy callables, the noise added to them too."""
    tasks = ["sin_mean", ("neg", lambda x: -x), "tanh_shift_3", ("sq", lambda x: x * x)]
    kwargs = {"dim": 6, "tasks": tasks, "episode_length": 60, "period": 4, "feedback_noise": 0.1}
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    venv = RegressionVecEnv(8, kwargs, seed=5)
    venv.reset()
    plans = venv._plans
    assert {1, 3} <= set(np.unique(plans.tasks).tolist())
    fns = [lambda x: np.sin(x.mean(-1, keepdims=True)) + 0 * x, lambda x: -x, lambda x: np.tanh(0.5 * x + 3)]
    fns.append(lambda x: x * x)
    for t in range(plans.tasks.shape[0]):
        for b in range(8):
            k = plans.tasks[t, b]
            np.testing.assert_allclose(plans.ys[t, b], fns[k](plans.xs[t, b].astype(np.float64)), atol=1e-6)
    noise = plans.feedback - plans.ys
    assert abs(noise.std() - 0.1) < 0.01 and abs(noise.mean()) < 0.01
    user = np.isin(plans.tasks, [1, 3])
    assert abs(noise[user].std() - 0.1) < 0.01  # user rows carry the noise as well
    # and the numpy path agrees
    rows_native = [s for s in rollout(kwargs, 2, 70, True, monkeypatch)]
    rows_numpy = [s for s in rollout(kwargs, 2, 70, False, monkeypatch)]
    for (oa, ra, ka, _, _), (ob, rb, kb, _, _) in zip(rows_native, rows_numpy):
        assert ka == kb and ra == pytest.approx(rb, rel=1e-5, abs=1e-6)
        np.testing.assert_allclose(oa, ob, atol=1e-5)


@pytest.mark.parametrize("native_on", [True, False])
def test_returned_arrays_never_change_under_the_caller(native_on, monkeypatch):
    """Observations, rewards, info targets and terminal observations a caller keeps (also only through a
    view, or a torch tensor sharing the memory) keep their values over many steps and episodes."""
    torch = pytest.importorskip("torch")
    monkeypatch.setenv("MEMAGENT_NATIVE", "1" if native_on else "0")
    kwargs = {"dim": 4, "episode_length": 3, "period": 2}
    venv = RegressionVecEnv(3, kwargs, seed=0)
    env = NonStationaryRegression(**kwargs)
    first = venv.reset()
    single, _ = env.reset(seed=1)
    kept = []  # (array a caller holds, its value when returned)
    obs, rewards, _, infos = venv.step(np.zeros((3, 4), np.float32))
    kept += [(first, first.copy()), (obs, obs.copy()), (rewards, rewards.copy()), (single, single.copy())]
    kept += [(infos[0]["target"], infos[0]["target"].copy()), (obs[1:, 2], obs[1:, 2].copy())]
    tensor = torch.from_numpy(obs[2])  # shares the memory; the ndarray itself is dropped below
    kept += [(tensor.numpy(), tensor.numpy().copy())]
    del obs
    for i in range(20):  # many episodes and steps
        obs, rewards, done, infos = venv.step(np.full((3, 4), 0.3, np.float32))
        single, r, _, truncated, info = env.step(np.full(4, 0.1 * i, np.float32))
        kept += [(single, single.copy()), (info["target"], info["target"].copy())]
        if truncated:
            env.reset()
        if done.all():
            kept += [(infos[1]["terminal_observation"], infos[1]["terminal_observation"].copy())]
    for array, value in kept:
        np.testing.assert_array_equal(array, value)
    assert not np.shares_memory(venv.step(np.zeros((3, 4), np.float32))[0], venv.step(np.zeros((3, 4)))[0])


def test_episode_arrays_are_fresh_and_huge_page_aligned():
    small = [native.episode_arrays([(2, 3), (5,)]) for _ in range(2)]
    assert [a.shape for a in small[0]] == [(2, 3), (5,)] and small[0][0].dtype == np.float32
    assert not np.shares_memory(small[0][0], small[1][0])  # below HUGE_FROM: separate arrays
    shapes = [(64, 201, 64), (64, 201, 64), (64, 201)]  # 6.6 MB: packed into one huge-page allocation
    first, second = native.episode_arrays(shapes), native.episode_arrays(shapes)
    assert first[0].ctypes.data % (2 << 20) == 0 and [a.shape for a in first] == shapes
    assert all(a.flags.c_contiguous and a.flags.writeable and a.ctypes.data % 64 == 0 for a in first)
    assert not any(np.shares_memory(a, b) for a in first for b in [*second, *first] if a is not b)
    for value, a in enumerate(first):  # the arrays lie inside the allocation, one after another
        a[...] = value
    assert [float(a.min()) == float(a.max()) == v for v, a in enumerate(first)] == [True] * 3
    assert native.episode_arrays([(5, 7)], huge_from=0)[0].ctypes.data % (2 << 20) == 0


def test_task_kinds_recognise_builtin_tasks_only():
    tasks = [get_task(n) for n in ("sin_mean", "half_cos_mean", "tanh_shift_2.5")]
    from envs.tasks import Task

    kinds, params = native.task_kinds([*tasks, Task("mine", lambda x: x)])
    assert kinds.tolist() == [native.TASK_SIN_MEAN, native.TASK_HALF_COS_MEAN, native.TASK_TANH_SHIFT, -1]
    assert params[2] == np.float32(2.5)


def test_disabled_kernel_means_numpy_path(monkeypatch):
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    assert native.load() is None
    with pytest.raises(RuntimeError, match="unavailable"):
        native.gaussians(random_words(8), 8)
    venv = RegressionVecEnv(2, {"dim": 3, "episode_length": 4}, seed=0)
    venv.reset()
    assert venv._plans.xs.flags.c_contiguous  # the numpy path's time-major arrays
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    venv.reset()
    assert not venv._plans.xs.flags.c_contiguous  # time-major views of the kernel's copy-major arrays


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.MT19937, np.random.Philox])
def test_draw_words_equals_random_raw_and_leaves_the_same_state(bit_generator):
    """The batched env draws every copy's words in C: PCG64 advanced inline, others through bitgen_t."""
    lib = native.load()
    ours = [np.random.Generator(bit_generator(seed)) for seed in range(4)]
    refs = [np.random.Generator(bit_generator(seed)) for seed in range(4)]
    for g in (*ours, *refs):
        g.integers(0, 7, size=3, dtype=np.uint32)  # leaves a buffered 32-bit half (has_uint32) behind
    words = np.empty((4, 1001), np.uint64)
    native.draw_words(lib, ours, words)
    for g, ref, row in zip(ours, refs, words):
        np.testing.assert_array_equal(row, ref.bit_generator.random_raw(1001))
        assert pickle.dumps(g.bit_generator.state) == pickle.dumps(ref.bit_generator.state)
        assert g.integers(0, 2**31, size=5).tolist() == ref.integers(0, 2**31, size=5).tolist()
    assert native.pcg64_exact(lib)


@pytest.mark.parametrize("bit_generator", [np.random.PCG64, np.random.SFC64])
def test_copies_sharing_one_bit_generator_draw_one_after_the_other(bit_generator):
    """Two Generators over one bit generator: the words are random_raw's, copy after copy (as DummyVecEnv
    and the numpy path draw them), never the same words twice."""
    lib = native.load()
    shared, ref = bit_generator(5), bit_generator(5)
    words = np.empty((3, 17), np.uint64)
    native.draw_words(
        lib, [np.random.Generator(shared), np.random.Generator(shared), np.random.default_rng(1)], words
    )
    np.testing.assert_array_equal(words[:2], ref.random_raw(34).reshape(2, 17))
    np.testing.assert_array_equal(words[2], np.random.default_rng(1).bit_generator.random_raw(17))
    assert pickle.dumps(shared.state) == pickle.dumps(ref.state)


def test_vec_env_copies_sharing_a_bit_generator_match_the_numpy_path(monkeypatch):
    def first_obs():
        venv = RegressionVecEnv(2, dict(dim=4, episode_length=5))
        shared = np.random.PCG64(123)
        for env in venv.envs:
            env.np_random = np.random.Generator(shared)
        return venv.reset()

    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    native_obs = first_obs()
    monkeypatch.setenv("MEMAGENT_NATIVE", "0")
    numpy_obs = first_obs()
    assert not np.array_equal(native_obs[0], native_obs[1])
    np.testing.assert_allclose(native_obs, numpy_obs, atol=PATH_ATOL)


def test_draw_words_in_opposite_orders_from_two_threads_does_not_deadlock():
    import threading

    lib = native.load()
    g1, g2 = np.random.default_rng(1), np.random.default_rng(2)

    def run(generators):
        words = np.empty((2, 64), np.uint64)
        for _ in range(2000):
            native.draw_words(lib, generators, words)

    threads = [threading.Thread(target=run, args=(order,), daemon=True) for order in ([g1, g2], [g2, g1])]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads)


def test_portable_build_gives_bitwise_the_same_episodes(tmp_path, monkeypatch):
    """-ffp-contract=off and IEEE operations only: the kernel built without -march/-m flags (another CPU,
    no AVX, no FMA) computes exactly the same inputs, targets and noise."""
    from memagent import cbuild

    monkeypatch.setenv("MEMAGENT_CACHE_DIR", str(tmp_path))
    portable = native._bind(
        ctypes.CDLL(str(cbuild.compile_library(native.SOURCE, cbuild.portable_flags(native.FLAGS))))
    )
    words = random_words(3 * 777, seed=4).reshape(3, 777)
    tasks = np.random.default_rng(0).integers(0, 4, size=(3, 21))
    kinds = np.array([0, 1, 2, -1], np.int32)
    params = np.array([0, 0, 2.5, 0], np.float32)
    outs = [
        native.build_episodes(lib, words, 700, 70, 21, 64, "target", 0.7, tasks, kinds, params)
        for lib in (native.load(), portable)
    ]
    builtin = (kinds[tasks] != -1).T  # (L, B): the kernel leaves the rows of user tasks unwritten
    for i, (a, b) in enumerate(zip(outs[0][:3], outs[1][:3])):
        np.testing.assert_array_equal(a[builtin] if i == 1 else a, b[builtin] if i == 1 else b)
    assert outs[0][3] == outs[1][3] == int((~builtin).sum())


@pytest.mark.parametrize("n", [1, 2, 3, 5, 8, 13, 64])
def test_word_source_equals_random_raw_for_any_number_of_generators(n):
    """The in-place PCG64 path (generators advanced in their own memory; eight at a time in AVX-512 lanes
    where there are, then four at a time and a remainder) gives random_raw's words and final states, for
    every batch size and for draws shorter and longer than the kernel's chunk of 32 words."""
    lib = native.load()
    assert native.pcg64_layout(lib) in (0, 1)  # numpy's PCG64 memory layout was recognised here
    ours = [np.random.default_rng(seed) for seed in range(n)]
    refs = [np.random.default_rng(seed) for seed in range(n)]
    source = native.WordSource(lib, ours)
    assert source.matches(list(ours)) and not source.matches(refs) and not source.matches(ours[:-1])
    for width in (13, 1, 70):
        words = np.empty((n, width), np.uint64)
        source(words)
        for g, ref, row in zip(ours, refs, words):
            np.testing.assert_array_equal(row, ref.bit_generator.random_raw(width))
            assert g.bit_generator.state == ref.bit_generator.state


def test_word_source_with_mixed_bit_generators_uses_next_raw():
    lib = native.load()
    makers = [np.random.PCG64, np.random.MT19937, np.random.PCG64, np.random.SFC64, np.random.Philox]
    ours = [np.random.Generator(make(seed)) for seed, make in enumerate(makers)]
    refs = [np.random.Generator(make(seed)) for seed, make in enumerate(makers)]
    words = np.empty((len(makers), 9), np.uint64)
    native.WordSource(lib, ours)(words)
    for g, ref, row in zip(ours, refs, words):
        np.testing.assert_array_equal(row, ref.bit_generator.random_raw(9))
        assert pickle.dumps(g.bit_generator.state) == pickle.dumps(ref.bit_generator.state)


def test_vec_env_rebuilds_its_word_source_when_a_generator_is_replaced(monkeypatch):
    monkeypatch.setenv("MEMAGENT_NATIVE", "1")
    venv = RegressionVecEnv(3, {"dim": 2, "episode_length": 3}, seed=0)
    venv.reset()
    first = venv._word_source
    venv.reset()
    assert venv._word_source is first  # the same generators: the same source
    venv.envs[1].np_random = np.random.default_rng(99)
    reference = np.random.default_rng(99).bit_generator.random_raw(venv._n_words)
    venv.reset()
    assert venv._word_source is not first
    np.testing.assert_array_equal(venv._words[1], reference)
    venv.seed(5)  # re-seeding replaces every generator
    venv.reset()
    single = NonStationaryRegression(dim=2, episode_length=3)
    single.reset(seed=6)
    np.testing.assert_array_equal(venv._plans.xs[:, 1], single._plan.xs[:, 0])


@pytest.mark.parametrize(
    "schedule, pools",
    [
        ({"schedule": "period", "period": 3}, [[0, 1, 2, 3], [2, 0, 3, 1], [1, 3, 0, 2]]),
        ({"schedule": "period", "period": 1}, [[0, 1], [3], [2, 1, 0]]),  # a pool of one never switches
        ({"schedule": "hazard", "hazard": 0.3}, [[0, 1, 2, 3], [1, 2], [3]]),
        ({"schedule": "hazard", "hazard": 1.0}, [[2, 0, 1], [1, 2], [0, 1, 2, 3]]),
        ({"schedule": "none"}, [[0, 1, 2, 3], [3, 1], [2]]),
    ],
)
def test_native_task_sequences_equal_the_numpy_ones(schedule, pools):
    from envs.regression import switch_flags
    from envs.schedules import parse_schedule, task_sequences, uniforms_needed

    lib = native.load()
    period, hazard = schedule.get("period", 50), schedule.get("hazard", 0.02)
    parsed = parse_schedule(schedule["schedule"], period=period, hazard=hazard, task_index=int)
    length, first = 40, 5
    pools = [np.asarray(p, np.int64) for p in pools]
    shape = (3, first + uniforms_needed(parsed, length))
    words = np.random.default_rng(1).integers(0, 2**64, shape, np.uint64)
    words[0, first] = 2**64 - 1  # the largest uniform: floor(u * P) stays below P
    uniforms = (words[:, first:] >> np.uint64(11)) * (1.0 / 2.0**53)
    expected = task_sequences(parsed, uniforms, length, pools)
    tasks, tasks_t, switched = native.task_sequences(lib, parsed, words, first, length, pools)
    np.testing.assert_array_equal(tasks, expected)
    np.testing.assert_array_equal(tasks_t, expected.T)
    np.testing.assert_array_equal(switched, switch_flags(expected.T))
    assert tasks_t.flags.c_contiguous and switched.dtype == bool
    explicit = parse_schedule([(0, 1), (3, 2)], task_index=int)
    assert native.task_sequences(lib, explicit, words, first, length, pools) is None


def test_word_source_without_the_in_place_layout_goes_through_the_public_state(monkeypatch):
    """Where numpy's PCG64 memory layout is not recognised, the words still equal random_raw's (the
    kernel then advances the generators from and back to their public ``state``)."""
    lib = native.load()
    monkeypatch.setitem(native._PCG64_LAYOUT, id(lib), None)
    ours = [np.random.default_rng(seed) for seed in range(9)]
    refs = [np.random.default_rng(seed) for seed in range(9)]
    words = np.empty((9, 40), np.uint64)
    native.WordSource(lib, ours)(words)
    for g, ref, row in zip(ours, refs, words):
        np.testing.assert_array_equal(row, ref.bit_generator.random_raw(40))
        assert g.bit_generator.state == ref.bit_generator.state


def test_unknown_numpy_struct_is_never_followed(monkeypatch):
    """For a numpy outside the versions whose PCG64 struct is known, the first member is never read as a
    pointer: no in-place layout, and the words still come from the public state."""
    monkeypatch.setattr(native, "_KNOWN_PCG64_STRUCT", False)
    assert native._pcg64_memory(np.random.PCG64(3)) is None
    lib = native.load()
    monkeypatch.setattr(native, "_PCG64_LAYOUT", {})
    assert native.pcg64_layout(lib) is None
    ours, refs = [np.random.default_rng(s) for s in range(3)], [np.random.default_rng(s) for s in range(3)]
    words = np.empty((3, 5), np.uint64)
    native.WordSource(lib, ours)(words)
    for g, ref, row in zip(ours, refs, words):
        np.testing.assert_array_equal(row, ref.bit_generator.random_raw(5))
        assert g.bit_generator.state == ref.bit_generator.state
