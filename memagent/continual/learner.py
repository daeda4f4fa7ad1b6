"""A supervised continual learner over a sequence of regression tasks.

Protocol (the tutorial's, fixed): tasks arrive one after another; each has ``n_train`` training
samples ``(x, y)``, ``x ~ N(0, I_D)``, ``y = f_task(x)`` (``D = 64``), trained for ``epochs`` epochs.
After each task the model is evaluated on **every** task with held-out data drawn from separate random
streams, which fills the error matrix ``R[i, j]`` (:mod:`memagent.continual.metrics`).

Context in the input. Tasks map the same inputs to different targets, so no model of ``x`` alone
can fit them all. As memory-augmented networks are trained (Santoro et al. 2016), the model sees
sequences of ``T`` samples of one task with the previous target as feedback,
``input_t = [x_t, y_{t−1}, 1{t > 0}]`` (``y_{−1} = 0``), and predicts ``y_t``: it can infer the task in
context. Every epoch shuffles the task's training samples into new sequences. The error is the MSE over
steps ``t ≥ context_steps`` (default 1: after the first feedback; step 0 cannot know the task).

Models (``model``):

- ``"dnc"``: :class:`memagent.memory.DNC` over the sequence;
- ``"mlp"``: a per-step MLP on ``[x_t, y_{t−1}, 1{t > 0}]`` (a one-step context window, no memory);
- ``"oracle"``: the same MLP with ``one_hot(task)`` appended to its input: it is told the task.

Replay (``replay``): ``"none"`` (naive fine-tuning), ``"uniform"`` or ``"prioritized"``
(:class:`memagent.continual.replay.SequenceReplay`). Every update is **one batched forward** over the
current task's sequences and the replayed ones; the replayed part of the loss is weighted by the
importance weights, and the replayed sequences' priorities are set from their new losses.

Memory across sequences (``persist_memory``): ``False`` (default) starts every sequence from the
DNC's initial state, so the task must be inferred within the sequence. ``True`` carries the (detached)
state from one sequence of the current stream to the next, in training and in evaluation (one stream
per task), as an agent whose memory is never cleared; replayed sequences always start fresh.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from memagent.continual.metrics import ContinualMetrics, compute_metrics
from memagent.continual.replay import REPLAY_MODES, SequenceReplay
from memagent.memory import DNC, MemoryConfig

logger = logging.getLogger(__name__)

TaskFn = Callable[[np.ndarray], np.ndarray]
MODELS = ("dnc", "mlp", "oracle")

__all__ = [
    "MODELS",
    "ContinualConfig",
    "ContinualLearner",
    "ContinualResult",
    "TaskFn",
    "tutorial_tasks",
]


def tutorial_tasks() -> tuple[list[TaskFn], list[str]]:
    """The tutorial's four tasks from :mod:`envs.tasks` (``sin_mean``, ``half_cos_mean``,
    ``tanh_shift_2``, ``tanh_shift_3``) and their names."""
    from envs.tasks import tutorial_task

    tasks = [tutorial_task(i) for i in range(4)]
    return list(tasks), [t.name for t in tasks]


@dataclass
class ContinualConfig:
    """Hyper-parameters of the continual learner (one place, CleanRL style).

    :param model: ``"dnc"``, ``"mlp"`` or ``"oracle"``.
    :param replay: ``"none"``, ``"uniform"`` or ``"prioritized"``.
    :param dim: D, the width of ``x`` and ``y``.
    :param hidden_size: controller / MLP width.
    :param memory: the DNC's memory (small, content + allocation, no temporal links, by default).
    :param n_train: training samples per task. :param epochs: epochs per task.
    :param seq_len: T, samples per sequence (must divide ``n_train``).
    :param batch_sequences: current-task sequences per update.
    :param replay_sequences: replayed sequences per update.
    :param replay_weight: λ, weight of the replayed part of the loss.
    :param replay_capacity: sequences kept in the buffer.
    :param alpha: priority exponent. :param beta: importance-sampling exponent.
    :param lr: AdamW learning rate. :param weight_decay: AdamW's decoupled weight decay.
    :param input_noise: std of Gaussian noise added to ``x`` in training inputs (not to targets or
        feedback): a ridge-like regulariser (Bishop 1995) against fitting 64-d inputs from 50 samples.
    :param grad_clip: max gradient norm (0: off).
    :param persist_memory: carry DNC state across the sequences of a stream (see module docstring).
    :param context_steps: leading steps of each sequence left out of the evaluation error.
    :param n_eval_sequences: held-out sequences per task for evaluation.
    :param seed: seeds the model, the data streams and replay sampling.
    :param device: torch device.
    """

    model: str = "dnc"
    replay: str = "prioritized"
    dim: int = 64
    hidden_size: int = 64
    memory: MemoryConfig = field(
        default_factory=lambda: MemoryConfig(
            memory_size=16, word_size=16, num_read_heads=1, temporal_links=False
        )
    )
    n_train: int = 50
    epochs: int = 20
    seq_len: int = 5
    batch_sequences: int = 5
    replay_sequences: int = 20
    replay_weight: float = 2.0
    replay_capacity: int = 2000
    alpha: float = 0.6
    beta: float = 0.6
    lr: float = 5e-3
    weight_decay: float = 0.0
    input_noise: float = 1.0
    grad_clip: float = 1.0
    persist_memory: bool = False
    context_steps: int = 1
    n_eval_sequences: int = 40
    seed: int = 0
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.model not in MODELS:
            raise ValueError(f"model must be one of {MODELS}, got {self.model!r}")
        if self.replay not in REPLAY_MODES:
            raise ValueError(f"replay must be one of {REPLAY_MODES}, got {self.replay!r}")
        for name in (
            "dim",
            "hidden_size",
            "n_train",
            "epochs",
            "seq_len",
            "batch_sequences",
            "n_eval_sequences",
        ):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive int, got {v!r}")
        if self.n_train % self.seq_len:
            raise ValueError(f"seq_len ({self.seq_len}) must divide n_train ({self.n_train})")
        if not 0 <= self.context_steps < self.seq_len:
            raise ValueError(
                f"context_steps must be in [0, seq_len={self.seq_len}), got {self.context_steps}"
            )
        if self.persist_memory and self.model != "dnc":
            raise ValueError(f"persist_memory needs model='dnc', got model={self.model!r}")


@dataclass
class ContinualResult:
    """What :meth:`ContinualLearner.run` measured.

    :param errors: ``(T, T)`` error matrix R[i, j] (held-out MSE on task j after training task i).
    :param baseline: ``(T,)`` held-out errors of the untrained model.
    :param metrics: ACC, BWT, forgetting, FWT of ``errors``.
    :param train_losses: mean training loss of each epoch, per task.
    :param train_seconds: wall time spent in training updates (evaluation excluded).
    :param samples_per_second: training samples of the protocol (T · epochs · n_train) per second.
    :param adaptation: per task, the held-out error before and after k steps of SGD adaptation on K
        support samples, measured when the task arrives (``{}`` when not requested).
    """

    task_names: list[str]
    errors: np.ndarray
    baseline: np.ndarray
    metrics: ContinualMetrics
    train_losses: list[list[float]]
    train_seconds: float
    samples_per_second: float
    config: ContinualConfig
    adaptation: dict[int, dict[int, float]] = field(default_factory=dict)


class _StepMLP(nn.Module):
    """Per-step MLP on ``(B, T, I)`` inputs; returns ``(y (B, T, O), None)`` like the DNC."""

    def __init__(self, input_size: int, hidden_size: int, output_size: int) -> None:
        super().__init__()
        self.output_size = output_size
        self.net = nn.Sequential(
            nn.Linear(input_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, hidden_size),
            nn.ReLU(),
            nn.Linear(hidden_size, output_size),
        )

    def forward(self, x: Tensor, state: None = None) -> tuple[Tensor, None]:
        return self.net(x), None


class ContinualLearner:
    """Trains one model on tasks in sequence with (optional) replay; see the module docstring.

    :param tasks: the task functions ``f(x (N, D)) -> y (N, D)`` on numpy arrays, in training order
        (e.g. :class:`envs.tasks.Task`; see :func:`tutorial_tasks`).
    :param config: hyper-parameters.
    :param task_names: names for tables and figures.
    """

    def __init__(
        self,
        tasks: Sequence[TaskFn],
        config: ContinualConfig | None = None,
        task_names: Sequence[str] | None = None,
    ) -> None:
        if len(tasks) < 1:
            raise ValueError("tasks must hold at least one task function")
        self.tasks = list(tasks)
        self.task_names = (
            list(task_names) if task_names is not None else [f"task {j}" for j in range(len(tasks))]
        )
        if len(self.task_names) != len(self.tasks):
            raise ValueError(f"task_names has {len(self.task_names)} entries for {len(self.tasks)} tasks")
        self.config = cfg = config if config is not None else ContinualConfig()
        self.device = torch.device(cfg.device)
        torch.manual_seed(cfg.seed)
        num_tasks = len(self.tasks)
        in_size = 2 * cfg.dim + 1 + (num_tasks if cfg.model == "oracle" else 0)
        if cfg.model == "dnc":
            self.model: nn.Module = DNC(in_size, cfg.hidden_size, cfg.dim, cfg.memory)
        else:
            self.model = _StepMLP(in_size, cfg.hidden_size, cfg.dim)
        self.model.to(self.device)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        self.replay = (
            None
            if cfg.replay == "none"
            else SequenceReplay(
                cfg.replay_capacity, cfg.seq_len, cfg.dim, mode=cfg.replay, alpha=cfg.alpha, beta=cfg.beta
            )
        )
        # Separate random streams: training data, held-out evaluation data, adaptation support data,
        # and replay sampling / shuffling, per task, all derived from the one seed.
        root = np.random.SeedSequence(cfg.seed)
        train_ss, eval_ss, support_ss, shuffle_ss = root.spawn(4)
        self._train_seeds = [int(s.generate_state(1)[0]) for s in train_ss.spawn(num_tasks)]
        self._eval_seeds = [int(s.generate_state(1)[0]) for s in eval_ss.spawn(num_tasks)]
        self._support_seeds = [int(s.generate_state(1)[0]) for s in support_ss.spawn(num_tasks)]
        self.rng = np.random.default_rng(shuffle_ss)
        self._noise_gen = torch.Generator().manual_seed(int(shuffle_ss.generate_state(1)[0]))
        self._eval_cache: dict[int, tuple[Tensor, Tensor]] = {}
        self._stream_state = None  # persistent DNC state of the current training stream, (B,...) fields

    # ------------------------------------------------------------------ data
    def sample_data(self, task: int, n: int, seed: int) -> tuple[Tensor, Tensor]:
        """``n`` samples of task ``task`` from the stream ``seed``: ``x, y (n, D)`` on the device."""
        x = np.random.default_rng(seed).standard_normal((n, self.config.dim)).astype(np.float32)
        y = np.asarray(self.tasks[task](x), dtype=np.float32)
        if y.shape != x.shape:
            raise ValueError(f"task {task} must map x {x.shape} to y of the same shape, got {y.shape}")
        return torch.from_numpy(x).to(self.device), torch.from_numpy(y.copy()).to(self.device)

    def training_data(self, task: int) -> tuple[Tensor, Tensor]:
        """The task's ``n_train`` training samples (the training stream)."""
        return self.sample_data(task, self.config.n_train, self._train_seeds[task])

    def eval_data(self, task: int) -> tuple[Tensor, Tensor]:
        """Held-out sequences ``x, y (n_eval_sequences, T, D)`` from the evaluation stream."""
        if task not in self._eval_cache:
            cfg = self.config
            x, y = self.sample_data(task, cfg.n_eval_sequences * cfg.seq_len, self._eval_seeds[task])
            shape = (cfg.n_eval_sequences, cfg.seq_len, cfg.dim)
            self._eval_cache[task] = (x.reshape(shape), y.reshape(shape))
        return self._eval_cache[task]

    def model_inputs(self, x: Tensor, y: Tensor, task: Tensor) -> Tensor:
        """Model input ``(B, T, I)`` from ``x, y (B, T, D)`` and ``task (B,)``.

        ``[x_t, y_{t−1}, 1{t > 0}]`` with ``y_{−1} = 0`` (the flag tells a zero feedback at the first
        step from a target near zero); the oracle gets ``one_hot(task)`` appended.
        """
        y_prev = torch.cat([torch.zeros_like(y[:, :1]), y[:, :-1]], dim=1)
        flag = torch.ones_like(x[..., :1])
        flag[:, 0] = 0.0
        parts = [x, y_prev, flag]
        if self.config.model == "oracle":
            onehot = F.one_hot(task.to(self.device), len(self.tasks)).to(x.dtype)
            parts.append(onehot[:, None, :].expand(-1, x.shape[1], -1))
        return torch.cat(parts, dim=-1)

    # ------------------------------------------------------------------ training
    def _forward(self, inputs: Tensor, state=None) -> tuple[Tensor, object]:
        if self.config.model == "dnc":
            return self.model(inputs, state)
        return self.model(inputs)

    def update(self, x: Tensor, y: Tensor, task: int) -> float:
        """One batched update on current-task sequences ``x, y (B, T, D)`` plus a replayed batch.

        Loss: mean_b L_b + λ · mean_r w_r L_r, with L the per-sequence MSE over all steps, w the
        importance weights (1 for uniform replay). The replayed sequences' priorities are then set from
        their losses of this forward pass, and the current sequences are added to the buffer.

        :return: the loss on the current sequences.
        """
        cfg = self.config
        b = x.shape[0]
        task_ids = torch.full((b,), task, dtype=torch.long)
        xs, ys, ts = x, y, task_ids
        replayed = None
        if self.replay is not None and len(self.replay) > 0 and cfg.replay_sequences > 0:
            rx, ry, rt, weights, idx = self.replay.sample(cfg.replay_sequences, self.rng)
            replayed = (weights.to(self.device), idx)
            xs, ys, ts = (
                torch.cat([x, rx.to(self.device)]),
                torch.cat([y, ry.to(self.device)]),
                torch.cat([ts, rt]),
            )
        x_in = xs
        if cfg.input_noise > 0:
            noise = torch.randn(xs.shape, generator=self._noise_gen).to(xs) * cfg.input_noise
            x_in = xs + noise
        inputs = self.model_inputs(x_in, ys, ts)
        state = None
        if cfg.persist_memory:
            state = self._training_state(inputs.shape[0], b)
        pred, new_state = self._forward(inputs, state)
        per_seq = ((pred - ys) ** 2).mean(dim=(1, 2))  # (B + R,)
        loss = per_seq[:b].mean()
        if replayed is not None:
            loss = loss + cfg.replay_weight * (replayed[0] * per_seq[b:]).mean()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.grad_clip > 0:
            nn.utils.clip_grad_norm_(self.model.parameters(), cfg.grad_clip)
        self.optimizer.step()
        if replayed is not None and self.replay.mode == "prioritized":
            self.replay.update_priorities(replayed[1], per_seq[b:].detach())
        if self.replay is not None:
            self.replay.add(x, y, task_ids)
        if cfg.persist_memory:
            self._stream_state = DNC.detach_state(type(new_state)(*(f[:b] for f in new_state)))
        return float(per_seq[:b].detach().mean())

    def _training_state(self, batch: int, b_current: int):
        """Initial state for a persistent-memory update: the stream's state for the current rows,
        the initial state for replayed rows."""
        init = self.model.initial_state(batch, device=self.device)
        if self._stream_state is None or self._stream_state[0].shape[0] != b_current:
            return init
        return type(init)(*(torch.cat([s, i[b_current:]]) for s, i in zip(self._stream_state, init)))

    def train_task(self, task: int, epochs: int | None = None) -> list[float]:
        """Train on task ``task`` for ``epochs`` (default ``config.epochs``) epochs; each epoch shuffles
        the training samples into ``n_train / T`` sequences, processed ``batch_sequences`` at a time.

        :return: the mean training loss of each epoch.
        """
        cfg = self.config
        epochs = cfg.epochs if epochs is None else epochs
        x, y = self.training_data(task)
        n_seq = cfg.n_train // cfg.seq_len
        losses = []
        self.model.train()
        for _ in range(epochs):
            perm = torch.from_numpy(self.rng.permutation(cfg.n_train)).to(self.device)
            xs = x[perm].reshape(n_seq, cfg.seq_len, cfg.dim)
            ys = y[perm].reshape(n_seq, cfg.seq_len, cfg.dim)
            total = 0.0
            for start in range(0, n_seq, cfg.batch_sequences):
                sl = slice(start, start + cfg.batch_sequences)
                total += self.update(xs[sl], ys[sl], task) * xs[sl].shape[0]
            losses.append(total / n_seq)
        return losses

    # ------------------------------------------------------------------ evaluation
    @torch.no_grad()
    def evaluate(self, task: int) -> float:
        """Held-out MSE on task ``task`` over steps ``t ≥ context_steps``.

        With ``persist_memory`` the held-out sequences are one stream: each starts from the state the
        previous one ended in (the first from the initial state).
        """
        cfg = self.config
        x, y = self.eval_data(task)
        self.model.eval()
        task_ids = torch.full((x.shape[0],), task, dtype=torch.long)
        inputs = self.model_inputs(x, y, task_ids)
        if cfg.persist_memory:
            state = self.model.initial_state(1, device=self.device)
            preds = []
            for s in range(x.shape[0]):
                p, state = self.model(inputs[s : s + 1], state)
                preds.append(p)
            pred = torch.cat(preds)
        else:
            pred, _ = self._forward(inputs)
        self.model.train()
        return float(((pred - y) ** 2)[:, cfg.context_steps :].mean())

    def evaluate_all(self) -> np.ndarray:
        """Held-out errors on every task ``(num_tasks,)``."""
        return np.array([self.evaluate(j) for j in range(len(self.tasks))])

    def adaptation_errors(
        self, task: int, support: int, steps: Sequence[int], inner_lr: float, backtracking: int = 0
    ) -> dict[int, float]:
        """Held-out error on ``task`` after k SGD steps (MAML's inner loop,
        :func:`memagent.meta.sgd_adapt`) on ``support`` support
        samples of the task (one sequence, from their own random stream).

        The model is not changed.

        :param backtracking: halve a step that would increase the support loss, up to this many times
            (:func:`memagent.meta.safeguarded_step`; 0: plain SGD).
        :return: ``{k: error}`` for each k in ``steps`` (and k = 0).
        """
        from memagent.meta import functional_model, sgd_adapt

        x, y = self.sample_data(task, support, self._support_seeds[task])
        t = torch.tensor([task])
        sx = self.model_inputs(x[None], y[None], t)
        forward, params = functional_model(self.model, output_index=0)
        params = {k: v.detach() for k, v in params.items()}
        ex, ey = self.eval_data(task)
        einputs = self.model_inputs(ex, ey, torch.full((ex.shape[0],), task, dtype=torch.long))
        cs = self.config.context_steps
        out = {}
        for k in sorted({0, *steps}):
            adapted = sgd_adapt(
                forward, params, sx, y[None], steps=k, inner_lr=inner_lr, backtracking=backtracking
            )
            with torch.no_grad():
                out[k] = float(((forward(adapted, einputs) - ey) ** 2)[:, cs:].mean())
        return out

    # ------------------------------------------------------------------ protocol
    def run(
        self,
        progress: bool = False,
        callback: Callable[[int, np.ndarray], None] | None = None,
        adapt_support: int = 0,
        adapt_steps: Sequence[int] = (1, 5),
        adapt_lr: float = 0.01,
    ) -> ContinualResult:
        """The whole protocol: baseline errors, then for each task train and evaluate on all tasks.

        :param progress: show a tqdm bar over the training epochs.
        :param callback: called as ``callback(task, errors_row)`` after each task.
        :param adapt_support: K; when > 0, on each task's arrival measure the error before and after
            ``adapt_steps`` SGD steps on K support samples (:meth:`adaptation_errors`).
        :return: a :class:`ContinualResult`.
        """
        cfg = self.config
        num_tasks = len(self.tasks)
        if progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=num_tasks * cfg.epochs, desc=f"{cfg.model}/{cfg.replay}", unit="epoch", leave=False
            )
        baseline = self.evaluate_all()
        errors = np.zeros((num_tasks, num_tasks))
        train_losses, adaptation = [], {}
        train_seconds = 0.0
        for task in range(num_tasks):
            if adapt_support > 0:
                adaptation[task] = self.adaptation_errors(task, adapt_support, adapt_steps, adapt_lr)
            start = time.perf_counter()
            losses = []
            for _ in range(cfg.epochs):
                losses += self.train_task(task, epochs=1)  # one epoch at a time: a live progress bar
                if progress:
                    bar.update(1)
            train_seconds += time.perf_counter() - start
            train_losses.append(losses)
            errors[task] = self.evaluate_all()
            logger.info(
                "after task %d (%s): held-out errors %s",
                task,
                self.task_names[task],
                np.round(errors[task], 4),
            )
            if callback is not None:
                callback(task, errors[task].copy())
        if progress:
            bar.close()
        samples = num_tasks * cfg.epochs * cfg.n_train
        return ContinualResult(
            task_names=self.task_names,
            errors=errors,
            baseline=baseline,
            metrics=compute_metrics(errors, baseline),
            train_losses=train_losses,
            train_seconds=train_seconds,
            samples_per_second=samples / max(train_seconds, 1e-12),
            config=dataclasses.replace(cfg),
            adaptation=adaptation,
        )
