"""The configuration of one training run and the user-error type of the command line."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

DEFAULT_ENV = "memagent/NonStationaryRegression-v0"


class UsageError(ValueError):
    """A bad command-line or configuration value; ``train.py`` prints it in one line and exits 2.

    :param flag: the flag (or config key) at fault, e.g. ``"--n-timesteps"``.
    :param message: what is wrong and what is allowed.
    """

    def __init__(self, flag: str, message: str) -> None:
        self.flag = flag
        self.message = message
        super().__init__(f"{flag}: {message}")


@dataclass
class TrainConfig:
    """Everything one run needs; ``train.py`` builds it from flags, the benchmark from a sweep YAML.

    Values of ``None`` mean "take it from the hyperparameter file or the algorithm's default".
    """

    algo: str = "ppo"
    env: str = DEFAULT_ENV
    n_timesteps: int | None = None
    seed: int = 0
    n_envs: int | None = None
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    hyperparams: dict[str, Any] = field(default_factory=dict)
    conf_file: str | None = None
    eval_freq: int = 10_000
    eval_episodes: int = 5
    n_eval_envs: int = 1
    save_freq: int = -1
    log_folder: str = "logs"
    tensorboard_log: str = ""
    device: str = "auto"
    progress_bar: bool = False
    frame_stack: int | None = None
    history: int | None = None
    wrappers: list[dict[str, Any]] = field(default_factory=list)
    gym_packages: list[str] = field(default_factory=list)
    vec_env: str = "dummy"
    normalize: bool | None = None
    switch_episodes: int = 5
    figures: bool = True
    verbose: int = 0
    resume: str | None = None
    run_dir: str | None = None
    command: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Plain-data view (YAML-safe) of the configuration."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainConfig:
        """Inverse of :meth:`to_dict`; unknown keys raise ``ValueError`` naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise ValueError(f"unknown TrainConfig keys {unknown}; allowed: {sorted(names)}")
        return cls(**data)
