"""One object that records loss, gradients and activations each step and reports on them (``TrainingDebugger``).

``step`` accepts both documented call forms, the step-first form ``step(step, loss,
gradients, learning_rate, activations=None, val_loss=None)`` and the loss-first form
``step(loss, gradients, activations, lr)``, positionally or by keyword.

The report is the shared rule table of :mod:`diag.diagnosis` (the live hook's and the
analyzer's) on the history's per-step series, with what only the debugger sees added
to it: per-layer gradient norms and the activation health of the recorded layers.

A torch loop can instead hand the debugger its model (``watch``) and call ``train_step(loss)``
per step: then the live engine (:class:`diag.live.DiagnosticsHook`) does the collecting and the
diagnosing, at the runner's cost, and ``report()`` is its diagnosis.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diag.activations import ActivationMonitor, activation_values
from diag.diagnosis import diagnose
from diag.gradient_stats import GradientStats, weight_gradient_norms
from diag.gradients import grads_of
from diag.history import TrainingHistory, report_of
from diag.hooks import EventLog, FitState
from diag.live import DiagnosticsHook
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


# what watch(run_dir=...) writes: a folder that holds one of them already holds a run
RUN_FILES = ("report.json", "report.md", "events.jsonl", "summary.png")


def _fresh_run_dir(run_dir: str | Path) -> Path:
    """``run_dir`` for a watched fit, refused before any step when it is a file or holds a run already
    (the runner's or an earlier fit's: its report would be overwritten and its events mixed with ours)."""
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise ValueError(f"watch(run_dir={str(run_dir)!r}): a file is in the way; pass a folder")
    held = [name for name in RUN_FILES if (path / name).exists()]
    if held:
        raise ValueError(
            f"watch(run_dir={str(run_dir)!r}) already holds a run ({', '.join(held)}): pass a new "
            "folder, or delete that one first to replace it"
        )
    try:  # made now: a healthy fit writes no event before its report at the end
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ValueError(
            f"watch(run_dir={str(run_dir)!r}): cannot make it ({exc.strerror})"
        ) from None
    return path


class TrainingDebugger:
    """History, gradient statistics and activation monitoring behind one ``step`` call."""

    def __init__(self, gradient_window: int = 100, activation_window: int = 100) -> None:
        self.live: DiagnosticsHook | None = (
            None  # set by watch(): the live engine drives the report
        )
        self.state: FitState | None = None
        self._finished = False  # set by finish(): a watched fit's events end there
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

        activations = kwargs.get("activations")
        if activations is not None and not isinstance(activations, Mapping):
            raise TypeError(
                "step(activations=...) maps each layer's name to its outputs ({'fc1': tensor, ...}), "
                f"got {type(activations).__name__}"
            )
        activations = {
            name: activation_values(name, act) for name, act in (activations or {}).items()
        }
        gradients = kwargs["gradients"]
        if not isinstance(gradients, (torch.nn.Module, Mapping, torch.Tensor, np.ndarray)):
            gradients = kwargs["gradients"] = list(gradients)  # a generator is read twice below
        grad_stats = GradientStats.from_gradients(gradients)
        # record() checks the loss, LR and norm before anything is kept: a refused step changes nothing
        self.history.record(
            step=kwargs.get("step"),
            loss=kwargs["loss"],
            grad_norm=grad_stats.global_norm,
            lr=kwargs["learning_rate"],
            val_loss=kwargs.get("val_loss"),
        )
        self.gradient_history.append(grad_stats)
        for name, act in activations.items():
            self.activation_monitor.record(name, act)
        self._record_layers(kwargs["gradients"], activations)

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
        if self.live is not None:
            issues = self.live.issues
            return {
                **report_of(issues),
                "recommendations": list(
                    dict.fromkeys(r for issue in issues for r in issue.recommendations)
                ),
                "gradient_healthy": not any(
                    i.code in ("NONFINITE_GRADIENTS", "EXPLODING_GRADIENTS", "VANISHING_GRADIENTS")
                    for i in issues
                ),
                "gradient_issues": [i.evidence for i in issues if "GRADIENT" in i.code],
                "activation_issues": {
                    i.layer or "model": [i.evidence]
                    for i in issues
                    if i.code in ("DEAD_NEURONS", "SATURATED_ACTIVATIONS")
                },
            }
        diagnosis = report_of(diagnose(self.series()))
        recent = list(self.gradient_history)[-10:]
        gradient_messages = [m for g in recent for m in g.is_healthy()[1]]
        return {
            **diagnosis,
            "gradient_healthy": not gradient_messages,
            "gradient_issues": list(dict.fromkeys(gradient_messages)),
            "activation_issues": self.activation_monitor.diagnose(),
        }

    # -- driven from a hand loop by the live engine -----------------------------
    def watch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        *,
        num_classes: int | None = None,
        max_steps: int = 0,
        run_dir: str | Path | None = None,
        writer: Any = None,
        advice: str | Mapping[str, str] = "plain",
        **hook_options: Any,
    ) -> TrainingDebugger:
        """Watch a torch training loop with the live engine (the runner's diagnosis); returns ``self``.

        Then call :meth:`train_step` after each ``optimizer.step()``, optionally :meth:`end_epoch` with
        validation numbers, and :meth:`finish` at the end (the report). The step count, the gradient
        norm and the event order are kept here, so the loop needs no other glue. ``run_dir`` gets
        ``events.jsonl``, ``report.json``/``report.md`` and ``summary.png``; ``writer`` (a
        ``SummaryWriter``) the diagnosis as text; ``hook_options`` go to :class:`DiagnosticsHook`.
        """
        if not isinstance(model, torch.nn.Module):
            raise TypeError(
                f"watch() takes the torch.nn.Module being trained, got {type(model).__name__}"
            )
        if optimizer is not None and not isinstance(getattr(optimizer, "param_groups", None), list):
            raise TypeError(
                "watch(optimizer=...) takes the torch.optim.Optimizer that steps the model (its "
                f"param_groups give the LR and settings the rules read), got {type(optimizer).__name__}"
            )
        if num_classes is not None and (
            isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2
        ):
            raise ValueError(
                f"watch(num_classes={num_classes!r}): the number of classes, a whole number >= 2 "
                "(the chance-level checks read ln(num_classes)); None when it is not a classifier"
            )
        if isinstance(max_steps, bool) or not isinstance(max_steps, int) or max_steps < 0:
            raise ValueError(
                f"watch(max_steps={max_steps!r}): the steps the fit will take, a whole number "
                "(0 when unknown)"
            )
        run_path = _fresh_run_dir(run_dir) if run_dir is not None else None
        hook_options.setdefault("summary_png", run_path is not None)
        self.live = DiagnosticsHook(
            advice=advice, write_report=run_path is not None, **hook_options
        )
        self.state = FitState(
            model=model,
            optimizer=optimizer,
            num_classes=num_classes,
            max_steps=max_steps,
            run_dir=run_path,
            writer=writer,
            events=EventLog(run_path / "events.jsonl" if run_path is not None else None),
        )
        self._params = [p for p in model.parameters() if p.requires_grad]
        self._finished = False
        self.live.on_fit_start(self.state)
        return self

    def _watched(self, call: str) -> tuple[DiagnosticsHook, FitState]:
        if self.live is None or self.state is None:
            raise RuntimeError(
                f"TrainingDebugger.{call}() needs watch(model, optimizer) first; "
                "for recorded numbers use step(...)"
            )
        if self._finished:  # its report and figure are written: more steps would be in neither
            raise RuntimeError(
                f"TrainingDebugger.{call}() after finish(): that fit is over (its report() stays); "
                "call watch(...) again to watch a new one"
            )
        return self.live, self.state

    def train_step(self, loss: Any, grad_norm: Any = None) -> None:
        """After ``optimizer.step()``: this step's loss (a tensor or a float) into the live engine.

        The global gradient norm is measured here on the device (no host sync) from the gradients
        the step used; pass ``grad_norm`` when you clip (the norm before clipping, as
        ``clip_grad_norm_`` returns it).
        """
        hook, state = self._watched("train_step")
        if isinstance(loss, torch.Tensor):
            loss = loss.detach()
        if grad_norm is None:
            grads = grads_of(self._params)
            if not grads:
                raise RuntimeError(
                    "no gradients to measure: call train_step(loss) after loss.backward() and "
                    "optimizer.step(), before the next optimizer.zero_grad()"
                )
            grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
        state.step += 1
        state.batch_idx += 1
        state.loss, state.grad_norm = loss, grad_norm
        hook.on_train_batch_end(state)

    def end_epoch(
        self,
        val_loss: float | None = None,
        val_acc: float | None = None,
        train_loss: float | None = None,
        train_acc: float | None = None,
    ) -> None:
        """At an epoch's end, with the validation numbers if there are any (host floats or tensors)."""
        hook, state = self._watched("end_epoch")
        given = {
            "val/loss": val_loss,
            "val/acc": val_acc,
            "train/loss": train_loss,
            "train/acc": train_acc,
        }
        metrics = {k: float(v) for k, v in given.items() if v is not None}
        if metrics:
            state.metrics.update(metrics)
            hook.on_validation_end(state)
        hook.on_epoch_end(state)
        state.epoch += 1
        state.batch_idx = 0

    def finish(self) -> dict[str, Any]:
        """The end of the watched fit: the final diagnosis as :meth:`report`'s dict (files into ``run_dir``)."""
        hook, state = self._watched("finish")
        hook.on_fit_end(state)
        state.events.close()
        self._finished = True
        return self.report()

    def quick_check(self) -> bool:
        """Cheap per-step check: False on a non-finite recent loss or NaN/Inf/huge latest gradients."""
        if any(not math.isfinite(v) for v in self.history.loss[-5:]):
            return False
        if self.gradient_history:
            latest = self.gradient_history[-1]
            if latest.num_nans > 0 or latest.num_infs > 0 or latest.norm > 1000:
                return False
        return True
