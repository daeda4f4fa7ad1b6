"""The continual learner: replay priorities, held-out data, batched updates, baselines, adaptation."""

import numpy as np
import pytest
import torch

from memagent.continual import ContinualConfig, ContinualLearner, SequenceReplay, tutorial_tasks
from memagent.memory import MemoryConfig

SMALL_MEM = MemoryConfig(memory_size=4, word_size=4, num_read_heads=1, temporal_links=False)


def _learner(**kw) -> ContinualLearner:
    fns, names = tutorial_tasks()
    base = dict(
        dim=8,
        hidden_size=16,
        n_train=10,
        epochs=2,
        seq_len=5,
        batch_sequences=2,
        replay_sequences=4,
        n_eval_sequences=4,
        memory=SMALL_MEM,
    )
    base.update(kw)
    return ContinualLearner(fns[:2], ContinualConfig(**base), names[:2])


def test_sequence_replay_weights_hand_computed():
    buf = SequenceReplay(4, 2, 1, mode="prioritized", alpha=1.0, beta=1.0)
    buf.add(torch.zeros(2, 2, 1), torch.zeros(2, 2, 1), torch.tensor([0, 1]))
    buf.update_priorities(np.array([0, 1]), np.array([1.0, 3.0]))
    assert buf.priorities[:2] == pytest.approx([1.0 + 1e-4, 3.0 + 1e-4])
    rng = np.random.default_rng(0)
    *_, w, idx = buf.sample(4, rng)
    # P = [1/4, 3/4]; w = (N P)^-1 / max -> slot 0: 2, slot 1: 2/3 -> normalised 1 and 1/3
    expected = {0: 1.0, 1: 1.0 / 3.0}
    assert set(idx.tolist()) == {0, 1}
    for i, wi in zip(idx, w):
        assert wi.item() == pytest.approx(expected[int(i)], rel=1e-3)
    # new items enter at the maximum priority seen so far
    buf.add(torch.zeros(1, 2, 1), torch.zeros(1, 2, 1), torch.tensor([0]))
    assert buf.priorities[2] == pytest.approx(3.0 + 1e-4)


def test_replay_priorities_change_after_update():
    learner = _learner(replay="prioritized")
    x, y = learner.training_data(0)
    xs, ys = x.reshape(2, 5, 8), y.reshape(2, 5, 8)
    learner.update(xs, ys, 0)  # fills the buffer at priority 1
    before = learner.replay.priorities[:2].copy()
    assert before == pytest.approx([1.0, 1.0])
    learner.update(xs, ys, 0)  # replays slots 0, 1 and sets their priorities from the new losses
    after = learner.replay.priorities[:2]
    assert not np.allclose(before, after)
    assert np.all(after < 1.0)  # MSE of these near-constant targets is far below 1


def test_uniform_replay_has_unit_weights_and_keeps_priorities():
    learner = _learner(replay="uniform")
    x, y = learner.training_data(0)
    learner.update(x.reshape(2, 5, 8), y.reshape(2, 5, 8), 0)
    *_, w, _ = learner.replay.sample(4, np.random.default_rng(0))
    assert torch.equal(w, torch.ones(4))


def test_held_out_data_differs_from_training_data():
    learner = _learner()
    for task in range(2):
        x_train, _ = learner.training_data(task)
        x_eval, y_eval = learner.eval_data(task)
        flat = x_eval.reshape(-1, 8)
        dist = torch.cdist(flat, x_train)
        assert dist.min() > 1e-3  # no held-out input equals a training input
        # same task, same function
        fns, _ = tutorial_tasks()
        np.testing.assert_allclose(
            y_eval.reshape(-1, 8).numpy(), fns[task](flat.numpy()), rtol=1e-5, atol=1e-6
        )
    # the same seed gives the same data; a different seed different data
    torch.testing.assert_close(learner.training_data(0)[0], _learner().training_data(0)[0])
    assert not torch.allclose(learner.training_data(0)[0], _learner(seed=1).training_data(0)[0])


def test_model_inputs_carry_previous_target_and_flag():
    learner = _learner(model="mlp")
    x = torch.randn(1, 3, 8)
    y = torch.randn(1, 3, 8)
    inp = learner.model_inputs(x, y, torch.tensor([0]))
    assert inp.shape == (1, 3, 17)
    torch.testing.assert_close(inp[0, 1:, 8:16], y[0, :2])
    assert torch.all(inp[0, 0, 8:] == 0)
    assert inp[0, 1:, 16].tolist() == [1.0, 1.0]
    oracle = _learner(model="oracle").model_inputs(x, y, torch.tensor([1]))
    assert oracle.shape == (1, 3, 19) and oracle[0, :, 18].tolist() == [1.0, 1.0, 1.0]
    torch.testing.assert_close(oracle[..., :17], inp)


@pytest.mark.parametrize("model", ["dnc", "mlp", "oracle"])
@pytest.mark.parametrize("replay", ["none", "uniform", "prioritized"])
def test_run_fills_error_matrix(model, replay):
    result = _learner(model=model, replay=replay).run()
    assert result.errors.shape == (2, 2)
    assert np.all(np.isfinite(result.errors)) and np.all(result.errors > 0)
    assert result.metrics.acc == pytest.approx(result.errors[-1].mean())
    assert result.samples_per_second > 0
    assert len(result.train_losses) == 2 and len(result.train_losses[0]) == 2


def test_persistent_memory_and_adaptation_report():
    learner = _learner(model="dnc", persist_memory=True)
    result = learner.run(adapt_support=5, adapt_steps=(1, 3), adapt_lr=0.05)
    assert set(result.adaptation) == {0, 1}
    report = result.adaptation[1]
    assert set(report) == {0, 1, 3}
    assert report[3] != report[0]  # adapted parameters change predictions
    # a step size far past the stable range: plain SGD blows up, backtracking on the support loss does not
    plain = learner.adaptation_errors(1, 5, (3,), inner_lr=1e3)
    safe = learner.adaptation_errors(1, 5, (3,), inner_lr=1e3, backtracking=30)
    assert safe[0] == plain[0] and np.isfinite(safe[3]) and safe[3] < 10 * safe[0]
    assert not plain[3] < 10 * plain[0]


def test_learning_smoke_mlp_prioritized():
    """A small learning check: replay keeps the first task's error well below naive fine-tuning's."""
    fns, names = tutorial_tasks()
    cfg = dict(model="mlp", dim=32, hidden_size=64, n_train=50, epochs=10, n_eval_sequences=8)
    naive = ContinualLearner(fns[:2], ContinualConfig(replay="none", **cfg), names[:2]).run()
    replay = ContinualLearner(fns[:2], ContinualConfig(replay="prioritized", **cfg), names[:2]).run()
    assert replay.errors[1, 0] < 0.5 * naive.errors[1, 0]
    assert replay.errors[0, 0] < 0.05


def test_bad_config():
    with pytest.raises(ValueError, match="model"):
        ContinualConfig(model="lstm")
    with pytest.raises(ValueError, match="replay"):
        ContinualConfig(replay="fifo")
    with pytest.raises(ValueError, match="seq_len"):
        ContinualConfig(n_train=50, seq_len=7)
    with pytest.raises(ValueError, match="persist_memory"):
        ContinualConfig(model="mlp", persist_memory=True)
