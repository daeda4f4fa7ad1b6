"""Prioritized experience replay (Schaul et al., 2016) for Stable-Baselines3.

- :class:`SumTree` -- vectorised sum-tree: batched updates, stratified batched sampling.
- :class:`PrioritizedReplayBuffer` -- drop-in subclass of SB3's ``ReplayBuffer``.
- :func:`sequence_priority` -- R2D2's sequence priority for recurrent replay.
"""

from memagent.replay.prioritized import (
    PrioritizedReplayBuffer,
    PrioritizedReplayBufferSamples,
    PrioritizedSampleArrays,
)
from memagent.replay.sequence import sequence_priority
from memagent.replay.sum_tree import SumTree

__all__ = [
    "PrioritizedReplayBuffer",
    "PrioritizedReplayBufferSamples",
    "PrioritizedSampleArrays",
    "SumTree",
    "sequence_priority",
]
