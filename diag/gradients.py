"""Gradient norms: on the device with one fused kernel per call, or on the host for CPU gradients."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

# what NumPy's dot sums as torch's norm does (float16 it would sum in half precision)
HOST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
FLOAT32_MAX = torch.finfo(torch.float32).max


def grads_of(parameters: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The existing ``.grad`` tensors of ``parameters`` (parameters without a gradient are skipped)."""
    return [p.grad for p in parameters if p.grad is not None]


def global_grad_norm(parameters: Iterable[torch.Tensor]) -> torch.Tensor:
    """L2 norm over all gradients as a 0-d device tensor (no host sync): one ``_foreach_norm``."""
    grads = grads_of(parameters)
    if not grads:
        return torch.zeros(())
    norms = torch._foreach_norm(grads)
    return torch.linalg.vector_norm(torch.stack(norms))


def host_grad_norm(grads: Sequence[torch.Tensor]) -> float | None:
    """The L2 norm of ``grads`` as a host float, summed through NumPy's dot product on the CPU tensors'
    own memory; None when any is not a dense float32/float64 CPU tensor (a GPU's, half precision,
    sparse, one that requires grad): then :func:`global_grad_norm` measures them.

    Why: a training step needs the norm before its optimizer step (the non-finite guard reads it on the
    host), right after backward, where each torch op costs several times its warm cost. Timed there
    (interleaved rounds of 20 digits-MLP steps), the four ops of ``global_grad_norm`` and its host read
    cost ~40 us a step, a dot per tensor ~20 (``bench/epoch_costs.py`` prices it per epoch;
    ``bench/grad_norm.py`` times torch's ways beside it inside a run, each 1.04-2.4x as long); a tensor's
    own attributes (device, dtype, layout) cost another ~10-15, so what NumPy cannot read in place is
    found by ``Tensor.numpy`` refusing it. Where a float32 sum overflows, it gives what torch's two levels give (each tensor's norm, then the norm of those): a
    tensor whose own sum is not finite is measured by torch, and a total over float32's range is Inf
    when every tensor is float32 (torch stacks float64 norms in float64), so the guard skips exactly the
    steps torch's norm would have it skip.
    """
    total = 0.0
    try:
        for g in grads:
            a = g.numpy()  # refused for a GPU's, bfloat16, sparse, or a tensor that requires grad
            if a.dtype not in HOST_DTYPES:
                return None
            square = float(np.vdot(a, a))
            if not math.isfinite(square):  # rare: a blow-up
                square = float(torch.linalg.vector_norm(g)) ** 2
            total += square
    except (TypeError, RuntimeError):
        return None
    # torch's float32 norm of the per-tensor norms overflows there (it stacks float64 norms in float64)
    if total > FLOAT32_MAX and len(grads) > 1 and all(g.dtype == torch.float32 for g in grads):
        return math.inf
    return math.sqrt(total)
