"""train.py's command line: parsing, hyperparameter files without eval, one-line errors with status 2."""

import subprocess
import sys
from pathlib import Path

import pytest

from memagent.training import UsageError
from memagent.training.cli import build_parser, config_from_args, main
from memagent.training.hyperparams import (
    load_conf_file,
    parse_key_values,
    parse_policy_kwargs,
    resolve_algo_kwargs,
)

ROOT = Path(__file__).resolve().parents[1]
REG = "memagent/NonStationaryRegression-v0"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    return err[0]


def test_zoo_flags_parse_into_config():
    argv = [
        "--algo",
        "sac",
        "--env",
        "Pendulum-v1",
        "-n",
        "1e4",
        "--seed",
        "3",
        "--n-envs",
        "2",
        "--env-kwargs",
        "g:9.0",
        "--hyperparams",
        "learning_rate:lin_1e-3",
        "batch_size:64",
        "-f",
        "out",
        "--frame-stack",
        "4",
        "--non-stationary",
        "period:100",
        "--wrapper",
        "time_limit",
        "max_episode_steps:50",
        "--no-progress-bar",
    ]
    cfg = config_from_args(build_parser().parse_args(argv), argv)
    assert (cfg.algo, cfg.env, cfg.n_timesteps, cfg.seed, cfg.n_envs) == ("sac", "Pendulum-v1", 10_000, 3, 2)
    assert cfg.env_kwargs == {"g": 9.0}
    assert cfg.hyperparams == {"learning_rate": "lin_1e-3", "batch_size": 64}
    assert cfg.log_folder == "out" and cfg.frame_stack == 4 and cfg.progress_bar is False
    assert cfg.wrappers == [
        {"name": "nonstationary", "kwargs": {"period": 100}},
        {"name": "time_limit", "kwargs": {"max_episode_steps": 50}},
    ]
    assert cfg.command.startswith("python train.py --algo sac")


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["-n", "abc"], "--n-timesteps"),
        (["-n", "0"], "--n-timesteps"),
        (["--seed", "-1"], "--seed"),
        (["--n-envs", "1.5"], "--n-envs"),
        (["--vec-env", "threads"], "--vec-env"),
        (["--bogus-flag"], "--bogus-flag"),
    ],
)
def test_bad_flag_values_exit_2_with_one_line(argv, flag, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    line = _error_line(capsys)
    assert line.startswith("train.py: error:") and flag in line


@pytest.mark.parametrize(
    ("argv", "flag"),
    [
        (["--algo", "nope"], "--algo"),
        (["--env", "NoSuchEnv-v9"], "--env"),
        (["--env", REG, "--env-kwargs", "no_such_kwarg:1"], "--env-kwargs"),
        (["--env-kwargs", "missing-colon"], "--env-kwargs"),
        (["--hyperparams", "no_such_hp:1"], "--hyperparams"),
        (["--hyperparams", "policy:NoPolicy"], "--hyperparams"),
        (["--algo", "dqn", "--env", REG], "--algo"),
        (["--conf-file", "/no/such.yml"], "--conf-file"),
        (["--gym-packages", "no_such_module_xyz"], "--gym-packages"),
        (["--wrapper", "nope"], "--wrapper"),
        (["--resume", "/no/such/run"], "--resume"),
        (["--device", "toaster"], "--device"),
    ],
)
def test_bad_values_found_later_also_exit_2(argv, flag, capsys, tmp_path):
    assert main([*argv, "-f", str(tmp_path)]) == 2
    line = _error_line(capsys)
    assert line.startswith("train.py: error:") and flag in line
    assert not list(tmp_path.glob("*/*/config.yml"))  # nothing written for a bad command


def test_no_traceback_from_the_script():
    out = subprocess.run(
        [sys.executable, str(ROOT / "train.py"), "--algo", "ppo", "--env", "Nope-v0"],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr and out.stderr.count("\n") == 1 and "--env" in out.stderr


def test_key_values_are_literals_never_code():
    kv = parse_key_values(["a:1", "b:2.5", "c:[1, 2]", "d:true", "e:lin_0.001", "f:__import__('os')"], "--x")
    assert kv == {"a": 1, "b": 2.5, "c": [1, 2], "d": True, "e": "lin_0.001", "f": "__import__('os')"}


def test_policy_kwargs_string_is_parsed_safely():
    import torch.nn as nn

    pk = parse_policy_kwargs(
        "dict(net_arch=[64, dict(pi=[32], vf=[32])], activation_fn=nn.Tanh, ortho_init=False)"
    )
    assert pk == {"net_arch": [64, {"pi": [32], "vf": [32]}], "activation_fn": "nn.Tanh", "ortho_init": False}
    resolved = resolve_algo_kwargs({"policy_kwargs": pk, "learning_rate": "lin_0.5", "n_timesteps": 5})
    assert resolved["policy_kwargs"]["activation_fn"] is nn.Tanh
    assert resolved["learning_rate"](0.5) == pytest.approx(0.25) and "n_timesteps" not in resolved
    for bad in (
        "dict(a=__import__('os').system('true'))",
        "dict(a=open('x'))",
        "lambda: 1",
        "dict(a=nn.Foo)",
    ):
        with pytest.raises(UsageError):
            parse_policy_kwargs(bad)


def test_conf_file_zoo_format(tmp_path):
    conf = tmp_path / "c.yml"
    conf.write_text(
        "CartPole-v1:\n  n_timesteps: !!float 1e5\n  n_envs: 8\n  policy: 'MlpPolicy'\n  gamma: '0.98'\n"
        "  policy_kwargs:\n    net_arch: [32]\n    activation_fn: nn.ReLU\n"
        "default:\n  n_timesteps: 1e3\n"
    )
    hp = load_conf_file(conf, "CartPole-v1", "ppo")
    assert hp["n_timesteps"] == 100_000 and isinstance(hp["n_timesteps"], int)
    assert hp["gamma"] == 0.98 and hp["policy_kwargs"]["activation_fn"] == "nn.ReLU"
    assert load_conf_file(conf, "Pendulum-v1", "ppo") == {"n_timesteps": 1000}
    conf.write_text("CartPole-v1:\n  callback: 'my.module.Cb'\n")
    with pytest.raises(UsageError, match="callback"):
        load_conf_file(conf, "CartPole-v1", "ppo")
    conf.write_text("CartPole-v1: [unclosed\n")
    with pytest.raises(UsageError, match="valid YAML"):
        load_conf_file(conf, "CartPole-v1", "ppo")


def test_every_shipped_config_parses():
    from memagent.training.algos import ALGOS

    for path in sorted((ROOT / "configs").glob("*.yml")):
        assert path.stem in ALGOS, path
        import yaml

        for section in yaml.safe_load(path.read_text()):
            hp = load_conf_file(path, section, path.stem)
            resolve_algo_kwargs(hp)


def test_list_algos(capsys):
    assert main(["--list-algos"]) == 0
    out = capsys.readouterr().out
    assert "ppo_lstm" in out and "ppo_dnc" in out and "sac_per" in out


def test_continual_subcommand_forwards_to_the_demo(tmp_path, monkeypatch):
    demo = pytest.importorskip("memagent.continual.demo")
    calls = []
    monkeypatch.setattr(demo, "run_demo", lambda **kw: calls.append(kw))
    assert (
        main(["continual", "--budget", "tiny", "--seed", "3", "-f", str(tmp_path), "--no-progress-bar"]) == 0
    )
    assert calls == [
        {"budget": "tiny", "seed": 3, "out_dir": str(tmp_path), "progress": False, "report": print}
    ]
    with pytest.raises(SystemExit) as exc:
        main(["continual", "--budget", "huge"])
    assert exc.value.code == 2
