"""Internals of ``train.py``: argument parsing, algorithm registry, hyperparameters, run folders.

The public entry points are :func:`memagent.training.cli.main` (the command line) and
:func:`memagent.training.run.train` (one training run from a :class:`~memagent.training.config.TrainConfig`).
"""

from memagent.training.config import TrainConfig, UsageError

__all__ = ["TrainConfig", "UsageError"]
