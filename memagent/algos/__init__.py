"""Algorithms built on Stable-Baselines3.

- :class:`PrioritizedDQN`, :class:`PrioritizedSAC`, :class:`PrioritizedTD3` -- TD losses weighted by
  prioritized replay's importance weights, priorities updated with |TD error| (``prioritized.py``).
- :class:`RecurrentDncPPO` -- PPO with the DNC as recurrent memory core, truncated BPTT over fixed
  sequences, state of any structure stored at sequence starts (``recurrent_ppo.py``).
"""

from memagent.algos.prioritized import PrioritizedDQN, PrioritizedSAC, PrioritizedTD3
from memagent.algos.recurrent_ppo import RecurrentDncPPO

__all__ = ["PrioritizedDQN", "PrioritizedSAC", "PrioritizedTD3", "RecurrentDncPPO"]
