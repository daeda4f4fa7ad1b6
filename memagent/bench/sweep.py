"""Benchmark sweeps: algorithms x environments x seeds x budget, from a YAML file.

Suite file::

    name: quick
    n_timesteps: 20000        # budget per run (an algo or env entry may override it)
    seeds: 3                  # or a list, e.g. [0, 1, 2]
    eval_freq: 2000
    eval_episodes: 5
    switch_episodes: 5
    baseline: ppo             # probability of improvement is reported against this entry
    algos:
      - ppo                                   # a registered --algo name
      - {name: ppo_fs4, algo: ppo, frame_stack: 4}
      - {name: ppo_dnc, algo: ppo_dnc, hyperparams: {n_steps: 256}}
    envs:
      - memagent/NonStationaryRegression-v0
      - {name: regression-reward, id: memagent/NonStationaryRegressionReward-v0, env_kwargs: {dim: 2}}
    device: cpu               # torch device of every run ("auto": SB3's choice; an entry may override it)

Every run writes ``<out>/results/<algo>__<env>__s<seed>.json`` atomically (temporary file, then
``os.replace``) when it finishes; a rerun skips runs whose result exists, so a killed sweep loses only
the runs in flight. Runs execute in worker processes (``n_jobs``), or as Ray tasks.
"""

from __future__ import annotations

import concurrent.futures as cf
import json
import logging
import multiprocessing
import os
import re
import time
import traceback
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from memagent.training.config import TrainConfig, UsageError

logger = logging.getLogger(__name__)

_TRAIN_KEYS = (
    "hyperparams",
    "env_kwargs",
    "frame_stack",
    "history",
    "wrappers",
    "normalize",
    "n_envs",
    "conf_file",
    "n_timesteps",
    "device",
)
_SUITE_KEYS = {
    "name",
    "n_timesteps",
    "seeds",
    "eval_freq",
    "eval_episodes",
    "switch_episodes",
    "baseline",
    "algos",
    "envs",
    "description",
    "n_eval_envs",
    "metric",
    "reps",
    "run_figures",
    "device",
}


@dataclass(frozen=True)
class Job:
    """One run of a sweep."""

    algo_name: str
    env_name: str
    seed: int
    config: dict[str, Any] = field(hash=False, compare=False)

    @property
    def run_id(self) -> str:
        safe = re.sub(r"[^A-Za-z0-9_.-]+", "-", self.env_name)
        return f"{self.algo_name}__{safe}__s{self.seed}"


@dataclass
class Suite:
    """A parsed sweep file (see the module docstring)."""

    name: str
    algos: list[dict[str, Any]]
    envs: list[dict[str, Any]]
    seeds: list[int]
    n_timesteps: int = 10_000
    eval_freq: int = 2_000
    eval_episodes: int = 5
    n_eval_envs: int = 1
    switch_episodes: int = 5
    baseline: str | None = None
    metric: str = "final_return"
    reps: int = 2000
    run_figures: bool = True
    description: str = ""
    device: str = "auto"

    def select(self, algos: list[str] | None = None, envs: list[str] | None = None) -> Suite:
        """The same suite restricted to the named algo / env entries (``None`` keeps all).

        Runs keep their ids, so several restricted sweeps into one folder (say the slow algorithms on a
        big machine, the rest here) add up to the whole suite and report together.
        """
        picked = {}
        for flag, wanted, entries in (("--algos", algos, self.algos), ("--envs", envs, self.envs)):
            names = [e["name"] for e in entries]
            unknown = sorted(set(wanted or ()) - set(names))
            if unknown:
                raise UsageError(flag, f"unknown names {unknown}; the suite has {names}")
            picked[flag] = [e for e in entries if wanted is None or e["name"] in wanted]
        return replace(self, algos=picked["--algos"], envs=picked["--envs"])

    def jobs(self, out_dir: Path) -> list[Job]:
        """All runs, algorithm-major; each carries a plain-data :class:`TrainConfig`."""
        jobs = []
        for algo in self.algos:
            for env in self.envs:
                for seed in self.seeds:
                    cfg = TrainConfig(
                        algo=algo["algo"],
                        env=env["id"],
                        seed=seed,
                        n_timesteps=self.n_timesteps,
                        eval_freq=self.eval_freq,
                        eval_episodes=self.eval_episodes,
                        n_eval_envs=self.n_eval_envs,
                        switch_episodes=self.switch_episodes,
                        verbose=0,
                        progress_bar=False,
                        figures=self.run_figures,
                        device=self.device,
                    )
                    for source in (env, algo):  # the algo entry wins (e.g. its own budget)
                        for key in _TRAIN_KEYS:
                            if key in source:
                                value = source[key]
                                if isinstance(value, dict) and isinstance(getattr(cfg, key), dict):
                                    value = {**getattr(cfg, key), **value}
                                setattr(cfg, key, value)
                    job = Job(algo["name"], env["name"], seed, {})
                    cfg.run_dir = str(out_dir / "runs" / job.run_id)
                    cfg.log_folder = str(out_dir / "runs")
                    cfg.command = f"sweep {self.name}: {job.run_id}"
                    jobs.append(Job(algo["name"], env["name"], seed, cfg.to_dict()))
        return jobs


def _entries(raw: Any, key: str, id_key: str) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise UsageError(f"suite {key}", f"must be a non-empty list, got {raw!r}")
    out = []
    for item in raw:
        if isinstance(item, str):
            item = {id_key: item}
        if not isinstance(item, dict) or (id_key not in item and "name" not in item):
            raise UsageError(f"suite {key}", f"bad entry {item!r}: use a string or a mapping with {id_key!r}")
        item = dict(item)
        item.setdefault(id_key, item.get("name"))
        item.setdefault("name", item[id_key])
        unknown = set(item) - {"name", id_key, *_TRAIN_KEYS}
        if unknown:
            raise UsageError(
                f"suite {key}",
                f"entry {item['name']!r} has unknown keys {sorted(unknown)}; "
                f"allowed: name, {id_key}, {', '.join(_TRAIN_KEYS)}",
            )
        out.append(item)
    names = [e["name"] for e in out]
    if len(set(names)) != len(names):
        raise UsageError(f"suite {key}", f"names must be unique, got {names}")
    return out


def load_suite(path: str | Path) -> Suite:
    """Parse and validate a suite YAML file; errors raise :class:`UsageError` naming the key."""
    p = Path(path)
    if not p.is_file():
        raise UsageError("SUITE", f"no such file: {str(path)!r}")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as exc:
        raise UsageError("SUITE", f"{str(path)!r} is not valid YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise UsageError("SUITE", f"{str(path)!r} must be a mapping")
    unknown = set(raw) - _SUITE_KEYS
    if unknown:
        raise UsageError("SUITE", f"unknown keys {sorted(unknown)}; allowed: {sorted(_SUITE_KEYS)}")
    seeds = raw.get("seeds", 3)
    if isinstance(seeds, int) and not isinstance(seeds, bool) and seeds > 0:
        seeds = list(range(seeds))
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise UsageError(
            "suite seeds", f"must be a positive count or a list of non-negative ints, got {seeds!r}"
        )
    budget = raw.get("n_timesteps", 10_000)
    if isinstance(budget, float) and budget.is_integer():
        budget = int(budget)
    if not isinstance(budget, int) or budget < 1:
        raise UsageError("suite n_timesteps", f"must be a positive integer, got {budget!r}")
    suite = Suite(
        name=str(raw.get("name", p.stem)),
        algos=_entries(raw.get("algos"), "algos", "algo"),
        envs=_entries(raw.get("envs"), "envs", "id"),
        seeds=seeds,
        n_timesteps=budget,
        eval_freq=int(raw.get("eval_freq", 2_000)),
        eval_episodes=int(raw.get("eval_episodes", 5)),
        n_eval_envs=int(raw.get("n_eval_envs", 1)),
        switch_episodes=int(raw.get("switch_episodes", 5)),
        baseline=raw.get("baseline"),
        metric=str(raw.get("metric", "final_return")),
        reps=int(raw.get("reps", 2000)),
        run_figures=bool(raw.get("run_figures", True)),
        description=str(raw.get("description", "")),
        device=str(raw.get("device", "auto")),
    )
    if suite.baseline is not None and suite.baseline not in [a["name"] for a in suite.algos]:
        raise UsageError(
            "suite baseline", f"{suite.baseline!r} is not one of the algos {[a['name'] for a in suite.algos]}"
        )
    return suite


# --------------------------------------------------------------------------- one run


def _record_header(job: Job) -> dict[str, Any]:
    """The fields that name a run in its result record."""
    return {"run_id": job.run_id, "algo": job.algo_name, "env": job.env_name, "seed": job.seed}


def _failed_record(job: Job, exc: BaseException) -> dict[str, Any]:
    """The record of a run whose worker (process or Ray task) failed before returning one."""
    return {**_record_header(job), "status": "failed", "error": f"{type(exc).__name__}: {exc}"}


def run_job(job: Job) -> dict[str, Any]:
    """Train one run (in whatever process calls it) and return its result record.

    Failures are caught and returned as ``{"status": "failed", "error": ...}``.
    """
    import torch

    torch.set_num_threads(1)
    from memagent.training.run import train

    record = _record_header(job)
    start = time.perf_counter()
    try:
        cfg = TrainConfig.from_dict(job.config)
        result = train(cfg)
        record.update(status="done", **result.summary)
        curves = Path(result.run_dir) / "switch_curves.npz"
        if curves.is_file():
            import numpy as np

            data = np.load(curves)
            record["switch_offsets"] = data["offsets"].tolist()
            record["switch_curve"] = [None if not np.isfinite(v) else float(v) for v in data["curve"]]
    except Exception as exc:  # a failed run is recorded, the sweep goes on
        record.update(status="failed", error=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
    record["algo"], record["env"] = job.algo_name, job.env_name  # names from the suite, not the registry
    record["total_time_s"] = time.perf_counter() - start
    return record


def write_result(results_dir: Path, record: dict[str, Any]) -> Path:
    """Write a run's record atomically: ``<id>.json`` when done, ``<id>.failed.json`` otherwise."""
    results_dir.mkdir(parents=True, exist_ok=True)
    suffix = ".json" if record.get("status") == "done" else ".failed.json"
    path = results_dir / f"{record['run_id']}{suffix}"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(record, indent=1, default=_json_default))
    os.replace(tmp, path)
    if suffix == ".json":
        (results_dir / f"{record['run_id']}.failed.json").unlink(missing_ok=True)
    return path


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def pending_jobs(jobs: list[Job], results_dir: Path) -> list[Job]:
    """Jobs whose result file does not exist yet (finished runs are skipped)."""
    return [j for j in jobs if not (results_dir / f"{j.run_id}.json").is_file()]


# --------------------------------------------------------------------------- executors


def run_local(jobs: list[Job], n_jobs: int, on_result: Callable[[Job, dict[str, Any]], None]) -> None:
    """Run jobs in ``n_jobs`` spawned worker processes (in this process when ``n_jobs == 1``)."""
    if n_jobs <= 1:
        for job in jobs:
            on_result(job, run_job(job))
        return
    ctx = multiprocessing.get_context("spawn")
    with cf.ProcessPoolExecutor(max_workers=n_jobs, mp_context=ctx) as pool:
        futures = {pool.submit(run_job, job): job for job in jobs}
        for fut in cf.as_completed(futures):
            job = futures[fut]
            try:
                record = fut.result()
            except Exception as exc:  # worker died
                record = _failed_record(job, exc)
            on_result(job, record)


def run_ray(jobs: list[Job], address: str | None, on_result: Callable[[Job, dict[str, Any]], None]) -> None:
    """Run each job as a Ray task (one CPU each) on the cluster at ``address`` (local Ray if None)."""
    try:
        import ray
    except ImportError:
        raise UsageError(
            "--ray-address", "ray is not installed; install it with pip install 'memagent[ray]'"
        ) from None
    if not ray.is_initialized():
        ray.init(address=address, ignore_reinit_error=True, log_to_driver=False)
    remote = ray.remote(num_cpus=1)(run_job)
    pending = {remote.remote(job): job for job in jobs}
    while pending:
        done, _ = ray.wait(list(pending), num_returns=1)
        for ref in done:
            job = pending.pop(ref)
            try:
                record = ray.get(ref)
            except Exception as exc:  # task failed on the cluster
                record = _failed_record(job, exc)
            on_result(job, record)


def run_sweep(
    suite: Suite,
    out_dir: str | Path,
    n_jobs: int = 1,
    use_ray: bool = False,
    ray_address: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Run every unfinished job of ``suite``; results go to ``<out_dir>/results``.

    :returns: ``{"total": ..., "skipped": ..., "done": ..., "failed": ...}`` counts for this call.
    """
    out = Path(out_dir)
    results_dir = out / "results"
    jobs = suite.jobs(out)
    todo = pending_jobs(jobs, results_dir)
    counts = {"total": len(jobs), "skipped": len(jobs) - len(todo), "done": 0, "failed": 0}
    out.mkdir(parents=True, exist_ok=True)
    (out / "suite.json").write_text(json.dumps(asdict(suite), indent=1))

    def on_result(job: Job, record: dict[str, Any]) -> None:
        write_result(results_dir, record)
        counts["done" if record.get("status") == "done" else "failed"] += 1
        msg = f"[{counts['done'] + counts['failed']}/{len(todo)}] {job.run_id}: {record.get('status')}"
        if record.get("status") != "done":
            msg += f" ({record.get('error')})"
        logger.info(msg)
        if progress is not None:
            progress(msg)

    if use_ray or ray_address:
        run_ray(todo, ray_address, on_result)
    else:
        run_local(todo, n_jobs, on_result)
    return counts


def load_results(out_dir: str | Path) -> list[dict[str, Any]]:
    """All finished run records of a sweep folder."""
    return [
        json.loads(p.read_text())
        for p in sorted((Path(out_dir) / "results").glob("*.json"))
        if not p.name.endswith(".failed.json")
    ]
