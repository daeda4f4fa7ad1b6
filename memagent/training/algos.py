"""Registry of the algorithms ``train.py`` knows, each imported lazily.

An entry names a class by module path, so a checkout where a module is missing still lists every
algorithm and fails only when that one is asked for, with a message naming the missing piece.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Any

from memagent.training.config import UsageError

BOX, DISCRETE, MULTI_DISCRETE, MULTI_BINARY = "Box", "Discrete", "MultiDiscrete", "MultiBinary"
ON_POLICY_SPACES = (BOX, DISCRETE, MULTI_DISCRETE, MULTI_BINARY)


@dataclass(frozen=True)
class AlgoSpec:
    """How to build one algorithm.

    :param name: the ``--algo`` value.
    :param target: ``"module:Class"`` of the SB3-compatible algorithm.
    :param policy: default policy name (``MlpPolicy``, ``MlpLstmPolicy``, ``DncPolicy``...).
    :param off_policy: whether it keeps a replay buffer (saved with checkpoints).
    :param action_spaces: names of the Gymnasium action spaces it supports.
    :param recurrent: whether the policy carries a state across steps (needs ``state`` in predict).
    :param history: default history window for DNC-extractor variants (0: no history wrapper).
    :param extractor: ``"module:Class"`` set as ``policy_kwargs["features_extractor_class"]``.
    :param defaults: default hyperparameters (overridden by files and flags).
    :param description: one line for ``--list-algos``.
    """

    name: str
    target: str
    policy: str = "MlpPolicy"
    off_policy: bool = False
    action_spaces: tuple[str, ...] = ON_POLICY_SPACES
    recurrent: bool = False
    history: int = 0
    extractor: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)
    description: str = ""

    def load(self) -> type:
        """Import the algorithm class; a missing module raises :class:`UsageError` for ``--algo``."""
        module, attr = self.target.split(":")
        try:
            cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(
                "--algo",
                f"{self.name!r} needs {module}.{attr}, which is not available in this "
                f"checkout ({type(exc).__name__}: {exc})",
            ) from None
        return cls

    def load_extractor(self) -> type | None:
        """Import the features extractor class of DNC-window variants (``None`` for others)."""
        if self.extractor is None:
            return None
        module, attr = self.extractor.split(":")
        try:
            return getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError) as exc:
            raise UsageError(
                "--algo",
                f"{self.name!r} needs {module}.{attr}, which is not available in this "
                f"checkout ({type(exc).__name__}: {exc})",
            ) from None

    def available(self) -> bool:
        """Whether the class (and extractor) import without error."""
        try:
            self.load()
            self.load_extractor()
        except UsageError:
            return False
        return True


_SB3 = "stable_baselines3"
_DNC_EXTRACTOR = "memagent.policies:DNCExtractor"
_WINDOW = 8

ALGOS: dict[str, AlgoSpec] = {
    spec.name: spec
    for spec in [
        AlgoSpec("ppo", f"{_SB3}:PPO", description="SB3 PPO, MLP policy (memoryless baseline)"),
        AlgoSpec("a2c", f"{_SB3}:A2C", description="SB3 A2C, MLP policy"),
        AlgoSpec("sac", f"{_SB3}:SAC", off_policy=True, action_spaces=(BOX,), description="SB3 SAC, MLP"),
        AlgoSpec("td3", f"{_SB3}:TD3", off_policy=True, action_spaces=(BOX,), description="SB3 TD3, MLP"),
        AlgoSpec(
            "dqn", f"{_SB3}:DQN", off_policy=True, action_spaces=(DISCRETE,), description="SB3 DQN, MLP"
        ),
        AlgoSpec(
            "ppo_lstm",
            "sb3_contrib:RecurrentPPO",
            policy="MlpLstmPolicy",
            recurrent=True,
            description="sb3-contrib RecurrentPPO with an LSTM",
        ),
        AlgoSpec(
            "ppo_dnc",
            "memagent.algos.recurrent_ppo:RecurrentDncPPO",
            policy="DncPolicy",
            recurrent=True,
            description="recurrent PPO with the DNC as its memory core",
        ),
        AlgoSpec(
            "dqn_per",
            "memagent.algos.prioritized:PrioritizedDQN",
            off_policy=True,
            action_spaces=(DISCRETE,),
            description="DQN with prioritized replay",
        ),
        AlgoSpec(
            "sac_per",
            "memagent.algos.prioritized:PrioritizedSAC",
            off_policy=True,
            action_spaces=(BOX,),
            description="SAC with prioritized replay",
        ),
        AlgoSpec(
            "td3_per",
            "memagent.algos.prioritized:PrioritizedTD3",
            off_policy=True,
            action_spaces=(BOX,),
            description="TD3 with prioritized replay",
        ),
        *[
            AlgoSpec(
                f"{base}_dnc_window",
                target,
                off_policy=off,
                action_spaces=spaces,
                history=_WINDOW,
                extractor=_DNC_EXTRACTOR,
                description=f"{base.upper()} with a DNC over a window of the last {_WINDOW} steps",
            )
            for base, target, off, spaces in [
                ("ppo", f"{_SB3}:PPO", False, ON_POLICY_SPACES),
                ("a2c", f"{_SB3}:A2C", False, ON_POLICY_SPACES),
                ("sac", f"{_SB3}:SAC", True, (BOX,)),
                ("td3", f"{_SB3}:TD3", True, (BOX,)),
                ("dqn", f"{_SB3}:DQN", True, (DISCRETE,)),
                ("sac_per", "memagent.algos.prioritized:PrioritizedSAC", True, (BOX,)),
            ]
        ],
    ]
}


def get_algo(name: str) -> AlgoSpec:
    """Look up ``--algo``; an unknown name raises :class:`UsageError` listing the known ones."""
    if name not in ALGOS:
        raise UsageError("--algo", f"unknown algorithm {name!r}; choose from {', '.join(ALGOS)}")
    return ALGOS[name]
