"""Switch-aligned metrics on hand-made loss curves, and the figures."""

import numpy as np
import pytest

from memagent import plots
from memagent.bench.metrics import (
    aligned_windows,
    post_switch_regret,
    recovery_time,
    step_record,
    switch_metrics,
    switch_points,
)
from memagent.bench.stats import IntervalEstimate


def test_switch_points_and_windows():
    tasks = np.array([0, 0, 0, 1, 1, 2, 2, 2])
    np.testing.assert_array_equal(switch_points(tasks), [3, 5])
    w = aligned_windows(np.arange(8.0), np.array([3, 5]), before=2, after=4)
    np.testing.assert_array_equal(w[0], [1, 2, 3, 4, 5, 6])
    np.testing.assert_array_equal(w[1, :5], [3, 4, 5, 6, 7])
    assert np.isnan(w[1, 5])  # past the episode end


def test_recovery_time_and_regret_hand_computed():
    # Loss jumps to 1 at the switch and decays 1, .5, .25, .1, then stays at 0.
    curve = np.array([1.0, 0.5, 0.25, 0.1, 0.0, 0.0, 0.0, 0.0])
    # threshold = 0 + 0.1 * (1 - 0) = 0.1: last step above it is k=2 -> recovered from k=3.
    assert recovery_time(curve, steady=0.0, tol=0.1) == 3
    assert recovery_time(curve, steady=0.0, tol=0.3) == 2
    assert recovery_time(np.ones(5), steady=0.0, tol=0.1) == 5  # never recovers inside the window
    assert post_switch_regret(curve, 0.0) == pytest.approx(1.85)


def test_switch_metrics_over_episodes():
    # Two episodes, each with one switch at t=4 where the loss spikes to 2 then returns to 0.5.
    loss = np.array([0.5, 0.5, 0.5, 0.5, 2.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    task = np.array([0] * 4 + [1] * 8)
    eps = [{"loss": loss, "reward": -loss, "task": task}] * 2
    m, curve = switch_metrics(eps, before=2, after=8, first_k=2, tol=0.1, smooth=1)
    assert m.n_switches == 2
    np.testing.assert_allclose(curve, [0.5, 0.5, 2.0, 1.0, 0.5, 0.5, 0.5, 0.5, 0.5, 0.5])
    assert m.steady_state == pytest.approx(0.5)
    assert m.recovery_time == 2
    assert m.regret == pytest.approx(1.5 + 0.5)
    assert m.error_after_switch == pytest.approx(1.5)
    assert m.mean_return == pytest.approx(-loss.sum())


def test_no_switch_gives_nan_metrics():
    m, curve = switch_metrics([{"loss": np.ones(5), "reward": -np.ones(5), "task": np.zeros(5)}])
    assert m.n_switches == 0 and np.isnan(curve).all() and m.to_dict()["regret"] is None


def test_step_record_reads_info_or_reward():
    assert step_record({"task_id": 2}, -0.25) == (0.25, 2.0)
    assert step_record({"error": 0.1}, -5.0) == (0.1, 0.0)


def test_figures_are_written_and_not_empty(tmp_path):
    rng = np.random.default_rng(1)
    x = np.arange(5) * 100
    ys = np.random.default_rng(0).normal(size=(3, 5))
    paths = [
        plots.plot_learning_curves({"a": (x, ys), "b": (x, ys[:1] + 1)}, tmp_path / "lc.png"),
        plots.plot_switch_aligned({"a": (np.arange(-2, 3), ys)}, tmp_path / "sw.png"),
        plots.plot_interval_estimates(
            {"a": {"IQM": IntervalEstimate(1.0, 0.5, 1.5)}, "b": {"IQM": IntervalEstimate(2.0, 1.0, 2.5)}},
            tmp_path / "ie.png",
        ),
        plots.plot_memory(
            rng.random((20, 2, 8)),
            rng.random((20, 1, 8)),
            rng.random((20, 8)),
            tmp_path / "mem.png",
            task=np.array([0] * 10 + [1] * 10),
        ),
    ]
    for p in paths:
        assert p.is_file() and p.stat().st_size > 5000
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_memory_trace_finds_fields():
    from typing import NamedTuple

    import torch

    class S(NamedTuple):
        read_weights: torch.Tensor
        write_weights: torch.Tensor
        usage: torch.Tensor

    states = [S(torch.rand(1, 2, 4), torch.rand(1, 1, 4), torch.rand(1, 4)) for _ in range(3)]
    r, w, u = plots.memory_trace(states)
    assert r.shape == (3, 2, 4) and w.shape == (3, 1, 4) and u.shape == (3, 4)
    assert plots.memory_trace([(torch.zeros(1, 3), torch.zeros(1, 3))]) is None


def test_window_defaults_follow_the_switch_period():
    # Tasks last 8 steps: the post-switch window is 8 steps, the pre-switch one min(10, 8) = 8.
    task = np.repeat(np.arange(4) % 2, 8)
    loss = np.tile([1.0, 0.5, 0.1, 0.1, 0.1, 0.1, 0.1, 0.1], 4)
    m, curve = switch_metrics([{"loss": loss, "reward": -loss, "task": task}], smooth=1)
    assert (m.before, m.after, m.n_switches) == (8, 8, 3) and curve.shape == (16,)
    assert m.steady_state == pytest.approx(0.1) and m.recovery_time == 2
    assert m.regret == pytest.approx(0.9 + 0.4)
