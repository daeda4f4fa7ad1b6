"""memagent.continual: a supervised continual learner (DNC / MLP / task-id oracle; no, uniform or
prioritized replay), the accuracy-matrix metrics and the tutorial's demonstration."""

from memagent.continual.learner import (
    MODELS,
    ContinualConfig,
    ContinualLearner,
    ContinualResult,
    tutorial_tasks,
)
from memagent.continual.metrics import (
    ContinualMetrics,
    average_error,
    average_forgetting,
    backward_transfer,
    compute_metrics,
    forward_transfer,
    matrix_markdown,
)
from memagent.continual.replay import REPLAY_MODES, SequenceReplay

__all__ = [
    "MODELS",
    "REPLAY_MODES",
    "ContinualConfig",
    "ContinualLearner",
    "ContinualMetrics",
    "ContinualResult",
    "SequenceReplay",
    "average_error",
    "average_forgetting",
    "backward_transfer",
    "compute_metrics",
    "forward_transfer",
    "matrix_markdown",
    "tutorial_tasks",
]
