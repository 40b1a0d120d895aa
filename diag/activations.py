"""Activation health per layer: dead units, saturation, vanishing and exploding scale.

Saturation depends on the activation function: only bounded ones saturate
(sigmoid near 0 or 1, tanh near -1 or +1). Counting ``|x| > 0.99`` for a ReLU
layer would call every healthy unit with a large output saturated. The kind
is given explicitly or inferred from the value range.

A dead unit is one that never fires (never outputs a positive value) over the
whole monitoring window, which is not the same as a layer with many zeros: a
healthy ReLU layer is about half zeros at any moment, yet every unit fires for
some inputs.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from diag.gradient_stats import ArrayLike, as_numpy

# Kinds of activation, by what their outputs can be.
SIGMOID, TANH, RELU, UNBOUNDED = "sigmoid", "tanh", "relu", "unbounded"
BOUNDED = (SIGMOID, TANH)
SATURATION_MARGIN = 0.01  # within this of a bound counts as saturated (for tanh: |x| > 0.99)

_KIND_BY_NAME = {
    "sigmoid": SIGMOID,
    "hardsigmoid": SIGMOID,
    "logsigmoid": UNBOUNDED,
    "tanh": TANH,
    "hardtanh": TANH,
    "softsign": TANH,
    "relu": RELU,
    "relu6": RELU,
    "leaky_relu": UNBOUNDED,
    "leakyrelu": UNBOUNDED,
    "gelu": UNBOUNDED,
    "elu": UNBOUNDED,
    "selu": UNBOUNDED,
    "celu": UNBOUNDED,
    "silu": UNBOUNDED,
    "swish": UNBOUNDED,
    "mish": UNBOUNDED,
    "softplus": UNBOUNDED,
    "linear": UNBOUNDED,
    "identity": UNBOUNDED,
    "none": UNBOUNDED,
    "prelu": UNBOUNDED,
    "rrelu": UNBOUNDED,
}


def activation_kind(activation: str | torch.nn.Module | type | None) -> str | None:
    """The kind (sigmoid, tanh, relu, unbounded) of a named activation, a module or a module class.

    ``None`` means "infer it from the values". Unknown names raise, so a typo
    does not silently switch the saturation check off.
    """
    if activation is None:
        return None
    if isinstance(activation, torch.nn.Module):
        name = type(activation).__name__
    elif isinstance(activation, type):
        name = activation.__name__
    else:
        name = str(activation)
    key = name.lower().replace("-", "_")
    if key in (SIGMOID, TANH, RELU, UNBOUNDED):
        return key
    if key in _KIND_BY_NAME:
        return _KIND_BY_NAME[key]
    raise ValueError(
        f"unknown activation {activation!r}; known: {', '.join(sorted(_KIND_BY_NAME))}"
    )


def infer_kind(min_val: float, max_val: float, has_zeros: bool) -> str:
    """Guess the activation kind from a value range.

    Within [0, 1] without exact zeros: sigmoid-like. Non-negative otherwise
    (exact zeros are ReLU's signature): ReLU-like. Within [-1, 1]: tanh-like.
    Anything else is unbounded, and has no saturation check.
    """
    if min_val >= 0.0:
        return SIGMOID if max_val <= 1.0 and not has_zeros else RELU
    if min_val >= -1.0 and max_val <= 1.0:
        return TANH
    return UNBOUNDED


def saturated_count(values: np.ndarray, kind: str) -> int:
    """How many values sit within 1% of the bounds of a bounded activation (0 for unbounded kinds)."""
    if kind == SIGMOID:
        return int(np.sum((values < SATURATION_MARGIN) | (values > 1.0 - SATURATION_MARGIN)))
    if kind == TANH:
        return int(np.sum(np.abs(values) > 1.0 - SATURATION_MARGIN))
    return 0


def _per_unit(values: np.ndarray, unit_axis: int) -> np.ndarray:
    """Reshape to (units, everything else): units along ``unit_axis`` (features, or channels of a conv)."""
    if values.ndim <= 1:
        return values.reshape(-1, 1)
    return np.moveaxis(values, unit_axis, 0).reshape(values.shape[unit_axis], -1)


@dataclass
class ActivationStats:
    """Statistics of one layer's activations for one batch (over the finite values)."""

    mean: float
    std: float
    min_val: float
    max_val: float
    num_zeros: int
    num_saturated: int
    total_elements: int
    activation: str = UNBOUNDED
    num_nonfinite: int = 0
    unit_fired: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def zero_ratio(self) -> float:
        """Share of exact zeros in the batch."""
        return self.num_zeros / self.total_elements if self.total_elements else 0.0

    @property
    def saturation_ratio(self) -> float:
        """Share of values pinned at the bounds of a bounded activation."""
        return self.num_saturated / self.total_elements if self.total_elements else 0.0

    @classmethod
    def from_activations(
        cls, activations: ArrayLike, activation: str | None = None, unit_axis: int = 1
    ) -> ActivationStats:
        """Compute the statistics; ``activation`` is a kind from :func:`activation_kind` or ``None`` to infer."""
        values = as_numpy(activations).astype(np.float64, copy=False)
        flat = values.ravel()
        finite_mask = np.isfinite(flat)
        finite = flat[finite_mask]
        if finite.size == 0:
            return cls(
                mean=0.0,
                std=0.0,
                min_val=0.0,
                max_val=0.0,
                num_zeros=0,
                num_saturated=0,
                total_elements=flat.size,
                activation=activation or UNBOUNDED,
                num_nonfinite=int(flat.size),
            )
        num_zeros = int(np.sum(finite == 0))
        lo, hi = float(finite.min()), float(finite.max())
        kind = activation or infer_kind(lo, hi, num_zeros > 0)
        per_unit = (
            _per_unit(np.where(np.isfinite(values), values, 0.0), unit_axis)
            if values.ndim
            else None
        )
        return cls(
            mean=float(finite.mean()),
            std=float(finite.std()),
            min_val=lo,
            max_val=hi,
            num_zeros=num_zeros,
            num_saturated=saturated_count(finite, kind),
            total_elements=int(flat.size),
            activation=kind,
            num_nonfinite=int(flat.size - finite.size),
            # per_unit is 2-D, so any(axis=1) is an array (asarray returns it as is)
            unit_fired=np.asarray((per_unit > 0).any(axis=1)) if per_unit is not None else None,
        )


def activation_values(layer_name: str, activations: ArrayLike) -> np.ndarray:
    """A layer's outputs as a NumPy array of numbers; anything else is refused naming the layer."""
    values = as_numpy(activations)
    if not (np.issubdtype(values.dtype, np.number) or values.dtype == np.bool_):
        raise TypeError(
            f"activations of {layer_name!r}: the layer's outputs as a tensor or an array of numbers, "
            f"got {type(activations).__name__}"
        )
    return values


class ActivationMonitor:
    """Keeps a window of per-batch statistics per layer and diagnoses each layer from it.

    ``record(layer, activations, activation=None)``: pass the activation
    (``'relu'``, ``'tanh'``, ``nn.Sigmoid()``...) when known; otherwise the
    kind is inferred from the values seen in the window. Units are along
    ``unit_axis`` (features of a linear layer, channels of a conv layer).
    """

    def __init__(
        self,
        window_size: int = 100,
        dead_threshold: float = 0.5,
        saturation_threshold: float = 0.1,
        vanishing_std: float = 1e-3,
        exploding_abs: float = 1e3,
        unit_axis: int = 1,
    ) -> None:
        if isinstance(window_size, bool) or not isinstance(window_size, int) or window_size < 1:
            raise ValueError(
                f"ActivationMonitor(window_size={window_size!r}): the batches kept per layer, a whole "
                "number >= 1 (a unit is dead when it fired in none of them)"
            )
        self.history: dict[str, deque[ActivationStats]] = {}
        self.kinds: dict[str, str] = {}  # explicitly given kinds
        self.window_size = window_size
        self.dead_threshold = dead_threshold
        self.saturation_threshold = saturation_threshold
        self.vanishing_std = vanishing_std
        self.exploding_abs = exploding_abs
        self.unit_axis = unit_axis

    def record(
        self,
        layer_name: str,
        activations: ArrayLike,
        activation: str | torch.nn.Module | type | None = None,
    ) -> ActivationStats:
        """Record one batch of a layer's outputs (array or tensor); returns its statistics."""
        values = activation_values(layer_name, activations)
        if layer_name not in self.history:
            self.history[layer_name] = deque(maxlen=self.window_size)
        kind = activation_kind(activation)
        if kind is not None:
            self.kinds[layer_name] = kind
        kind = self.kinds.get(layer_name)
        if kind is None:
            # Infer from everything seen in the window, so one batch cannot mislabel the layer.
            finite = values[np.isfinite(values)] if values.size else values
            window = self.history[layer_name]
            if finite.size:
                lo = min([float(finite.min())] + [s.min_val for s in window])
                hi = max([float(finite.max())] + [s.max_val for s in window])
                zeros = bool(np.any(finite == 0)) or any(s.num_zeros for s in window)
                kind = infer_kind(lo, hi, zeros)
        stats = ActivationStats.from_activations(values, kind, self.unit_axis)
        self.history[layer_name].append(stats)
        return stats

    def layer_kind(self, layer_name: str) -> str:
        """The activation kind of a layer: as given, else inferred from the whole window."""
        if layer_name in self.kinds:
            return self.kinds[layer_name]
        window = [s for s in self.history.get(layer_name, ()) if s.total_elements > s.num_nonfinite]
        if not window:
            return UNBOUNDED
        return infer_kind(
            min(s.min_val for s in window),
            max(s.max_val for s in window),
            any(s.num_zeros for s in window),
        )

    def latest_health(self, layer_name: str, dead_window: int = 4) -> dict[str, float]:
        """The layer's latest sample for the shared rules: ``saturation`` (bounded kinds) of the last batch,
        ``dead_fraction`` (ReLU kinds) over the last ``dead_window`` batches, as the live hook samples them.

        A unit counts as dead when it fired in none of those batches; with fewer batches seen, no
        dead fraction yet.
        """
        window = list(self.history.get(layer_name, ()))
        if not window:
            return {}
        kind = self.layer_kind(layer_name)
        out: dict[str, float] = {}
        if kind in BOUNDED and window[-1].activation == kind:
            out["saturation"] = window[-1].saturation_ratio
        if kind == RELU and len(window) >= dead_window:
            masks = [s.unit_fired for s in window[-dead_window:] if s.unit_fired is not None]
            if len(masks) == dead_window and all(m.shape == masks[-1].shape for m in masks):
                out["dead_fraction"] = float(1.0 - np.logical_or.reduce(masks).mean())
        return out

    def summary(self) -> dict[str, dict[str, Any]]:
        """Per layer: kind, dead fraction, saturation ratio, std and max |value| over the window."""
        out = {}
        for layer, window in self.history.items():
            stats = list(window)
            kind = self.layer_kind(layer)
            dead = None
            if kind == RELU:
                masks = [s.unit_fired for s in stats if s.unit_fired is not None]
                masks = [m for m in masks if m.shape == masks[-1].shape] if masks else []
                if masks:
                    fired = np.logical_or.reduce(masks)
                    dead = float(1.0 - fired.mean())
            # A kind that was widened after the fact (sigmoid-looking values that later exceeded 1)
            # makes earlier saturation counts meaningless, so they only count under the layer's kind.
            sat = (
                [s.saturation_ratio for s in stats if s.activation == kind]
                if kind in BOUNDED
                else []
            )
            finite_stds = [s.std for s in stats if s.total_elements > s.num_nonfinite]
            out[layer] = {
                "activation": kind,
                "dead_fraction": dead,
                "saturation": float(np.mean(sat)) if sat else 0.0,
                # over the batches that had finite values: an all-NaN batch has no spread to read
                # (its std of 0 said "vanishing" about a layer that blew up)
                "std": float(np.mean(finite_stds)) if finite_stds else math.nan,
                "max_abs": max((max(abs(s.min_val), abs(s.max_val)) for s in stats), default=0.0),
                "nonfinite": int(sum(s.num_nonfinite for s in stats)),
                "batches": len(stats),
            }
        return out

    def check_activations(self) -> dict[str, list[str]]:
        """The name other monitors use for :meth:`diagnose`: ``{layer: [messages]}`` of unhealthy layers."""
        return self.diagnose()

    @property
    def stats(self) -> dict[str, dict[str, Any]]:
        """The per-layer statistics over the window (:meth:`summary`), under the name other monitors use."""
        return self.summary()

    def diagnose(self) -> dict[str, list[str]]:
        """``{layer: [messages]}`` for layers with dead, saturated, vanishing or exploding activations."""
        issues: dict[str, list[str]] = {}
        for layer, s in self.summary().items():
            messages = []
            if s["dead_fraction"] is not None and s["dead_fraction"] > self.dead_threshold:
                messages.append(
                    f"Dead: {s['dead_fraction']:.0%} of units never fired "
                    f"over {s['batches']} batches"
                )
            if s["saturation"] > self.saturation_threshold:
                messages.append(
                    f"Saturated: {s['saturation']:.0%} of {s['activation']} outputs at their bounds"
                )
            if s["std"] < self.vanishing_std:
                messages.append(f"Vanishing: activation std {s['std']:.1e}")
            if s["nonfinite"]:
                messages.append(f"Exploding: {s['nonfinite']} non-finite values")
            elif s["activation"] not in BOUNDED and s["max_abs"] > self.exploding_abs:
                messages.append(f"Exploding: max |activation| {s['max_abs']:.1e}")
            if messages:
                issues[layer] = messages
        return issues


def detect_dead_neurons(activations: ArrayLike, threshold: float = 0.01) -> tuple[int, float]:
    """``(num_dead, fraction)`` of neurons whose output stays near zero for every sample.

    ``activations`` is (batch, ...): every position after the batch axis is a
    neuron. A neuron is dead when ``|output| < threshold`` for all samples in
    the batch (the documented definition: "always outputs near-zero"); a unit that
    fires for a few samples is alive, however rare.
    """
    values = as_numpy(activations).astype(np.float64, copy=False)
    if values.size == 0:
        return 0, 0.0
    if values.ndim < 2:
        values = values.reshape(-1, 1)
    per_neuron = np.abs(values.reshape(values.shape[0], -1))
    per_neuron = np.where(np.isfinite(per_neuron), per_neuron, np.inf)  # NaN/Inf is not "near zero"
    num_dead = int(np.sum(per_neuron.max(axis=0) < threshold))
    return num_dead, num_dead / per_neuron.shape[1]
