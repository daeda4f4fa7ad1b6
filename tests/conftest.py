"""Shared test settings: one torch thread per process (CI has 2 cores and runs pytest -n 2)."""

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MPLBACKEND", "Agg")

import torch  # noqa: E402

torch.set_num_threads(1)
