"""Sweeps: suite parsing, atomic per-run results, resume skips finished runs, Ray path, report outputs."""

import json
import sys
import types

import pytest

from memagent.bench import sweep as sweep_mod
from memagent.bench.cli import main as bench_main
from memagent.bench.report import write_report
from memagent.bench.sweep import Job, load_results, load_suite, run_sweep, write_result
from memagent.training import UsageError

SUITE = """
name: tiny
n_timesteps: 64
seeds: 1
run_figures: false
eval_freq: 32
eval_episodes: 1
switch_episodes: 1
baseline: ppo
reps: 200
algos:
  - algo: ppo
    hyperparams: {n_steps: 32, batch_size: 32, n_epochs: 1}
  - name: ppo_fs2
    algo: ppo
    frame_stack: 2
    hyperparams: {n_steps: 32, batch_size: 32, n_epochs: 1}
envs:
  - name: reg
    id: memagent/NonStationaryRegression-v0
    env_kwargs: {dim: 2, episode_length: 32, period: 8}
    n_envs: 1
"""


@pytest.fixture
def suite_file(tmp_path):
    p = tmp_path / "tiny.yml"
    p.write_text(SUITE)
    return p


def test_suite_expands_to_jobs(suite_file, tmp_path):
    suite = load_suite(suite_file)
    jobs = suite.jobs(tmp_path / "out")
    assert [j.run_id for j in jobs] == ["ppo__reg__s0", "ppo_fs2__reg__s0"]
    assert jobs[0].config["figures"] is False
    cfg = jobs[1].config
    assert cfg["algo"] == "ppo" and cfg["frame_stack"] == 2 and cfg["n_envs"] == 1 and cfg["seed"] == 0
    assert cfg["env_kwargs"] == {"dim": 2, "episode_length": 32, "period": 8} and cfg["n_timesteps"] == 64


def test_suite_device_reaches_every_run(tmp_path):
    p = tmp_path / "s.yml"
    p.write_text("device: cpu\nalgos: [ppo, {name: a2c_gpu, algo: a2c, device: cuda}]\nenvs: [CartPole-v1]\n")
    jobs = load_suite(p).jobs(tmp_path / "out")
    assert [j.config["device"] for j in jobs] == ["cpu"] * 3 + ["cuda"] * 3  # an entry overrides the suite
    p.write_text("algos: [ppo]\nenvs: [CartPole-v1]\n")
    assert load_suite(p).jobs(tmp_path)[0].config["device"] == "auto"  # SB3's choice by default


def _record(algo, env, seed, value, run_dir=None):
    return {
        "run_id": f"{algo}__{env}__s{seed}",
        "status": "done",
        "algo": algo,
        "env": env,
        "seed": seed,
        "final_return": value,
        "eval_timesteps": [32, 64],
        "eval_returns": [value - 1.0, value],
        "steps_per_second": 10.0,
        **({"run_dir": run_dir} if run_dir else {}),
    }


def test_select_restricts_entries_and_keeps_run_ids(suite_file, tmp_path):
    suite = load_suite(suite_file)
    part = suite.select(algos=["ppo_fs2"])
    assert [j.run_id for j in part.jobs(tmp_path)] == ["ppo_fs2__reg__s0"]
    assert [a["name"] for a in suite.algos] == ["ppo", "ppo_fs2"]  # the suite itself is unchanged
    assert len(suite.select(envs=["reg"]).jobs(tmp_path)) == 2
    with pytest.raises(UsageError, match=r"--algos.*\['sac'\]"):
        suite.select(algos=["sac"])
    with pytest.raises(UsageError, match="--envs"):
        suite.select(envs=["pendulum"])


def test_cli_runs_only_the_named_algos_and_reports_the_rest(suite_file, tmp_path, capsys, monkeypatch):
    ran = []
    fake = lambda job: ran.append(job.run_id) or _record(job.algo_name, job.env_name, job.seed, -1.0)  # noqa: E731
    monkeypatch.setattr(sweep_mod, "run_job", fake)
    out = tmp_path / "o"
    assert bench_main([str(suite_file), "-o", str(out), "--n-jobs", "1", "--algos", "ppo_fs2"]) == 0
    assert ran == ["ppo_fs2__reg__s0"]
    assert bench_main([str(suite_file), "-o", str(out), "--n-jobs", "1", "--algos=ppo", "--reps", "50"]) == 0
    assert ran == ["ppo_fs2__reg__s0", "ppo__reg__s0"]
    report = (out / "report.md").read_text()
    assert "| reg | ppo | 1 |" in report and "| reg | ppo_fs2 | 1 |" in report
    assert "--algos" not in report and "--reps 50" in report  # the command that remakes the whole report
    assert bench_main([str(suite_file), "-o", str(out), "--algos", "nope"]) == 2
    assert "--algos" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        bench_main([str(suite_file), "--envs", "a,,b"])
    assert exc.value.code == 2


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("algos: [ppo]\nenvs: []\n", "envs"),
        ("algos: [ppo]\nenvs: [CartPole-v1]\nseeds: -1\n", "seeds"),
        ("algos: [ppo]\nenvs: [CartPole-v1]\nbaseline: sac\n", "baseline"),
        ("algos: [{algo: ppo, learning_rate: 1}]\nenvs: [CartPole-v1]\n", "algos"),
        ("algos: [ppo]\nenvs: [CartPole-v1]\nbudget: 3\n", "unknown keys"),
    ],
)
def test_bad_suites_name_the_key(tmp_path, text, key):
    p = tmp_path / "bad.yml"
    p.write_text(text)
    with pytest.raises(UsageError, match=key):
        load_suite(p)


def test_write_result_is_atomic_and_replaces_failures(tmp_path):
    write_result(tmp_path, {"run_id": "a", "status": "failed", "error": "x"})
    assert (tmp_path / "a.failed.json").is_file()
    write_result(tmp_path, {"run_id": "a", "status": "done", "value": 1})
    assert json.loads((tmp_path / "a.json").read_text())["value"] == 1
    assert not (tmp_path / "a.failed.json").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left behind


def test_sweep_runs_reports_and_resume_skips_finished(suite_file, tmp_path, monkeypatch):
    out = tmp_path / "out"
    suite = load_suite(suite_file)
    counts = run_sweep(suite, out, n_jobs=1)
    assert counts == {"total": 2, "skipped": 0, "done": 2, "failed": 0}
    records = load_results(out)
    assert len(records) == 2 and all(r["status"] == "done" for r in records)
    assert {r["algo"] for r in records} == {"ppo", "ppo_fs2"}
    assert all(r["steps_per_second"] > 0 and r["switch_curve"] for r in records)

    # A killed sweep: one result lost. The rerun trains only that run.
    (out / "results" / "ppo_fs2__reg__s0.json").unlink()
    ran = []
    real = sweep_mod.run_job
    monkeypatch.setattr(sweep_mod, "run_job", lambda job: ran.append(job.run_id) or real(job))
    counts = run_sweep(suite, out, n_jobs=1)
    assert ran == ["ppo_fs2__reg__s0"]
    assert counts == {"total": 2, "skipped": 1, "done": 1, "failed": 0}

    report = write_report(load_results(out), out, baseline="ppo", reps=200, title="tiny")
    table = report["table"]
    assert "| reg | ppo | 1 |" in table and "| reg | ppo_fs2 | 1 |" in table
    assert "P(improve over ppo)" in table
    for name in ("report.md", "runs.csv", "summary.csv"):
        assert (out / name).stat().st_size > 0
    assert len((out / "runs.csv").read_text().strip().splitlines()) == 3
    names = {p.name for p in report["figures"]}
    assert {"learning_curves_reg.png", "switch_aligned_reg.png", "interval_estimates_reg.png"} <= names
    assert all(p.stat().st_size > 0 for p in report["figures"])


def test_report_follows_suite_order_and_finds_figures_of_a_moved_sweep(tmp_path):
    records = [_record(a, e, s, -float(s)) for e in ("zeta", "alpha") for a in ("b", "a") for s in (0, 1)]
    records[0]["run_dir"] = "/elsewhere/runs/b__zeta__s0"  # ran on another machine, folder copied here
    figure = tmp_path / "runs" / "b__zeta__s0" / "figures" / "dnc_memory.png"
    figure.parent.mkdir(parents=True)
    figure.write_bytes(b"png")
    report = write_report(records, tmp_path, reps=50, order=["a", "b"], env_order=["zeta", "alpha"])
    rows = [
        line.split(" | ")[:2]
        for line in report["table"].splitlines()
        if line.startswith("| zeta") or line.startswith("| alpha")
    ]
    assert rows == [["| zeta", "a"], ["| zeta", "b"], ["| alpha", "a"], ["| alpha", "b"]]
    assert figure in report["figures"]


def test_failed_run_is_recorded_and_retried(tmp_path):
    p = tmp_path / "s.yml"
    p.write_text(
        "algos: [{algo: ppo, hyperparams: {no_such_hp: 1}}]\nenvs: [CartPole-v1]\nseeds: 1\nn_timesteps: 32\n"
    )
    counts = run_sweep(load_suite(p), tmp_path / "out", n_jobs=1)
    assert counts["failed"] == 1
    failed = json.loads((tmp_path / "out" / "results" / "ppo__CartPole-v1__s0.failed.json").read_text())
    assert "no_such_hp" in failed["error"]
    assert run_sweep(load_suite(p), tmp_path / "out", n_jobs=1)["skipped"] == 0  # retried, not skipped


class Ref:
    """A hashable object reference holding the task's result."""

    def __init__(self, value):
        self.value = value


class FakeRay(types.ModuleType):
    """Just enough of Ray's API (init / remote / wait / get) to run tasks eagerly in-process."""

    def __init__(self):
        super().__init__("ray")
        self.initialized_with, self.submitted = None, []

    def is_initialized(self):
        return self.initialized_with is not None

    def init(self, address=None, **kwargs):
        self.initialized_with = address or "local"

    def remote(self, num_cpus=None):
        def wrap(fn):
            def submit(job):
                self.submitted.append(job.run_id)
                return Ref(fn(job))

            return types.SimpleNamespace(remote=submit)

        return wrap

    def wait(self, refs, num_returns=1):
        return refs[:num_returns], refs[num_returns:]

    def get(self, ref):
        return ref.value


def test_ray_path_runs_each_job_as_a_task(tmp_path, monkeypatch):
    fake = FakeRay()
    monkeypatch.setitem(sys.modules, "ray", fake)
    records = []
    monkeypatch.setattr(
        sweep_mod,
        "run_job",
        lambda job: {"run_id": job.run_id, "status": "done", "algo": job.algo_name, "env": job.env_name},
    )
    jobs = [Job("a", "e", s, {}) for s in range(3)]
    sweep_mod.run_ray(jobs, "ray://head:10001", lambda job, rec: records.append(rec["run_id"]))
    assert fake.initialized_with == "ray://head:10001"
    assert fake.submitted == ["a__e__s0", "a__e__s1", "a__e__s2"] and sorted(records) == fake.submitted


def test_ray_missing_is_a_clear_error(tmp_path, monkeypatch, suite_file, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    assert bench_main([str(suite_file), "-o", str(tmp_path / "o"), "--ray"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "ray is not installed" in err[0]


def test_shipped_suites_parse_and_name_known_algos():
    from pathlib import Path

    from memagent.training.algos import ALGOS

    root = Path(__file__).resolve().parents[1] / "benchmarks" / "suites"
    for name in ("quick", "full", "discrete"):
        suite = load_suite(root / f"{name}.yml")
        assert all(a["algo"] in ALGOS for a in suite.algos)
        assert suite.baseline == "ppo" and len(suite.seeds) >= (3 if name == "quick" else 5)


def test_train_py_bench_subcommand_reports_finished_runs(tmp_path, suite_file, capsys):
    from memagent.training.cli import main

    out = tmp_path / "out"
    write_result(
        out / "results",
        {
            "run_id": "ppo__reg__s0",
            "status": "done",
            "algo": "ppo",
            "env": "reg",
            "seed": 0,
            "final_return": -3.0,
            "eval_timesteps": [32, 64],
            "eval_returns": [-5.0, -3.0],
            "steps_per_second": 100.0,
        },
    )
    write_result(
        out / "results",
        {
            "run_id": "ppo_fs2__reg__s0",
            "status": "done",
            "algo": "ppo_fs2",
            "env": "reg",
            "seed": 0,
            "final_return": -2.0,
            "eval_timesteps": [32, 64],
            "eval_returns": [-4.0, -2.0],
            "steps_per_second": 90.0,
        },
    )
    report = tmp_path / "published" / "tiny.md"
    argv = ["bench", str(suite_file), "-o", str(out), "--report-only", "--report", str(report)]
    assert main(argv) == 0
    text = report.read_text()
    assert "python train.py bench" in text and "| reg | ppo_fs2 | 1 | -2 [-2, -2]" in text
    assert "1 [1, 1]" in text  # P(ppo_fs2 > ppo) = 1 with one seed each
    assert main(["bench", str(tmp_path / "missing.yml")]) == 2
