"""A stateless DNC features extractor for every SB3 algorithm.

SB3's features extractors see neither a recurrent state nor episode starts, and off-policy algorithms
shuffle transitions. :class:`DNCExtractor` therefore reads a *window* of the last ``k`` observations (from
a history wrapper, shape ``(k, d)``, or ``VecFrameStack``, flat ``(k * d,)``), runs the DNC over it from a
fresh memory at every call and returns the output at the last step. Nothing is carried between calls, so
it plugs into PPO, A2C, SAC, TD3, DQN and prioritized replay unchanged::

    PPO("MlpPolicy", env, policy_kwargs=dict(
        features_extractor_class=DNCExtractor, features_extractor_kwargs=dict(window=4)))
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import gymnasium as gym
import torch as th
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from torch import nn

from memagent.policies.cores import build_dnc_core, check_core, make_core

__all__ = ["DNCExtractor"]


class DNCExtractor(BaseFeaturesExtractor):
    """Run a DNC over a window of recent observations from a fresh memory; features = its last output.

    The window's time axis is the first axis of a ``(k, d)`` observation, oldest step first (what a history
    wrapper gives), or, for a flat ``(k * d,)`` observation (``VecFrameStack`` on a vector env), ``window=k``
    consecutive blocks of ``d`` (oldest first, as ``VecFrameStack`` concatenates along the last axis).

    Defaults (``N = 16`` slots, ``W = 16``, ``R = 2``, 64-unit controller, 64 features) keep a call on a
    minibatch of 256 windows of 4-8 steps cheap on a CPU: a window of a few steps needs only a few slots,
    and the extractor runs on every forward pass of the algorithm (twice per critic in SAC/TD3).

    :param observation_space: ``Box`` of shape ``(k, d)`` or ``(k * d,)``.
    :param features_dim: output size of the DNC (the features the SB3 heads read).
    :param window: number of steps ``k`` in a flat observation (required for 1-D observations; for 2-D ones,
        if given, it must equal ``shape[0]``).
    :param core_class: class or factory ``core_class(input_size=d, output_size=features_dim, **core_kwargs)``
        returning a core (default: a DNC via :func:`~memagent.policies.cores.build_dnc_core`).
    :param core_kwargs: keyword arguments of ``core_class`` (e.g. ``memory_size``, ``hidden_size``).
    """

    def __init__(
        self,
        observation_space: gym.Space,
        features_dim: int = 64,
        window: int | None = None,
        core_class: Callable[..., nn.Module] = build_dnc_core,
        core_kwargs: dict[str, Any] | None = None,
    ) -> None:
        if not isinstance(observation_space, gym.spaces.Box):
            raise TypeError(
                "DNCExtractor: observation_space must be a Box of shape (k, d) or (k * d,), "
                f"got {observation_space}"
            )
        shape = observation_space.shape
        if not isinstance(features_dim, int) or features_dim < 1:
            raise ValueError(f"DNCExtractor: features_dim must be a positive int, got {features_dim!r}")
        if len(shape) == 2:
            if window is not None and window != shape[0]:
                raise ValueError(
                    f"DNCExtractor: window={window} does not match observation shape {shape} (k, d)"
                )
            steps, step_size = shape
        elif len(shape) == 1:
            if window is None:
                raise ValueError(
                    f"DNCExtractor: a flat observation of shape {shape} needs window=k "
                    "(the number of stacked steps)"
                )
            if not isinstance(window, int) or window < 1 or shape[0] % window:
                raise ValueError(
                    f"DNCExtractor: window={window!r} must be a positive divisor of the size {shape[0]}"
                )
            steps, step_size = window, shape[0] // window
        else:
            raise ValueError(
                f"DNCExtractor: observation shape {shape} is not (k, d) or (k * d,); images need a CNN first"
            )
        super().__init__(observation_space, features_dim)
        self.window = int(steps)
        self.step_size = int(step_size)
        core = make_core(core_class, core_kwargs or {}, input_size=self.step_size, output_size=features_dim)
        check_core(core, "DNCExtractor core")
        if core.output_size != features_dim:
            raise ValueError(
                f"DNCExtractor: core output_size {core.output_size} != features_dim {features_dim}"
            )
        self.core = core

    def forward(self, observations: th.Tensor) -> th.Tensor:
        """``observations`` ``(B, k, d)`` or ``(B, k * d)`` -> features ``(B, features_dim)``."""
        x = observations.reshape(observations.shape[0], self.window, self.step_size).float()
        state = self.core.initial_state(x.shape[0], device=x.device, dtype=x.dtype)
        y, _ = self.core(x, state, None)
        return y[:, -1]
