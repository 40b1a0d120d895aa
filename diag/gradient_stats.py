"""Global gradient statistics and clipping by global norm (``GradientStats``, ``clip_gradients``).

Everything here accepts NumPy arrays and torch tensors alike. Non-finite
entries are counted, never folded into the other statistics: one NaN must not
turn the norm, mean and std into NaN and hide how large the finite part is.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar, overload

import numpy as np
import torch

ArrayLike = Any  # np.ndarray | torch.Tensor | a number | a nested sequence of numbers
G = TypeVar("G")

# Thresholds of the documented ``is_healthy``; shared with TrainingHistory's gradient rules.
MAX_HEALTHY_NORM = 1000.0
MIN_HEALTHY_NORM = 1e-8


def as_numpy(x: ArrayLike) -> np.ndarray:
    """A NumPy view or copy of ``x``: tensors are detached and moved to the CPU first.

    bfloat16 and the float8 types have no NumPy equivalent, so such tensors are widened to float32.
    """
    if isinstance(x, torch.Tensor):
        t = x.detach()
        if t.is_floating_point() and t.dtype not in (torch.float16, torch.float32, torch.float64):
            t = t.float()
        return t.cpu().numpy()
    return np.asarray(x)


def gradient_list(gradients: Any) -> list[ArrayLike]:
    """The gradient arrays in ``gradients``: a sequence, a ``{name: grad}`` mapping, or a module.

    ``None`` entries (parameters that received no gradient) are dropped; for a
    module, the ``.grad`` of each parameter is read.
    """
    if isinstance(gradients, torch.nn.Module):
        return [p.grad for p in gradients.parameters() if p.grad is not None]
    if isinstance(gradients, Mapping):
        gradients = gradients.values()
    if isinstance(gradients, torch.nn.Parameter):
        _refuse_parameters()
    if isinstance(gradients, (np.ndarray, torch.Tensor)):
        return [gradients]
    out = [g for g in gradients if g is not None]
    if any(isinstance(g, torch.nn.Parameter) for g in out):
        _refuse_parameters()
    return out


def _refuse_parameters() -> None:
    """Weights where gradients belong would be measured (or clipped) as if they were gradients."""
    raise TypeError(
        "got parameters (weights) where gradients belong: pass [p.grad for p in model.parameters()] "
        "or the model itself, whose .grad fields are read"
    )


@dataclass
class GradientStats:
    """Statistics of all gradient entries of one step, over the finite entries.

    ``norm`` is the L2 norm of the finite entries; ``num_nans``/``num_infs``
    say whether the true global norm is non-finite. ``min_val`` is the smallest
    non-zero magnitude (0.0 when every finite entry is zero).
    """

    norm: float = 0.0
    max_val: float = 0.0
    min_val: float = 0.0
    mean: float = 0.0
    std: float = 0.0
    num_zeros: int = 0
    num_nans: int = 0
    num_infs: int = 0
    total_elements: int = 0

    @classmethod
    def from_gradients(
        cls, gradients: Iterable[ArrayLike] | Mapping[str, ArrayLike] | torch.nn.Module
    ) -> GradientStats:
        """Compute the statistics of a list of gradient arrays/tensors (or a mapping, or a module's grads)."""
        arrays = [
            as_numpy(g).astype(np.float64, copy=False).ravel() for g in gradient_list(gradients)
        ]
        total = sum(a.size for a in arrays)
        if total == 0:
            return cls()
        num_nans = sum(int(np.isnan(a).sum()) for a in arrays)
        num_infs = sum(int(np.isinf(a).sum()) for a in arrays)
        finite = [a[np.isfinite(a)] for a in arrays] if num_nans + num_infs else arrays
        count = sum(a.size for a in finite)
        if count == 0:
            return cls(num_nans=num_nans, num_infs=num_infs, total_elements=total)
        mean = sum(float(a.sum()) for a in finite) / count
        var = sum(float(np.square(a - mean).sum()) for a in finite) / count
        max_val = max((float(np.abs(a).max()) for a in finite if a.size), default=0.0)
        nonzero_mins = [float(np.abs(a[a != 0]).min()) for a in finite if np.any(a != 0)]
        return cls(
            norm=math.sqrt(sum(float(np.square(a).sum()) for a in finite)),
            max_val=max_val,
            min_val=min(nonzero_mins, default=0.0),
            mean=mean,
            std=math.sqrt(var),
            num_zeros=sum(int((a == 0).sum()) for a in finite),
            num_nans=num_nans,
            num_infs=num_infs,
            total_elements=total,
        )

    @property
    def global_norm(self) -> float:
        """The norm as torch's ``clip_grad_norm_`` would return it: NaN/Inf when any entry is."""
        if self.num_nans:
            return math.nan
        if self.num_infs:
            return math.inf
        return self.norm

    def is_healthy(self) -> tuple[bool, list[str]]:
        """``(healthy, messages)``: non-finite entries, or a norm outside [1e-8, 1000] (as documented)."""
        if self.total_elements == 0:  # not a vanishing norm: nothing was measured
            return False, [
                "No gradients: every .grad was None or empty (measure after loss.backward())"
            ]
        issues = []
        if self.num_nans > 0:
            issues.append(f"NaN gradients: {self.num_nans}")
        if self.num_infs > 0:
            issues.append(f"Inf gradients: {self.num_infs}")
        if self.norm > MAX_HEALTHY_NORM:
            issues.append(f"Norm too large: {self.norm:.2f}")
        if self.norm < MIN_HEALTHY_NORM:
            issues.append(f"Norm too small: {self.norm:.2e}")
        return len(issues) == 0, issues


def _squared_norm(g: ArrayLike) -> float:
    if isinstance(g, torch.Tensor):
        return (
            float(torch.linalg.vector_norm(g.detach(), dtype=torch.float64) ** 2)
            if g.numel()
            else 0.0
        )
    a = np.asarray(g, dtype=np.float64)
    return float(np.square(a).sum())


@overload
def clip_gradients(
    gradients: torch.nn.Module | Iterable[torch.nn.Parameter], max_norm: float = 1.0
) -> tuple[list[torch.Tensor], float]: ...
@overload
def clip_gradients(gradients: Sequence[G], max_norm: float = 1.0) -> tuple[list[G], float]: ...
def clip_gradients(gradients: Any, max_norm: float = 1.0) -> tuple[list[Any], float]:
    """Scale all gradients by one factor so that their global L2 norm is at most ``max_norm``.

    Returns ``(clipped, original_norm)``. Gradient arrays or tensors (the seed API) are left as they
    are: ``clipped`` holds scaled copies, each with the type, dtype and device of its input. A module
    or its parameters (what ``torch.nn.utils.clip_grad_norm_`` takes) have their ``.grad`` clipped in
    place by that function, so the next ``optimizer.step()`` uses them; ``clipped`` holds those same
    ``.grad`` tensors. When the norm is NaN/Inf nothing is scaled (scaling cannot repair NaN and would
    silently zero an Inf step): the gradients stay unchanged and the non-finite norm is returned, so
    the caller can skip the step.
    """
    if not max_norm > 0:
        raise ValueError(f"max_norm must be positive, got {max_norm}")
    if not isinstance(gradients, (torch.nn.Module, Mapping, np.ndarray, torch.Tensor)):
        gradients = list(gradients)  # a generator (model.parameters()) can be read once only
    params = _parameters_of(gradients)
    if params is not None:
        params = [p for p in params if p.grad is not None]
        grads: list[Any] = [p.grad for p in params]
        total_norm = math.sqrt(sum(_squared_norm(g) for g in grads))
        if math.isfinite(total_norm) and params:
            torch.nn.utils.clip_grad_norm_(params, max_norm)
        return grads, total_norm
    grads = gradient_list(gradients)
    total_norm = math.sqrt(sum(_squared_norm(g) for g in grads))
    if not math.isfinite(total_norm):
        clipped = [
            g.clone() if isinstance(g, torch.Tensor) else np.array(g, copy=True) for g in grads
        ]
    else:
        clip_coef = min(1.0, max_norm / (total_norm + 1e-6))
        clipped = [
            g * clip_coef
            if isinstance(g, (torch.Tensor, np.ndarray))
            else np.asarray(g) * clip_coef
            for g in grads
        ]
    return clipped, total_norm


def _parameters_of(gradients: Any) -> list[torch.nn.Parameter] | None:
    """The parameters whose ``.grad`` to clip in place (a module, one parameter, or parameters), or
    ``None`` when ``gradients`` holds gradients themselves (clipped as copies)."""
    if isinstance(gradients, torch.nn.Module):
        return list(gradients.parameters())
    if isinstance(gradients, torch.nn.Parameter):
        return [gradients]
    if isinstance(gradients, (np.ndarray, torch.Tensor)):
        return None
    if isinstance(gradients, Mapping):
        gradients = gradients.values()
    items = list(gradients)
    params = [g for g in items if isinstance(g, torch.nn.Parameter)]
    if not params:
        return None
    if len(params) != len(items):
        raise TypeError(
            "clip_gradients(gradients=...) got parameters mixed with other values: pass the model, "
            "its parameters (model.parameters()), or its gradients ([p.grad for p in "
            "model.parameters()]), one kind only"
        )
    return params


def weight_gradient_norms(gradients: Any) -> dict[str, float]:
    """Gradient norm per weight matrix or kernel (entries with two or more dimensions), input side first.

    What the shared vanishing/exploding rules compare across layers, as the live hook reads them from
    Linear/Conv weights; biases and norm scales (one dimension) say nothing about gradient flow.
    Names come from a mapping's keys or a module's parameter names, else ``layer<i>``. A NaN/Inf
    entry makes that layer's norm non-finite.
    """
    if isinstance(gradients, torch.nn.Module):
        named = [(n, p.grad) for n, p in gradients.named_parameters() if p.grad is not None]
    elif isinstance(gradients, Mapping):
        named = [(str(k), g) for k, g in gradients.items() if g is not None]
    else:
        named = [(f"layer{i}", g) for i, g in enumerate(gradient_list(gradients))]
    out = {}
    for name, g in named:
        a = as_numpy(g)
        if a.ndim >= 2:
            out[name] = float(np.linalg.norm(a.astype(np.float64, copy=False).ravel()))
    return out


class GradientHealthMonitor:
    """Per-layer gradient norms step after step, and what they say about gradient flow.

    ``check_gradients()`` after ``loss.backward()`` reads the model's weight gradients (or the
    ``gradients`` given, in any form :class:`GradientStats` takes) and returns ``(healthy, messages)``:
    non-finite gradients, a global norm outside [1e-8, 1000], or the input-side layer's gradient
    more than ``vanishing_ratio`` times smaller than the output side's (the vanishing-gradient sign).
    """

    def __init__(
        self,
        model: torch.nn.Module | None = None,
        window_size: int = 100,
        vanishing_ratio: float = 1e-3,
    ) -> None:
        self.model = model
        self.vanishing_ratio = float(vanishing_ratio)
        self.history: deque[dict[str, float]] = deque(maxlen=window_size)

    def record(self, gradients: Any = None) -> dict[str, float]:
        """Per weight matrix: this step's gradient norm, input side first (also kept in ``history``)."""
        if gradients is None:
            if self.model is None:
                raise TypeError(
                    "pass gradients, or give the monitor the model: GradientHealthMonitor(model)"
                )
            gradients = self.model
        norms = weight_gradient_norms(gradients)
        self.history.append(norms)
        return norms

    def check_gradients(self, gradients: Any = None) -> tuple[bool, list[str]]:
        """Record this step's gradients and say whether they look healthy (``(healthy, messages)``)."""
        source: Any = self.model if gradients is None else gradients
        if not isinstance(source, (torch.nn.Module, Mapping, torch.Tensor, np.ndarray, type(None))):
            source = list(source)  # a generator is read twice below
        norms = self.record(source)
        _, messages = GradientStats.from_gradients(source).is_healthy()
        finite = [v for v in norms.values() if math.isfinite(v)]
        if len(finite) >= 2 and finite[-1] > 0:
            ratio = finite[0] / finite[-1]
            if ratio < self.vanishing_ratio:
                first, last = next(iter(norms)), list(norms)[-1]
                messages.append(
                    f"Vanishing: {first} gradient norm {finite[0]:.1e} is {ratio:.1e} of {last}'s {finite[-1]:.1e}"
                )
        return not messages, messages
