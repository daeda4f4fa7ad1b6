"""memagent.policies: Stable-Baselines3 policies with the DNC as memory.

- :class:`DncPolicy`, :class:`MultiInputDncPolicy`, :class:`CnnDncPolicy` -- recurrent actor-critic
  policies whose memory core (a DNC by default) carries a state of any structure; trained by
  :class:`memagent.algos.recurrent_ppo.RecurrentDncPPO`.
- :class:`DNCExtractor` -- a stateless features extractor that runs a DNC over a window of recent
  observations, for PPO, A2C, SAC, TD3 and DQN.
- :mod:`memagent.policies.cores` -- the recurrent-core contract, :class:`LSTMCore`, :func:`build_dnc_core`.
- :mod:`memagent.policies.state` -- helpers for states of any structure (:class:`CoreStates`).
"""

from memagent.policies.cores import LSTMCore, LSTMState, build_dnc_core, check_core
from memagent.policies.extractor import DNCExtractor
from memagent.policies.recurrent import CnnDncPolicy, DncPolicy, MultiInputDncPolicy
from memagent.policies.state import CoreStates, state_nbytes_per_sample

__all__ = [
    "CnnDncPolicy",
    "CoreStates",
    "DNCExtractor",
    "DncPolicy",
    "LSTMCore",
    "LSTMState",
    "MultiInputDncPolicy",
    "build_dnc_core",
    "check_core",
    "state_nbytes_per_sample",
]
