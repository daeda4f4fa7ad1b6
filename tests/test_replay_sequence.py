"""R2D2 sequence priority: eta * max|delta| + (1 - eta) * mean|delta| over the valid steps."""

import numpy as np
import pytest
import torch as th

from memagent.replay import sequence_priority


def test_hand_computed_values_numpy_and_torch():
    td = np.array([[1.0, -3.0, 2.0, 0.0], [0.5, 0.5, 0.5, 0.5]])
    # row 0: 0.9 * 3 + 0.1 * 6/4 = 2.85; row 1: 0.5
    np.testing.assert_allclose(sequence_priority(td), [2.85, 0.5])
    out = sequence_priority(th.tensor(td, dtype=th.float32, requires_grad=True), eta=0.5)
    assert isinstance(out, th.Tensor) and not out.requires_grad
    th.testing.assert_close(out, th.tensor([0.5 * 3 + 0.5 * 1.5, 0.5]))
    np.testing.assert_allclose(sequence_priority(td, eta=1.0), [3.0, 0.5])
    np.testing.assert_allclose(sequence_priority(td, eta=0.0), [1.5, 0.5])


def test_mask_ignores_padding():
    td = np.array([[1.0, 2.0, 100.0], [4.0, -100.0, 100.0]])
    mask = np.array([[True, True, False], [True, False, False]])
    # row 0: 0.9 * 2 + 0.1 * 1.5 = 1.95; row 1: 4
    np.testing.assert_allclose(sequence_priority(td, mask=mask), [1.95, 4.0])
    np.testing.assert_allclose(sequence_priority(td[:, :2], mask=mask[:, :2]), [1.95, 4.0])


def test_bad_inputs():
    with pytest.raises(ValueError, match="eta must be a number in"):
        sequence_priority(np.zeros((2, 3)), eta=1.5)
    with pytest.raises(ValueError, match=r"shape \(B, T\)"):
        sequence_priority(np.zeros(3))
    with pytest.raises(ValueError, match="no valid step in row 1"):
        sequence_priority(np.zeros((2, 3)), mask=np.array([[True, False, False], [False, False, False]]))
    with pytest.raises(ValueError, match="finite"):
        sequence_priority(np.array([[np.nan, 1.0]]))
    with pytest.raises(ValueError, match="mask must have the shape"):
        sequence_priority(np.zeros((2, 3)), mask=np.ones((3, 2), dtype=bool))
    with pytest.raises(TypeError, match="td_errors must be"):
        sequence_priority([[1.0, 2.0]])
