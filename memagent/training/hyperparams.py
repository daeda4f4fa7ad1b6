"""Hyperparameters: RL-Zoo style YAML files and ``key:value`` flags, parsed without ``eval``.

A hyperparameter file maps environment ids to settings, as in the RL Baselines3 Zoo::

    memagent/NonStationaryRegression-v0:
      n_envs: 4
      n_timesteps: !!float 2e4
      policy: MlpPolicy
      learning_rate: lin_3e-4
      policy_kwargs: "dict(net_arch=[64, 64], activation_fn=nn.Tanh)"   # or a YAML mapping

Only a safe subset is understood: numbers, booleans, strings, lists and mappings; schedule strings
``lin_<x>`` (linear decay from ``x`` to 0) and ``const_<x>``; ``dict(...)`` call strings parsed with
:mod:`ast` (literals only); class names resolved from :data:`ALLOWED_NAMES`. Nothing is evaluated.
"""

from __future__ import annotations

import ast
import importlib
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from memagent.training.config import UsageError

#: Names a configuration may refer to, mapped to "module:attribute" (imported lazily).
ALLOWED_NAMES: dict[str, str] = {
    **{
        f"{p}.{a}": f"torch.nn:{a}"
        for p in ("nn", "th.nn", "torch.nn")
        for a in ("Tanh", "ReLU", "ELU", "LeakyReLU", "GELU", "SiLU", "Sigmoid", "Identity")
    },
    **{
        f"{p}.{a}": f"torch.optim:{a}"
        for p in ("th.optim", "torch.optim", "optim")
        for a in ("Adam", "AdamW", "RMSprop", "SGD")
    },
    "FlattenExtractor": "stable_baselines3.common.torch_layers:FlattenExtractor",
    "CombinedExtractor": "stable_baselines3.common.torch_layers:CombinedExtractor",
    "NatureCNN": "stable_baselines3.common.torch_layers:NatureCNN",
    "DNCExtractor": "memagent.policies:DNCExtractor",
    "MemoryConfig": "memagent.memory:MemoryConfig",
}

#: Keys consumed by ``train.py`` itself (not passed to the algorithm's constructor).
RUNNER_KEYS = frozenset(
    {
        "n_timesteps",
        "n_envs",
        "policy",
        "normalize",
        "normalize_kwargs",
        "frame_stack",
        "history",
        "env_wrapper",
        "noise_type",
        "noise_std",
        "env_kwargs",
    }
)
#: Zoo keys that would need code evaluation or are not supported; rejected with a clear message.
REJECTED_KEYS = frozenset({"callback", "vec_env_wrapper", "post_process", "eval_env_kwargs"})

_NUMBER = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_SCHEDULE = re.compile(r"^(lin|const)_([+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?)$")


def resolve_name(name: str, where: str) -> Any:
    """Import an allow-listed class by its configuration name (e.g. ``"nn.Tanh"``)."""
    if name not in ALLOWED_NAMES:
        raise UsageError(where, f"unknown name {name!r}; allowed: {', '.join(sorted(ALLOWED_NAMES))}")
    module, attr = ALLOWED_NAMES[name].split(":")
    try:
        return getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UsageError(where, f"{name!r} is not available in this installation ({exc})") from None


def parse_scalar(text: str) -> Any:
    """Parse one flag value: a Python/YAML literal (number, bool, None, list, dict, quoted string).

    Anything else is kept as a string (``lin_0.001``, ``MlpPolicy``). ``true/false/null`` are
    accepted as in YAML.
    """
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    if lowered in ("none", "null"):
        return None
    try:
        return ast.literal_eval(text.strip())
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return text


def parse_key_values(items: list[str] | None, flag: str) -> dict[str, Any]:
    """Parse ``["key:value", ...]`` flag values into a dict (values via :func:`parse_scalar`)."""
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition(":")
        key = key.strip()
        if not sep or not key.isidentifier():
            raise UsageError(flag, f"expected key:value with an identifier key, got {item!r}")
        out[key] = parse_scalar(value)
    return out


def _literal_call(node: ast.AST, where: str) -> Any:
    """Evaluate a safe expression tree: literals, lists, dicts, ``dict(k=v)`` and allowed names."""
    if isinstance(node, ast.Constant):
        return node.value
    if (
        isinstance(node, ast.UnaryOp)
        and isinstance(node.op, ast.USub)
        and isinstance(node.operand, ast.Constant)
    ):
        return -node.operand.value
    if isinstance(node, ast.List | ast.Tuple):
        items = [_literal_call(e, where) for e in node.elts]
        return items if isinstance(node, ast.List) else tuple(items)
    if isinstance(node, ast.Dict):
        return {_literal_call(k, where): _literal_call(v, where) for k, v in zip(node.keys, node.values)}
    if isinstance(node, ast.Name | ast.Attribute):
        name = ast.unparse(node)
        if name in ("True", "False", "None"):
            return {"True": True, "False": False, "None": None}[name]
        if name not in ALLOWED_NAMES:
            raise UsageError(where, f"unknown name {name!r}; allowed: {', '.join(sorted(ALLOWED_NAMES))}")
        return name  # kept symbolic; resolved by resolve_policy_kwargs
    if isinstance(node, ast.Call) and not node.args:
        func = ast.unparse(node.func)
        kwargs = {kw.arg: _literal_call(kw.value, where) for kw in node.keywords if kw.arg is not None}
        if func == "dict":
            return kwargs
        if func in ALLOWED_NAMES:
            return {"__class__": func, **kwargs}
    raise UsageError(
        where,
        f"unsupported expression {ast.unparse(node)!r}: only literals, lists, dicts, "
        "dict(key=value) and allowed class names",
    )


def parse_policy_kwargs(value: Any, where: str = "policy_kwargs") -> dict[str, Any]:
    """Normalise ``policy_kwargs`` (a mapping, or a zoo string ``"dict(...)"``) to plain data."""
    if isinstance(value, str):
        try:
            tree = ast.parse(value.strip(), mode="eval").body
        except SyntaxError:
            raise UsageError(where, f"cannot parse {value!r}; expected dict(key=value, ...)") from None
        value = _literal_call(tree, where)
    if not isinstance(value, dict):
        raise UsageError(where, f"must be a mapping, got {value!r}")
    return value


def normalize_value(key: str, value: Any, where: str) -> Any:
    """Coerce one hyperparameter: numeric strings to numbers, ``n_*`` counts to int, policy_kwargs."""
    if key in REJECTED_KEYS:
        raise UsageError(where, f"key {key!r} is not supported (it would need code evaluation)")
    if isinstance(value, str) and _NUMBER.match(value.strip()):
        value = float(value) if any(c in value for c in ".eE") else int(value)
    if key == "policy_kwargs":
        return parse_policy_kwargs(value, f"{where} policy_kwargs")
    if key in ("n_timesteps", "n_envs", "frame_stack", "history") and isinstance(value, float):
        if value != int(value):
            raise UsageError(where, f"{key} must be an integer, got {value!r}")
        value = int(value)
    if isinstance(value, str) and value.startswith(("lin_", "const_")) and not _SCHEDULE.match(value):
        raise UsageError(where, f"bad schedule {value!r} for {key}; expected lin_<float> or const_<float>")
    return value


def normalize_hyperparams(raw: dict[str, Any], where: str) -> dict[str, Any]:
    """Apply :func:`normalize_value` to every key of a hyperparameter mapping."""
    if not isinstance(raw, dict):
        raise UsageError(where, f"hyperparameters must be a mapping, got {type(raw).__name__}")
    return {str(k): normalize_value(str(k), v, where) for k, v in raw.items()}


def load_conf_file(
    path: str | Path, env_id: str, algo: str, flag: str = "--conf-file", required: bool = True
) -> dict[str, Any]:
    """Read the section for ``env_id`` from a zoo-format YAML file.

    Lookup order: ``{algo: {env_id: ...}}``, ``{env_id: ...}``, then a ``default`` section.
    Returns ``{}`` when nothing matches and ``required`` is false.
    """
    p = Path(path)
    if not p.is_file():
        raise UsageError(flag, f"no such file: {str(path)!r}")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        first = str(exc).splitlines()[0] if str(exc) else "invalid YAML"
        raise UsageError(flag, f"{str(path)!r} is not valid YAML ({first})") from None
    data = data or {}
    if not isinstance(data, dict):
        raise UsageError(flag, f"{str(path)!r} must map environment ids to settings")
    if isinstance(data.get(algo), dict) and env_id in data[algo]:
        data = data[algo]
    section = data.get(env_id, data.get("default"))
    if section is None:
        if required:
            raise UsageError(
                flag,
                f"{str(path)!r} has no section for {env_id!r} (nor 'default'); "
                f"sections: {sorted(map(str, data))}",
            )
        return {}
    return normalize_hyperparams(section, f"{flag} {p.name}[{env_id}]")


def linear_schedule(initial: float) -> Callable[[float], float]:
    """``lr(progress_remaining) = progress_remaining * initial`` (decays linearly to 0)."""

    def schedule(progress_remaining: float) -> float:
        return progress_remaining * initial

    return schedule


def _resolve_classes(value: Any, where: str) -> Any:
    if isinstance(value, dict):
        if "__class__" in value:
            cls = resolve_name(value["__class__"], where)
            return cls(**{k: _resolve_classes(v, where) for k, v in value.items() if k != "__class__"})
        return {k: _resolve_classes(v, where) for k, v in value.items()}
    if isinstance(value, list):
        return [_resolve_classes(v, where) for v in value]
    if isinstance(value, str) and value in ALLOWED_NAMES:
        return resolve_name(value, where)
    return value


def resolve_algo_kwargs(hyperparams: dict[str, Any], where: str = "hyperparams") -> dict[str, Any]:
    """Turn validated plain-data hyperparameters into constructor keyword arguments.

    Schedules become callables, allow-listed names become classes; runner keys are dropped.
    """
    out: dict[str, Any] = {}
    for key, value in hyperparams.items():
        if key in RUNNER_KEYS:
            continue
        if isinstance(value, str) and (m := _SCHEDULE.match(value)):
            kind, number = m.group(1), float(m.group(2))
            value = linear_schedule(number) if kind == "lin" else number
        elif key == "policy_kwargs":
            value = _resolve_classes(value, f"{where} policy_kwargs")
        out[key] = value
    return out
