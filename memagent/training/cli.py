"""Command line of ``train.py`` (RL Baselines3 Zoo flags) and its subcommands.

``python train.py``                   the main job (DNC agent vs a memoryless baseline, summary)
``python train.py --algo ppo ...``    one training run (zoo flags)
``python train.py bench SUITE.yml``   a benchmark sweep (see :mod:`memagent.bench`)
``python train.py continual``         the supervised continual-learning demo

Every user error exits with status 2 and one line ``train.py: error: <flag>: <message>``.
"""

from __future__ import annotations

import argparse
import logging
import shlex
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from memagent.training.algos import ALGOS
from memagent.training.config import DEFAULT_ENV, TrainConfig, UsageError
from memagent.training.hyperparams import parse_key_values

PROG = "train.py"


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _int_type(minimum: int, what: str) -> Any:
    """An argparse type accepting integers, also written as ``1e5`` or ``2_000``, ``>= minimum``."""

    def parse(text: str) -> int:
        try:
            number = float(text)
            value = int(number)
        except (ValueError, OverflowError):
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None
        if number != value or value < minimum:
            raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}")
        return value

    return parse


positive_int = _int_type(1, "a positive integer")
non_negative_int = _int_type(0, "a non-negative integer")


def any_int(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def build_parser() -> OneLineParser:
    """The training parser (zoo flags plus memagent's wrappers and switch metrics)."""
    p = OneLineParser(
        prog=PROG,
        description="Train an agent (RL Baselines3 Zoo conventions). Without arguments: the main job. "
        "Subcommands: 'bench SUITE.yml' (benchmark sweep), 'continual' (continual-learning demo).",
    )
    p.add_argument("--algo", default="ppo", metavar="ALGO", help=f"algorithm: {', '.join(ALGOS)}")
    p.add_argument("--env", default=DEFAULT_ENV, help="registered Gymnasium id (default: %(default)s)")
    p.add_argument("-n", "--n-timesteps", type=positive_int, default=None, help="training steps")
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed (default 0)")
    p.add_argument("--n-envs", type=positive_int, default=None, help="number of training envs")
    p.add_argument(
        "--env-kwargs", nargs="+", default=None, metavar="KEY:VALUE", help="keyword args of gym.make"
    )
    p.add_argument(
        "-params",
        "--hyperparams",
        nargs="+",
        default=None,
        metavar="KEY:VALUE",
        help="override hyperparameters (e.g. learning_rate:lin_3e-4 n_steps:256)",
    )
    p.add_argument("-conf", "--conf-file", default=None, help="YAML hyperparameters, zoo format (no eval)")
    p.add_argument(
        "--eval-freq", type=any_int, default=10_000, help="evaluate every N steps (-1: only at the end)"
    )
    p.add_argument("--eval-episodes", type=non_negative_int, default=5, help="episodes per evaluation")
    p.add_argument("--n-eval-envs", type=positive_int, default=1, help="envs for evaluation")
    p.add_argument("--save-freq", type=any_int, default=-1, help="checkpoint every N steps (-1: off)")
    p.add_argument("-f", "--log-folder", default="logs", help="root of run folders (default: %(default)s)")
    p.add_argument("-tb", "--tensorboard-log", default="", help="TensorBoard log dir")
    p.add_argument("--device", default="auto", help="torch device: auto, cpu, cuda, cuda:N")
    p.add_argument(
        "--progress-bar",
        "-P",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="progress bar (default: on in a terminal)",
    )
    p.add_argument(
        "--gym-packages", nargs="+", default=[], metavar="MODULE", help="modules that register envs"
    )
    p.add_argument(
        "--frame-stack", type=positive_int, default=None, metavar="K", help="stack the last K observations"
    )
    p.add_argument(
        "--history",
        type=positive_int,
        default=None,
        metavar="K",
        help="HistoryWrapper: observe the last K steps (window for DNC-extractor agents)",
    )
    p.add_argument(
        "--wrapper",
        nargs="+",
        action="append",
        default=[],
        metavar="NAME_KV",
        help="NAME [KEY:VALUE ...]: add an env wrapper (repeatable): nonstationary, feedback, history, "
        "time_limit, flatten_observation",
    )
    p.add_argument(
        "--non-stationary",
        nargs="*",
        default=None,
        metavar="KEY:VALUE",
        help="make the env switch tasks mid-episode (NonStationary wrapper kwargs)",
    )
    p.add_argument(
        "--feedback",
        nargs="*",
        default=None,
        metavar="KEY:VALUE",
        help="append the previous action and reward to the observation (FeedbackWrapper kwargs)",
    )
    p.add_argument("--vec-env", choices=("dummy", "subproc", "batched"), default="dummy", help="VecEnv type")
    p.add_argument("--normalize", action=argparse.BooleanOptionalAction, default=None, help="VecNormalize")
    p.add_argument(
        "--switch-episodes",
        type=non_negative_int,
        default=5,
        help="held-out episodes for switch-aligned metrics (0: skip)",
    )
    p.add_argument("--no-figures", action="store_true", help="do not draw figures")
    p.add_argument(
        "--resume",
        nargs="?",
        const="latest",
        default=None,
        metavar="RUN_DIR",
        help="continue an interrupted run (default: the latest of --algo/--env)",
    )
    p.add_argument("--list-algos", action="store_true", help="list algorithms and whether they are available")
    p.add_argument("-v", "--verbose", type=non_negative_int, default=1, help="0: quiet, 1: info, 2: debug")
    return p


def config_from_args(args: argparse.Namespace, argv: Sequence[str]) -> TrainConfig:
    """Translate parsed flags into a :class:`TrainConfig` (key:value flags parsed, wrappers collected)."""
    wrappers: list[dict[str, Any]] = []
    if args.non_stationary is not None:
        wrappers.append(
            {"name": "nonstationary", "kwargs": parse_key_values(args.non_stationary, "--non-stationary")}
        )
    if args.feedback is not None:
        wrappers.append({"name": "feedback", "kwargs": parse_key_values(args.feedback, "--feedback")})
    for item in args.wrapper:
        wrappers.append({"name": item[0], "kwargs": parse_key_values(item[1:], "--wrapper")})
    progress = sys.stdout.isatty() if args.progress_bar is None else args.progress_bar
    return TrainConfig(
        algo=args.algo,
        env=args.env,
        n_timesteps=args.n_timesteps,
        seed=args.seed,
        n_envs=args.n_envs,
        env_kwargs=parse_key_values(args.env_kwargs, "--env-kwargs"),
        hyperparams=parse_key_values(args.hyperparams, "--hyperparams"),
        conf_file=args.conf_file,
        eval_freq=args.eval_freq,
        eval_episodes=args.eval_episodes,
        n_eval_envs=args.n_eval_envs,
        save_freq=args.save_freq,
        log_folder=args.log_folder,
        tensorboard_log=args.tensorboard_log,
        device=args.device,
        progress_bar=progress,
        frame_stack=args.frame_stack,
        history=args.history,
        wrappers=wrappers,
        gym_packages=list(args.gym_packages),
        vec_env=args.vec_env,
        normalize=args.normalize,
        switch_episodes=args.switch_episodes,
        figures=not args.no_figures,
        verbose=min(args.verbose, 2),
        resume=args.resume,
        command=shlex.join(["python", PROG, *argv]),
    )


def _list_algos() -> int:
    for name, spec in ALGOS.items():
        mark = "yes" if spec.available() else "no "
        print(f"{name:18s} {mark}  {spec.description}")
    return 0


def _print_summary(result: Any) -> None:
    s = result.summary
    print(f"run folder: {s['run_dir']}")
    if "final_return" in s:
        print(f"final evaluation return: {s['final_return']:.3f} (best {s['best_return']:.3f})")
    sw = s.get("switch") or {}
    if sw.get("n_switches"):
        print(
            f"after a task switch: error {sw['error_after_switch']:.4f} over the first steps, "
            f"recovery {sw['recovery_time']:.0f} steps, regret {sw['regret']:.3f} "
            f"({sw['n_switches']} switches)"
        )
    if s.get("steps_per_second"):
        print(f"wall-clock {s['wall_time_s']:.1f} s, {s['steps_per_second']:.0f} env steps/s")


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``train.py``; returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        if not argv:
            from memagent.training.main_job import run_main_job

            return run_main_job()
        if argv[0] == "bench":
            from memagent.bench.cli import main as bench_main

            return bench_main(argv[1:], prog=f"{PROG} bench")
        if argv[0] == "continual":
            return _continual(argv[1:])
        args = build_parser().parse_args(argv)
        if args.list_algos:
            return _list_algos()
        cfg = config_from_args(args, argv)
        logging.basicConfig(
            level=[logging.WARNING, logging.INFO, logging.DEBUG][cfg.verbose], format="%(message)s"
        )
        from memagent.training.run import train

        result = train(cfg)
    except UsageError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    if result.interrupted:
        print(
            f"interrupted at {result.num_timesteps} steps; "
            f"checkpoint saved in {result.run_dir / 'checkpoint'}"
        )
        print(f"continue with: python {PROG} --resume {result.run_dir}")
        return 130
    _print_summary(result)
    return 0


def _continual(argv: list[str]) -> int:
    """``train.py continual``: the continual-learning demo (:func:`memagent.continual.demo.run_demo`)."""
    p = OneLineParser(
        prog=f"{PROG} continual", description="supervised continual-learning demo (DNC + replay)"
    )
    p.add_argument(
        "--budget", choices=("tiny", "small", "default"), default="default", help="training budget"
    )
    p.add_argument("--seed", type=non_negative_int, default=0, help="random seed")
    p.add_argument("-f", "--log-folder", default="logs/continual", help="folder for figures and results")
    p.add_argument("--progress-bar", "-P", action=argparse.BooleanOptionalAction, default=None)
    args = p.parse_args(argv)
    try:
        from memagent.continual.demo import run_demo
    except ImportError as exc:
        raise UsageError(
            "continual", f"memagent.continual.demo is not available in this checkout ({exc})"
        ) from None
    progress = sys.stdout.isatty() if args.progress_bar is None else args.progress_bar
    run_demo(budget=args.budget, seed=args.seed, out_dir=args.log_folder, progress=progress, report=print)
    return 0
