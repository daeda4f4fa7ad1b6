"""GPU check: the library's torch code gives the same numbers on CUDA as on CPU, and the agents train there.

    python benchmarks/gpu_check.py [--results benchmarks/results/gpu_check.md]

Checks (each a row of the printed Markdown table):

- DNC forward + backward in float64 on CUDA equals CPU (outputs, final state and every parameter's
  gradient) for the full DNC, the DNC without temporal links and the tutorial bank, with episode resets
  inside the sequence; and a float32 run stays finite.
- RecurrentDncPPO, PrioritizedSAC and SAC with the DNCExtractor learn a few hundred steps with
  ``device=DEVICE``; predict returns actions and the recurrent state lives on the GPU.
- The continual learner (DNC, prioritized replay) runs on CUDA and its final mean error (ACC) is within
  20% of the CPU run's (float32 training drifts apart a little).

It needs a CUDA device and exits with status 1 if any check fails (0 with a note when there is no GPU).
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from memagent.memory import DNC, MemoryConfig  # noqa: E402

DEVICE = "cuda"  # --device: "cpu" runs the same checks CPU against CPU (a dry run of this script)


def _dnc_equal(config: MemoryConfig) -> str:
    """Max relative difference between CPU and CUDA outputs / gradients (float64)."""
    torch.manual_seed(0)
    cpu = DNC(input_size=6, hidden_size=32, output_size=5, memory=config).double()
    gpu = copy.deepcopy(cpu).to(DEVICE)
    x = torch.randn(4, 12, 6, dtype=torch.float64)
    starts = torch.zeros(4, 12, dtype=torch.bool)
    starts[1, 5] = starts[3, 9] = True
    worst = 0.0
    results = []
    for model, device in ((cpu, "cpu"), (gpu, DEVICE)):
        y, state = model(x.to(device), episode_starts=starts.to(device))
        loss = y.square().sum() + sum(f.double().square().sum() for f in state if f.numel())
        loss.backward()
        results.append((y, state, [p.grad for p in model.parameters()]))
    (y0, s0, g0), (y1, s1, g1) = results
    pairs = [(y0, y1), *zip(s0, s1, strict=True), *zip(g0, g1, strict=True)]
    for a, b in pairs:
        if a.numel():
            diff = (a - b.cpu()).abs().max().item() / (a.abs().max().item() + 1e-12)
            worst = max(worst, diff)
    if not worst < 1e-9:
        raise AssertionError(f"CPU vs CUDA relative difference {worst:.2e} (allowed 1e-9)")
    return f"max relative diff {worst:.1e} over output, {len(s0)} state fields, {len(g0)} grads"


def _dnc_float32() -> str:
    """A float32 DNC at the benchmark size over 200 steps: finite outputs, every gradient non-zero."""
    torch.manual_seed(0)
    cfg = MemoryConfig(memory_size=128, word_size=64, num_read_heads=4)
    model = DNC(input_size=64, hidden_size=128, output_size=64, memory=cfg).to(DEVICE)
    x = torch.randn(16, 200, 64, device=DEVICE)
    y, _ = model(x)
    y.square().mean().backward()
    grads = torch.stack([p.grad.norm() for p in model.parameters()])
    if not (torch.isfinite(y).all() and torch.isfinite(grads).all() and (grads > 0).all()):
        raise AssertionError("non-finite output or a zero/non-finite gradient")
    return f"B=16, T=200, N=128, W=64, R=4: finite, every gradient non-zero (min norm {grads.min():.1e})"


def _recurrent_ppo() -> str:
    from memagent.algos import RecurrentDncPPO

    model = RecurrentDncPPO(
        "DncPolicy", "CartPole-v1", n_steps=64, batch_size=64, sequence_length=16, seed=0, device=DEVICE
    )
    model.learn(256)
    obs = model.get_env().reset()
    action, state = model.predict(obs, state=None, episode_start=[True], deterministic=True)
    devices = {t.device.type for t in state.pi if isinstance(t, torch.Tensor)}
    return f"learn(256) on CartPole-v1, action {action.tolist()}, state on {sorted(devices)}"


def _prioritized_sac() -> str:
    from memagent.algos import PrioritizedSAC

    model = PrioritizedSAC(
        "MlpPolicy", "Pendulum-v1", learning_starts=64, batch_size=32, seed=0, device=DEVICE
    )
    model.learn(200)
    priorities = model.replay_buffer.tree.total
    return f"learn(200) on Pendulum-v1, sum of priorities {priorities:.3g}"


def _dnc_extractor_sac() -> str:
    from stable_baselines3 import SAC
    from stable_baselines3.common.env_util import make_vec_env
    from stable_baselines3.common.vec_env import VecFrameStack

    from memagent.policies import DNCExtractor

    env = VecFrameStack(make_vec_env("Pendulum-v1", n_envs=1, seed=0), n_stack=4)
    model = SAC(
        "MlpPolicy",
        env,
        learning_starts=32,
        batch_size=16,
        seed=0,
        device=DEVICE,
        policy_kwargs=dict(features_extractor_class=DNCExtractor, features_extractor_kwargs=dict(window=4)),
    )
    model.learn(100)
    return "SAC + DNCExtractor(window=4) learn(100) on stacked Pendulum-v1"


def _continual() -> str:
    from memagent.continual import ContinualConfig, ContinualLearner, tutorial_tasks

    fns, names = tutorial_tasks()
    finals = {}
    for device in ("cpu", DEVICE):
        cfg = ContinualConfig(model="dnc", replay="prioritized", device=device, epochs=2, seed=0)
        result = ContinualLearner(fns, cfg, names).run(progress=False)
        finals[device] = float(result.metrics.acc)
    if abs(finals["cpu"] - finals[DEVICE]) > 0.2 * finals["cpu"] + 1e-3:
        raise AssertionError(f"ACC cpu {finals['cpu']:.4f} vs {DEVICE} {finals[DEVICE]:.4f}")
    return f"2 epochs per task: ACC cpu {finals['cpu']:.4f}, {DEVICE} {finals[DEVICE]:.4f}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="also write the table to this Markdown file")
    parser.add_argument("--device", default="cuda", help="device checked against the CPU (default cuda)")
    args = parser.parse_args()
    global DEVICE
    DEVICE = args.device
    if DEVICE.startswith("cuda") and not torch.cuda.is_available():
        print("no CUDA device: nothing to check")
        return 0
    checks: list[tuple[str, Callable[[], str]]] = [
        ("DNC cuda == cpu (allocation + links)", lambda: _dnc_equal(MemoryConfig(8, 5, num_read_heads=2))),
        (
            "DNC cuda == cpu (no temporal links)",
            lambda: _dnc_equal(MemoryConfig(8, 5, num_read_heads=2, temporal_links=False)),
        ),
        ("DNC cuda == cpu (tutorial bank)", lambda: _dnc_equal(MemoryConfig.tutorial(8, 5))),
        ("DNC float32 on cuda", _dnc_float32),
        ("RecurrentDncPPO on cuda", _recurrent_ppo),
        ("PrioritizedSAC on cuda", _prioritized_sac),
        ("SAC + DNCExtractor on cuda", _dnc_extractor_sac),
        ("continual learner cuda vs cpu", _continual),
    ]
    rows, failed = [], 0
    for name, check in checks:
        start = time.perf_counter()
        try:
            detail, status = check(), "ok"
        except Exception as exc:  # a failed check is reported, the others still run
            detail, status = f"{type(exc).__name__}: {exc}", "FAILED"
            failed += 1
        rows.append(f"| {name} | {status} | {detail} | {time.perf_counter() - start:.1f} |")
        print(rows[-1], flush=True)
    table = "\n".join(
        [
            f"GPU check on {torch.cuda.get_device_name() if DEVICE.startswith('cuda') else DEVICE} "
            f"(torch {torch.__version__}): "
            "`python benchmarks/gpu_check.py`",
            "",
            "| check | status | detail | s |",
            "|---|---|---|---:|",
            *rows,
        ]
    )
    print(table)
    if args.results:
        Path(args.results).write_text(table + "\n")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
