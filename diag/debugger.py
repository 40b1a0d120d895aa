"""One object that records loss, gradients and activations each step and reports on them (``TrainingDebugger``).

``step`` accepts both documented call forms, the step-first form ``step(step, loss,
gradients, learning_rate, activations=None, val_loss=None)`` and the loss-first form
``step(loss, gradients, activations, lr)``, positionally or by keyword.

The report is the shared rule table of :mod:`diag.diagnosis` (the live hook's and the
analyzer's) on the history's per-step series, with what only the debugger sees added
to it: per-layer gradient norms and the activation health of the recorded layers.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from diag.activations import ActivationMonitor
from diag.diagnosis import diagnose
from diag.gradient_stats import GradientStats, weight_gradient_norms
from diag.history import TrainingHistory, report_of
from diag.series import RunSeries

_FORM_000 = ("step", "loss", "gradients", "learning_rate", "activations", "val_loss")
_FORM_001 = ("loss", "gradients", "activations", "lr", "val_loss")


def _looks_like_gradients(value: Any) -> bool:
    """Gradients (a list, a mapping, a module, an array with more than one entry) rather than a loss."""
    if isinstance(value, (list, tuple, Mapping, torch.nn.Module)):
        return True
    if isinstance(value, torch.Tensor):
        return value.numel() > 1
    return isinstance(value, np.ndarray) and value.size > 1


def _loss_value(loss: Any) -> Any:
    """The loss as given when it is one number (a float, a NumPy scalar, a one-element tensor)."""
    if isinstance(loss, bool) or not isinstance(
        loss, (int, float, np.number, np.ndarray, torch.Tensor)
    ):
        raise TypeError(
            f"loss must be a number (a float or a 0-d tensor such as loss.detach()), got {type(loss).__name__}"
        )
    if isinstance(loss, (np.ndarray, torch.Tensor)) and (
        loss.size != 1 if isinstance(loss, np.ndarray) else loss.numel() != 1
    ):
        raise TypeError(
            f"loss must be a number (the batch's mean loss), got an array of {getattr(loss, 'shape', '?')}"
        )
    return loss


class TrainingDebugger:
    """History, gradient statistics and activation monitoring behind one ``step`` call."""

    def __init__(self, gradient_window: int = 100, activation_window: int = 100) -> None:
        self.history = TrainingHistory()
        self.activation_monitor = ActivationMonitor(window_size=activation_window)
        self.gradient_history: deque[GradientStats] = deque(maxlen=gradient_window)
        # per-layer samples for the shared rules, one per recorded step (NaN where a layer was not seen)
        self._layer_step: list[int] = []
        self._layer: dict[str, dict[str, list[float]]] = {
            "grad_norm": {},
            "dead_fraction": {},
            "saturation": {},
        }

    @property
    def gradient_stats(self) -> list[GradientStats]:
        """The recent gradient statistics, under the name the loss-first API uses."""
        return list(self.gradient_history)

    def step(self, *args: Any, **kwargs: Any) -> None:
        """Record one training step (either documented form; ``lr`` and ``learning_rate`` are aliases).

        ``gradients`` is a list of arrays/tensors, a ``{name: grad}`` mapping or
        a module (its ``.grad`` fields). ``activations`` maps a layer name to its
        outputs. Without a step number, the step is one past the last.
        """
        if "lr" in kwargs:
            if "learning_rate" in kwargs:
                raise TypeError("pass either lr or learning_rate, not both")
            kwargs["learning_rate"] = kwargs.pop("lr")
        use_001 = bool(args) and (
            "step" in kwargs
            or (len(args) >= 2 and _looks_like_gradients(args[1]))
            or (len(args) == 1 and "loss" not in kwargs and "gradients" in kwargs)
        )
        names = tuple(
            "learning_rate" if n == "lr" else n for n in (_FORM_001 if use_001 else _FORM_000)
        )
        if len(args) > len(names):
            raise TypeError(f"step() takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"step() got multiple values for argument {name!r}")
            kwargs[name] = value
        unknown = set(kwargs) - set(_FORM_000)
        if unknown:
            raise TypeError(f"step() got unexpected arguments {sorted(unknown)}")
        missing = [n for n in ("loss", "gradients", "learning_rate") if kwargs.get(n) is None]
        if missing:
            raise TypeError(f"step() missing {missing}")

        kwargs["loss"] = _loss_value(kwargs["loss"])
        gradients = kwargs["gradients"]
        if not isinstance(gradients, (torch.nn.Module, Mapping, torch.Tensor, np.ndarray)):
            gradients = kwargs["gradients"] = list(gradients)  # a generator is read twice below
        grad_stats = GradientStats.from_gradients(gradients)
        self.gradient_history.append(grad_stats)
        self.history.record(
            step=kwargs.get("step"),
            loss=kwargs["loss"],
            grad_norm=grad_stats.global_norm,
            lr=kwargs["learning_rate"],
            val_loss=kwargs.get("val_loss"),
        )
        for name, act in (kwargs.get("activations") or {}).items():
            self.activation_monitor.record(name, act)
        self._record_layers(kwargs["gradients"], kwargs.get("activations") or {})

    def _record_layers(self, gradients: Any, activations: Mapping[str, Any]) -> None:
        """Append this step's per-layer gradient norms and activation health, keeping lists aligned."""
        n = len(self._layer_step)
        samples = {
            "grad_norm": weight_gradient_norms(gradients),
            "dead_fraction": {},
            "saturation": {},
        }
        for name in activations:
            for key, value in self.activation_monitor.latest_health(name).items():
                samples[key][name] = value
        self._layer_step.append(self.history.step[-1])
        for key, values in samples.items():
            table = self._layer[key]
            for name, value in values.items():
                table.setdefault(name, [math.nan] * n).append(value)
            for column in table.values():
                if len(column) == n:
                    column.append(math.nan)

    def series(self) -> RunSeries:
        """The history's per-step series with the per-layer samples only the debugger sees."""
        series = self.history.to_series()
        if any(self._layer.values()):
            series.layer_step = list(self._layer_step)
            series.layer_grad_norm = {k: list(v) for k, v in self._layer["grad_norm"].items()}
            series.layer_dead_fraction = {
                k: list(v) for k, v in self._layer["dead_fraction"].items()
            }
            series.layer_saturation = {k: list(v) for k, v in self._layer["saturation"].items()}
        return series

    def report(self) -> dict[str, Any]:
        """The documented report (status, issues, recommendations, gradient_healthy, activation_issues).

        ``issues`` and ``status`` come from the shared rules, so the same run gets the same codes here,
        from :meth:`TrainingHistory.diagnose` and from the live hook; ``details`` carries the evidence,
        ``activation_issues`` the monitor's per-layer messages.
        """
        diagnosis = report_of(diagnose(self.series()))
        recent = list(self.gradient_history)[-10:]
        gradient_messages = [m for g in recent for m in g.is_healthy()[1]]
        return {
            **diagnosis,
            "gradient_healthy": not gradient_messages,
            "gradient_issues": list(dict.fromkeys(gradient_messages)),
            "activation_issues": self.activation_monitor.diagnose(),
        }

    def quick_check(self) -> bool:
        """Cheap per-step check: False on a non-finite recent loss or NaN/Inf/huge latest gradients."""
        if any(not math.isfinite(v) for v in self.history.loss[-5:]):
            return False
        if self.gradient_history:
            latest = self.gradient_history[-1]
            if latest.num_nans > 0 or latest.num_infs > 0 or latest.norm > 1000:
                return False
        return True
