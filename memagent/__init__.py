"""memagent: agents that keep adapting in a changing world.

Sub-packages, one concept each:

- :mod:`memagent.memory`    -- the Differentiable Neural Computer (Graves et al., 2016).
- :mod:`memagent.replay`    -- prioritized experience replay (Schaul et al., 2016) for SB3.
- :mod:`memagent.policies`  -- SB3 policies with the DNC as memory.
- :mod:`memagent.algos`     -- PER-aware off-policy algorithms and recurrent DNC PPO.
- :mod:`memagent.continual` -- supervised continual learner and its metrics.
- :mod:`memagent.meta`      -- MAML, first-order MAML and Reptile.
- :mod:`memagent.bench`     -- sweeps, statistics and switch-recovery metrics.
"""

__version__ = "0.1.0"
