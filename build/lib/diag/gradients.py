"""Gradient norms computed on the device with one fused kernel per call."""

from __future__ import annotations

from collections.abc import Iterable

import torch


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
