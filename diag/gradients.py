"""Gradient norms: on the device with one fused kernel per call, or on the host for CPU gradients."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

# what NumPy's dot sums as torch's norm does (float16 it would sum in half precision)
HOST_DTYPES = (np.dtype(np.float32), np.dtype(np.float64))
_FLOAT32, _FLOAT64 = HOST_DTYPES  # a tensor's numpy() dtype is one of these objects
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


def host_grad_norm(grads: Sequence[torch.Tensor | None]) -> float | None:
    """The L2 norm of ``grads`` as a host float, summed through NumPy's dot product on the CPU tensors'
    own memory; None when any is not a dense float32/float64 CPU tensor (a GPU's, half precision,
    sparse, one that requires grad): then :func:`global_grad_norm` measures them. A None in ``grads`` (a
    parameter without a gradient) is skipped, so a loop passes ``[p.grad for p in params]``.

    Why: a training step needs the norm before its optimizer step (the non-finite guard reads it on the
    host), right after backward, where each torch op costs several times its warm cost. Timed there,
    after each real backward of a run (``bench/grad_norm.py``), the four ops of ``global_grad_norm`` and
    its host read cost more than a dot per tensor, and every Python operation per tensor counts: the
    loop does one ``numpy()`` (what NumPy cannot read in place is found by it refusing), an identity
    check of the dtype and one dot (``bench/grad_norm.py --rev c407ca2``: the version before, which read
    each ``.grad`` twice through ``grads_of`` and checked every tensor's sum, took 1.28-1.37x as long on
    the digits MLP and 1.12-1.20x on the CNN, 8-12 us more a step). Where a float32 sum
    overflows, it gives what torch's two levels give (each tensor's norm, then the norm of those): a
    total that is not finite is summed again with torch measuring each tensor whose own sum is not
    finite, and a total over float32's range is Inf when every tensor is float32 (torch stacks float64
    norms in float64), so the guard skips exactly the steps torch's norm would have it skip.
    """
    total, count = 0.0, 0
    for g in grads:
        if g is None:
            continue
        try:
            a = g.numpy()  # refused for a GPU's, bfloat16, sparse, or a tensor that requires grad
        except (TypeError, RuntimeError):
            return None
        dtype = a.dtype
        if dtype is not _FLOAT32 and dtype is not _FLOAT64 and dtype not in HOST_DTYPES:
            return None
        total += float(np.vdot(a, a))
        count += 1
    if not math.isfinite(total):  # rare: a blow-up
        total = sum(_square_norm(g) for g in grads if g is not None)
    # torch's float32 norm of the per-tensor norms overflows there (it stacks float64 norms in float64)
    if (
        total > FLOAT32_MAX
        and count > 1
        and all(g.dtype == torch.float32 for g in grads if g is not None)
    ):
        return math.inf
    return math.sqrt(total)


def _square_norm(grad: torch.Tensor) -> float:
    """One tensor's squared norm: NumPy's float32 sum, or torch's norm squared where that sum overflows."""
    a = grad.numpy()
    square = float(np.vdot(a, a))
    return square if math.isfinite(square) else float(torch.linalg.vector_norm(grad)) ** 2
