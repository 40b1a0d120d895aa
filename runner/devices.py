"""Device choice and reproducibility switches."""

from __future__ import annotations

import os
import random

import numpy as np
import torch

from runner.errors import UserError


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present, else CPU; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError(
            "trainer.device=cuda but no CUDA device is available: use trainer.device=cpu or auto"
        )
    return torch.device(name)


def check_precision(precision: str, device: torch.device) -> None:
    """fp16 autocast needs a device whose kernels support it; bf16 works on CPU and recent GPUs."""
    if precision == "bf16" and device.type == "cuda" and not torch.cuda.is_bf16_supported():
        raise UserError(
            "trainer.precision=bf16 is not supported by this GPU: use trainer.precision=fp16 or 32"
        )


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed Python, NumPy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
        torch.use_deterministic_algorithms(True, warn_only=True)
        torch.backends.cudnn.benchmark = False


def set_threads(threads: int | None) -> None:
    """``trainer.threads``: the intra-op CPU threads of this process (None keeps torch's, one per core).

    Why not always one per core: OpenMP threads that wait for a core another process holds spin at every
    op; beside one busy process, digits runs took 1.6x as long as with one thread (bench/threads.py).
    """
    if threads is not None:
        torch.set_num_threads(int(threads))
