"""One training run: resolve hyperparameters, build envs and the model, learn, write the run folder.

Run folder (RL-Zoo layout) ``<log_folder>/<algo>/<env>_<n>/``::

    command.txt          the exact command line
    args.yml             the run's TrainConfig (what --resume reads back)
    config.yml           the resolved hyperparameters (plain data: schedules and class names as strings)
    <env>.zip            final model               best_model.zip     best model on the eval env
    evaluations.npz      timesteps, results, ep_lengths (SB3 EvalCallback format)
    <rank>.monitor.csv   one monitor file per training env
    vecnormalize.pkl     with normalize: true
    switch_metrics.json  switch-aligned metrics on held-out episodes   switch_curves.npz
    run.json             summary: returns, wall-clock, env steps/s, switch metrics
    figures/*.png        learning curve, switch-aligned loss, DNC memory (DNC agents)
    checkpoint/          after an interrupt: model, replay buffer, VecNormalize, step count
"""

from __future__ import annotations

import inspect
import json
import logging
import os
import re
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, CheckpointCallback, EvalCallback
from stable_baselines3.common.noise import NormalActionNoise, OrnsteinUhlenbeckActionNoise

from memagent.bench.metrics import switch_metrics
from memagent.training.algos import AlgoSpec, get_algo
from memagent.training.config import TrainConfig, UsageError
from memagent.training.envs import (
    check_env_id,
    eval_env_kwargs,
    import_gym_packages,
    make_vec_env,
    normalize_wrappers,
    probe_env,
)
from memagent.training.evaluation import collect_episodes
from memagent.training.hyperparams import (
    RUNNER_KEYS,
    load_conf_file,
    normalize_hyperparams,
    resolve_algo_kwargs,
)

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).resolve().parents[2] / "configs"
DEFAULT_N_TIMESTEPS = 10_000
HISTORY_KWARG = "k"


def env_name(env_id: str) -> str:
    """File-system name of an env id (``memagent/Foo-v0`` -> ``memagent-Foo-v0``)."""
    return env_id.replace("/", "-").replace(":", "-")


def atomic_write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` via a temporary file and ``os.replace`` (never half-written)."""
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _plain(value: Any) -> Any:
    """YAML/JSON-safe copy (numpy scalars to Python, tuples to lists)."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


@dataclass
class RunResult:
    """What :func:`train` returns (also written to ``run.json``)."""

    run_dir: Path
    interrupted: bool
    num_timesteps: int
    summary: dict[str, Any] = field(default_factory=dict)


# --------------------------------------------------------------------------- hyperparameters


def resolve_hyperparams(cfg: TrainConfig, spec: AlgoSpec) -> dict[str, Any]:
    """Merge, lowest priority first: algorithm defaults, ``configs/<algo>.yml``, ``--conf-file``,
    ``--hyperparams``, then the explicit flags (``-n``, ``--n-envs``, ``--frame-stack``...)."""
    hp: dict[str, Any] = dict(spec.defaults)
    default_file = CONFIG_DIR / f"{cfg.algo}.yml"
    if default_file.is_file():
        hp.update(
            load_conf_file(
                default_file, cfg.env, cfg.algo, flag=f"configs/{default_file.name}", required=False
            )
        )
    if cfg.conf_file:
        hp.update(load_conf_file(cfg.conf_file, cfg.env, cfg.algo))
    hp.update(normalize_hyperparams(cfg.hyperparams, "--hyperparams"))
    for key, value in (
        ("n_timesteps", cfg.n_timesteps),
        ("n_envs", cfg.n_envs),
        ("frame_stack", cfg.frame_stack),
        ("history", cfg.history),
        ("normalize", cfg.normalize),
    ):
        if value is not None:
            hp[key] = value
    hp.setdefault("policy", spec.policy)
    hp.setdefault("n_envs", 1)
    hp.setdefault("n_timesteps", DEFAULT_N_TIMESTEPS)
    if spec.history and "history" not in hp:
        hp["history"] = spec.history
    if spec.extractor:
        pk = dict(hp.get("policy_kwargs") or {})
        pk.setdefault("features_extractor_class", "DNCExtractor")
        hp["policy_kwargs"] = pk
    for key in ("n_timesteps", "n_envs"):
        if not isinstance(hp[key], int) or isinstance(hp[key], bool) or hp[key] < 1:
            raise UsageError(f"--{key.replace('_', '-')}", f"must be a positive integer, got {hp[key]!r}")
    return hp


def _check_algo_kwargs(cls: type, hp: dict[str, Any], cli_keys: set[str]) -> None:
    params = inspect.signature(cls.__init__).parameters
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    allowed = set(params) - {"self", "policy", "env"}
    for key in hp:
        if key in RUNNER_KEYS or key in allowed:
            continue
        flag = "--hyperparams" if key in cli_keys else "--conf-file"
        raise UsageError(
            flag, f"{cls.__name__} has no hyperparameter {key!r}; allowed: {', '.join(sorted(allowed))}"
        )


def _action_noise(hp: dict[str, Any], action_space: Any) -> Any:
    kind = hp.get("noise_type")
    if kind is None:
        return None
    n = int(np.prod(action_space.shape))
    std = float(hp.get("noise_std", 0.1))
    if kind == "normal":
        return NormalActionNoise(np.zeros(n), std * np.ones(n))
    if kind == "ornstein-uhlenbeck":
        return OrnsteinUhlenbeckActionNoise(np.zeros(n), std * np.ones(n))
    raise UsageError("--hyperparams", f"noise_type must be 'normal' or 'ornstein-uhlenbeck', got {kind!r}")


# --------------------------------------------------------------------------- callbacks


class RunEvalCallback(EvalCallback):
    """SB3's EvalCallback that keeps earlier evaluations on resume and can evaluate once more at the end."""

    def __init__(self, *args: Any, resume: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if resume and self.log_path is not None and os.path.isfile(self.log_path + ".npz"):
            data = np.load(self.log_path + ".npz")
            self.evaluations_timesteps = list(data["timesteps"])
            self.evaluations_results = [list(r) for r in data["results"]]
            self.evaluations_length = [list(r) for r in data["ep_lengths"]]
            if len(self.evaluations_results):
                self.best_mean_reward = float(np.max(np.mean(data["results"], axis=1)))

    def _on_training_start(self) -> None:
        # Keep the evaluation schedule aligned with the step count when a run is resumed.
        self.n_calls = self.model.num_timesteps // self.model.n_envs
        super()._on_training_start()

    def final_evaluation(self) -> None:
        """Evaluate now unless the last evaluation was at the current step."""
        if self.evaluations_timesteps and self.evaluations_timesteps[-1] == self.num_timesteps:
            return
        freq = self.eval_freq
        self.eval_freq, self.n_calls = 1, 0
        try:
            self._on_step()
        finally:
            self.eval_freq = freq


class _StepCounter(BaseCallback):
    """Records wall-clock learning time between start and end of ``learn``."""

    def __init__(self) -> None:
        super().__init__()
        self.start = 0.0
        self.elapsed = 0.0

    def _on_training_start(self) -> None:
        self.start = time.perf_counter()

    def _on_step(self) -> bool:
        self.elapsed = time.perf_counter() - self.start
        return True


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Inside the block, SIGTERM raises ``KeyboardInterrupt`` (as Ctrl-C does) in the main thread."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    previous = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# --------------------------------------------------------------------------- run folder


def new_run_dir(log_folder: str, algo: str, env_id: str) -> Path:
    """``<log_folder>/<algo>/<env>_<n>`` with ``n`` one more than the largest existing."""
    base = Path(log_folder) / algo
    base.mkdir(parents=True, exist_ok=True)
    name = env_name(env_id)
    pattern = re.compile(rf"^{re.escape(name)}_(\d+)$")
    ids = [int(m.group(1)) for p in base.iterdir() if (m := pattern.match(p.name))]
    n = max(ids, default=0) + 1
    while True:
        run_dir = base / f"{name}_{n}"
        try:
            run_dir.mkdir()
            return run_dir
        except FileExistsError:  # a parallel run took it
            n += 1


def find_resume_dir(cfg: TrainConfig) -> Path:
    """The run folder ``--resume`` names, or with ``latest`` the newest interrupted one of algo/env."""
    if cfg.resume and cfg.resume != "latest":
        run_dir = Path(cfg.resume)
    else:
        base = Path(cfg.log_folder) / cfg.algo
        candidates = sorted(
            base.glob(f"{env_name(cfg.env)}_*/checkpoint/state.json"), key=lambda p: p.stat().st_mtime
        )
        if not candidates:
            raise UsageError("--resume", f"no interrupted run of {cfg.algo} on {cfg.env} under {str(base)!r}")
        run_dir = candidates[-1].parent.parent
    if not (run_dir / "checkpoint" / "state.json").is_file() or not (run_dir / "args.yml").is_file():
        raise UsageError(
            "--resume",
            f"{str(run_dir)!r} is not a run folder with a checkpoint "
            "(expected args.yml and checkpoint/state.json)",
        )
    return run_dir


def save_checkpoint(model: Any, run_dir: Path, total_timesteps: int, wall_time: float) -> Path:
    """Model, replay buffer, VecNormalize statistics and the step count, into ``run_dir/checkpoint``."""
    ck = run_dir / "checkpoint"
    ck.mkdir(exist_ok=True)
    model.save(ck / "model.zip")
    if getattr(model, "replay_buffer", None) is not None:
        model.save_replay_buffer(ck / "replay_buffer.pkl")
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(ck / "vecnormalize.pkl"))
    state = {
        "num_timesteps": int(model.num_timesteps),
        "total_timesteps": int(total_timesteps),
        "wall_time_s": wall_time,
        "saved_at": time.time(),
    }
    atomic_write_text(ck / "state.json", json.dumps(state, indent=2))
    return ck


# --------------------------------------------------------------------------- main entry


def _check_runtime_flags(cfg: TrainConfig) -> None:
    """``--device`` must parse as a torch device; ``--tensorboard-log`` needs the tensorboard package."""
    import importlib.util

    import torch

    if cfg.device != "auto":
        try:
            torch.device(cfg.device)
        except (RuntimeError, TypeError, ValueError):
            raise UsageError(
                "--device", f"{cfg.device!r} is not a torch device; use auto, cpu, cuda or cuda:N"
            ) from None
    if cfg.tensorboard_log and importlib.util.find_spec("tensorboard") is None:
        raise UsageError("--tensorboard-log", "needs the tensorboard package (pip install tensorboard)")
    if cfg.vec_env not in ("dummy", "subproc", "batched"):
        raise UsageError("--vec-env", f"must be dummy, subproc or batched, got {cfg.vec_env!r}")


def prepare(cfg: TrainConfig) -> tuple[AlgoSpec, type, dict[str, Any]]:
    """Validate a configuration before anything is written: algorithm, env id, kwargs, hyperparameters.

    :returns: ``(spec, algorithm class, resolved hyperparameters)``; user errors raise :class:`UsageError`.
    """
    spec = get_algo(cfg.algo)
    _check_runtime_flags(cfg)
    import_gym_packages(cfg.gym_packages)
    check_env_id(cfg.env)
    cls = spec.load()
    spec.load_extractor()
    hp = resolve_hyperparams(cfg, spec)
    cfg.wrappers = normalize_wrappers(cfg.wrappers, "--wrapper")
    conf_wrappers = normalize_wrappers(hp.get("env_wrapper"), "--conf-file env_wrapper")
    wrappers = [*conf_wrappers, *cfg.wrappers]
    if hp.get("history"):
        wrappers.append({"name": "history", "kwargs": {HISTORY_KWARG: int(hp["history"])}})
    hp["_wrappers"] = wrappers
    env = probe_env(cfg.env, {**hp.get("env_kwargs", {}), **cfg.env_kwargs}, wrappers)
    space = type(env.action_space).__name__
    env.close()
    if space not in spec.action_spaces:
        raise UsageError(
            "--algo",
            f"{cfg.algo} supports {'/'.join(spec.action_spaces)} action spaces; {cfg.env} has {space}",
        )
    aliases = getattr(cls, "policy_aliases", {})
    if isinstance(hp["policy"], str) and aliases and hp["policy"] not in aliases:
        raise UsageError(
            "--hyperparams",
            f"policy {hp['policy']!r} is not one of {cls.__name__}'s policies: {', '.join(aliases)}",
        )
    _check_algo_kwargs(cls, {k: v for k, v in hp.items() if not k.startswith("_")}, set(cfg.hyperparams))
    return spec, cls, hp


def train(cfg: TrainConfig, callbacks: list[BaseCallback] | None = None) -> RunResult:
    """Train one agent and write its run folder (see the module docstring).

    With ``cfg.resume`` set, continues the interrupted run in that folder from its checkpoint.
    An interrupt (Ctrl-C / SIGTERM / a callback raising ``KeyboardInterrupt``) saves a checkpoint
    and returns with ``interrupted=True``.
    """
    resume_dir = None
    if cfg.resume:
        resume_dir = find_resume_dir(cfg)
        stored = TrainConfig.from_dict(yaml.safe_load((resume_dir / "args.yml").read_text()))
        stored.progress_bar, stored.verbose, stored.resume = cfg.progress_bar, cfg.verbose, str(resume_dir)
        if cfg.device != "auto":
            stored.device = cfg.device
        cfg = stored
    spec, cls, hp = prepare(cfg)
    wrappers = hp.pop("_wrappers")
    env_kwargs = {**hp.get("env_kwargs", {}), **cfg.env_kwargs}

    run_dir = resume_dir or (
        Path(cfg.run_dir) if cfg.run_dir else new_run_dir(cfg.log_folder, cfg.algo, cfg.env)
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    if resume_dir is None:
        atomic_write_text(run_dir / "command.txt", (cfg.command or "") + "\n")
        atomic_write_text(run_dir / "args.yml", yaml.safe_dump(_plain(cfg.to_dict()), sort_keys=False))
        atomic_write_text(run_dir / "config.yml", yaml.safe_dump(_plain(hp), sort_keys=False))
    else:
        with open(run_dir / "command.txt", "a") as fh:
            fh.write(f"# resumed: {cfg.command}\n" if cfg.command else "# resumed\n")

    normalize = bool(hp.get("normalize", False))
    norm_kwargs = hp.get("normalize_kwargs") or {}
    common = dict(
        env_kwargs=env_kwargs,
        wrappers=wrappers,
        vec_env=cfg.vec_env,
        frame_stack=hp.get("frame_stack"),
        normalize=normalize,
        normalize_kwargs=norm_kwargs,
    )
    ck_norm = str(resume_dir / "checkpoint" / "vecnormalize.pkl") if resume_dir is not None else None
    train_env = make_vec_env(
        cfg.env,
        hp["n_envs"],
        cfg.seed,
        monitor_dir=str(run_dir),
        append_monitor=resume_dir is not None,
        vecnormalize_path=ck_norm,
        **common,
    )
    eval_env = make_vec_env(
        cfg.env,
        cfg.n_eval_envs,
        cfg.seed + 10_000,
        monitor_dir=None,
        training=False,
        **{**common, "vec_env": _eval_vec_env(cfg), "env_kwargs": eval_env_kwargs(cfg.env, env_kwargs)},
    )

    total = int(hp["n_timesteps"])
    previous_wall = 0.0
    if resume_dir is not None:
        ck = resume_dir / "checkpoint"
        state = json.loads((ck / "state.json").read_text())
        model = cls.load(
            ck / "model.zip", env=train_env, device=cfg.device, tensorboard_log=cfg.tensorboard_log or None
        )
        if spec.off_policy and (ck / "replay_buffer.pkl").is_file():
            model.load_replay_buffer(ck / "replay_buffer.pkl")
        total = int(state["total_timesteps"])
        previous_wall = float(state.get("wall_time_s", 0.0))
    else:
        kwargs = resolve_algo_kwargs(hp)
        noise = _action_noise(hp, train_env.action_space)
        if noise is not None:
            kwargs["action_noise"] = noise
        try:
            model = cls(
                hp["policy"],
                train_env,
                seed=cfg.seed,
                device=cfg.device,
                verbose=cfg.verbose,
                tensorboard_log=cfg.tensorboard_log or None,
                **kwargs,
            )
        except (TypeError, ValueError, AssertionError) as exc:
            raise UsageError("--hyperparams", f"{cls.__name__} rejected the hyperparameters: {exc}") from None
    start_steps = int(model.num_timesteps)
    remaining = max(total - start_steps, 0)

    eval_cb = RunEvalCallback(
        eval_env,
        n_eval_episodes=cfg.eval_episodes,
        eval_freq=max(cfg.eval_freq // hp["n_envs"], 1) if cfg.eval_freq > 0 else -1,
        log_path=str(run_dir),
        best_model_save_path=str(run_dir),
        deterministic=True,
        verbose=0,
        warn=False,
        resume=resume_dir is not None,
    )
    counter = _StepCounter()
    cbs: list[BaseCallback] = [counter, eval_cb]
    if cfg.save_freq > 0:
        cbs.append(
            CheckpointCallback(
                max(cfg.save_freq // hp["n_envs"], 1),
                str(run_dir / "checkpoints"),
                name_prefix="model",
                save_replay_buffer=spec.off_policy,
                save_vecnormalize=normalize,
            )
        )
    cbs.extend(callbacks or [])

    interrupted = False
    with sigterm_as_interrupt():
        try:
            model.learn(
                remaining,
                callback=CallbackList(cbs),
                reset_num_timesteps=False,
                progress_bar=cfg.progress_bar,
            )
        except KeyboardInterrupt:
            interrupted = True
    wall = previous_wall + counter.elapsed
    if interrupted:
        save_checkpoint(model, run_dir, total, wall)
        logger.info("interrupted at %d steps; checkpoint in %s", model.num_timesteps, run_dir / "checkpoint")
        train_env.close()
        eval_env.close()
        return RunResult(
            run_dir, True, int(model.num_timesteps), {"run_dir": str(run_dir), "interrupted": True}
        )

    name = env_name(cfg.env)
    model.save(run_dir / f"{name}.zip")
    vec_normalize = model.get_vec_normalize_env()
    if vec_normalize is not None:
        vec_normalize.save(str(run_dir / "vecnormalize.pkl"))
    if cfg.eval_episodes > 0:
        eval_cb.init_callback(model)
        eval_cb.final_evaluation()
    if (run_dir / "checkpoint").exists():
        shutil.rmtree(run_dir / "checkpoint")

    summary = _summarize(cfg, spec, model, run_dir, hp, wall, common)
    atomic_write_text(run_dir / "run.json", json.dumps(_plain(summary), indent=2))
    train_env.close()
    eval_env.close()
    return RunResult(run_dir, False, int(model.num_timesteps), summary)


def _summarize(
    cfg: TrainConfig,
    spec: AlgoSpec,
    model: Any,
    run_dir: Path,
    hp: dict[str, Any],
    wall: float,
    common: dict[str, Any],
) -> dict[str, Any]:
    """Evaluate switch metrics on held-out episodes, draw the run's figures, return ``run.json``'s content."""
    summary: dict[str, Any] = {
        "algo": cfg.algo,
        "env": cfg.env,
        "seed": cfg.seed,
        "run_dir": str(run_dir),
        "interrupted": False,
        "num_timesteps": int(model.num_timesteps),
        "wall_time_s": wall,
        "steps_per_second": model.num_timesteps / wall if wall > 0 else None,
    }
    evals = run_dir / "evaluations.npz"
    if evals.is_file():
        data = np.load(evals)
        means = data["results"].mean(axis=1)
        summary.update(
            final_return=float(means[-1]),
            best_return=float(means.max()),
            eval_timesteps=data["timesteps"].tolist(),
            eval_returns=means.tolist(),
        )
    figures = run_dir / "figures"
    if cfg.switch_episodes > 0:
        env = make_vec_env(
            cfg.env,
            1,
            cfg.seed + 20_000,
            monitor_dir=None,
            training=False,
            vecnormalize_path=str(run_dir / "vecnormalize.pkl"),
            **{
                **common,
                "vec_env": _eval_vec_env(cfg),
                "env_kwargs": eval_env_kwargs(cfg.env, common["env_kwargs"]),
            },
        )
        episodes = collect_episodes(model, env, cfg.switch_episodes, record_state=spec.name == "ppo_dnc")
        env.close()
        metrics, curve = switch_metrics(episodes)
        summary["switch"] = metrics.to_dict()
        atomic_write_text(run_dir / "switch_metrics.json", json.dumps(_plain(metrics.to_dict()), indent=2))
        offsets = np.arange(-metrics.before, metrics.after)
        np.savez(run_dir / "switch_curves.npz", offsets=offsets, curve=curve)
        if cfg.figures:
            _run_figures(run_dir, figures, offsets, curve, episodes, cfg)
    elif cfg.figures:
        _run_figures(run_dir, figures, None, None, [], cfg)
    return summary


def _run_figures(
    run_dir: Path,
    figures: Path,
    offsets: np.ndarray | None,
    curve: np.ndarray | None,
    episodes: list[dict[str, Any]],
    cfg: TrainConfig,
) -> None:
    from memagent import plots

    figures.mkdir(exist_ok=True)
    evals = run_dir / "evaluations.npz"
    label = f"{cfg.algo} seed {cfg.seed}"
    if evals.is_file():
        data = np.load(evals)
        plots.plot_learning_curves(
            {label: (data["timesteps"], data["results"].mean(axis=1)[None, :])},
            figures / "learning_curve.png",
            title=f"{cfg.algo} on {cfg.env}",
        )
    if curve is not None and np.isfinite(curve).any():
        plots.plot_switch_aligned(
            {label: (offsets, curve[None, :])},
            figures / "switch_aligned.png",
            title=f"loss around task switches: {cfg.env}",
        )
    if episodes and "states" in episodes[0]:
        memory = plots.memory_trace(episodes[0]["states"])
        if memory is not None:
            plots.plot_memory(*memory, path=figures / "dnc_memory.png", task=episodes[0]["task"])


def _eval_vec_env(cfg: TrainConfig) -> str:
    """Evaluation envs: batched like the training env when it is batched (same type), else Dummy."""
    return "batched" if cfg.vec_env == "batched" else "dummy"
