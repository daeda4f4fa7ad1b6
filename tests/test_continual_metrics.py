"""Continual-learning metrics against hand-computed error matrices."""

import numpy as np
import pytest

from memagent.continual.metrics import (
    average_error,
    average_forgetting,
    backward_transfer,
    compute_metrics,
    forward_transfer,
    matrix_markdown,
)

# R[i, j]: error on task j after training task i (T = 3).
R = np.array(
    [
        [0.10, 0.90, 0.80],
        [0.30, 0.05, 0.70],
        [0.40, 0.15, 0.20],
    ]
)
B = np.array([1.0, 1.0, 1.0])


def test_acc_is_mean_of_last_row():
    assert average_error(R) == pytest.approx((0.40 + 0.15 + 0.20) / 3)


def test_bwt_divides_by_t_minus_one():
    # ((0.40 - 0.10) + (0.15 - 0.05)) / 2 = 0.2 (positive: forgetting)
    assert backward_transfer(R) == pytest.approx(0.2)


def test_fwt_against_baseline():
    # ((R[0,1] - b1) + (R[1,2] - b2)) / 2 = ((0.9 - 1) + (0.7 - 1)) / 2 = -0.2 (negative: positive transfer)
    assert forward_transfer(R, B) == pytest.approx(-0.2)


def test_forgetting_uses_best_error_after_learning():
    # task 0: min(R[0,0], R[1,0]) = 0.10 -> 0.30; task 1: min(R[1,1]) = 0.05 -> 0.10; mean 0.2
    assert average_forgetting(R) == pytest.approx(0.2)
    # A task whose error first got worse then better: best is not the just-learned error.
    r = np.array([[0.5, 1.0, 1.0], [0.2, 0.3, 1.0], [0.4, 0.3, 0.1]])
    # task 0: 0.4 - min(0.5, 0.2) = 0.2; task 1: 0.3 - 0.3 = 0 -> 0.1; BWT = ((0.4-0.5) + 0) / 2 = -0.05
    assert average_forgetting(r) == pytest.approx(0.1)
    assert backward_transfer(r) == pytest.approx(-0.05)
    assert backward_transfer(r) <= average_forgetting(r)


def test_compute_metrics_and_single_task():
    m = compute_metrics(R, B)
    assert m.acc == pytest.approx(0.25)
    assert m.fwt == pytest.approx(-0.2)
    assert compute_metrics(R).fwt is None
    one = compute_metrics(np.array([[0.3]]), np.array([1.0]))
    assert (one.acc, one.bwt, one.forgetting, one.fwt) == (pytest.approx(0.3), 0.0, 0.0, 0.0)


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="square"):
        average_error(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="baseline"):
        forward_transfer(R, np.zeros(2))
    with pytest.raises(ValueError, match="task_names"):
        matrix_markdown(R, ["a"])


def test_markdown_table():
    text = matrix_markdown(R, ["a", "b", "c"], fmt="{:.2f}")
    lines = text.splitlines()
    assert lines[0] == "| after \\ on | a | b | c |"
    assert lines[2] == "| a | 0.10 | 0.90 | 0.80 |"
    assert len(lines) == 5
