"""The per-step training record and the loss-curve diagnosis on it (``TrainingHistory``).

``record`` accepts both documented call forms: the step-first form
``record(step, loss, grad_norm, lr, val_loss=None)`` and the loss-first form
``record(loss, grad_norm, lr)`` (the step is then the next one). Validation
losses are stored with the step they were recorded at (``val_step``), so the
overfitting rule compares validation points with the training losses of the
same stretch of training, not with the first ``len(val_loss)`` steps.

The diagnosis is the shared rule table of :mod:`diag.diagnosis`, the one the live
hook and the analyzer use, applied to :meth:`TrainingHistory.to_series`: a series
that says it was sampled per step, so the rules read it as interval means.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
import torch

from diag import diagnosis as rules
from diag.codes import CODES, SEVERITY_RANK, Issue
from diag.series import RunSeries, interval_means


def _scalar(value: Any, name: str) -> float:
    """A host float from a Python number, a NumPy scalar or a one-element array or tensor.

    More than one element (a ``reduction="none"`` loss) is refused, not read as its first entry."""
    if isinstance(value, bool) or not isinstance(
        value, (int, float, np.number, np.ndarray, torch.Tensor)
    ):
        raise TypeError(f"{name} must be a number, got {type(value).__name__}")
    size = value.numel() if isinstance(value, torch.Tensor) else np.size(value)
    if size != 1:
        raise ValueError(
            f"{name} must be one number per step (the batch's mean), got "
            f"{size} values of shape {tuple(np.shape(value))}"
        )
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().cpu().item())
    return float(np.asarray(value, dtype=np.float64).reshape(-1)[0])


def _not_negative(value: float, name: str) -> float:
    """A norm or a learning rate: NaN/Inf are evidence (a blown-up run), a negative value is a mistake."""
    if value < 0:
        raise ValueError(f"{name} must be >= 0 (or NaN/Inf from a broken step), got {value}")
    return value


@dataclass
class TrainingHistory:
    """Metrics recorded every step, and the diagnosis of the curves they form.

    ``lr`` (the loss-first API's field name) is an alias of ``learning_rate``
    (the step-first API's), both as a constructor argument and as an attribute.
    """

    loss: list[float] = field(default_factory=list)
    val_loss: list[float] = field(default_factory=list)
    grad_norm: list[float] = field(default_factory=list)
    learning_rate: list[float] = field(default_factory=list)
    step: list[int] = field(default_factory=list)
    val_step: list[int] = field(default_factory=list)
    lr: InitVar[Sequence[float] | None] = None

    def __post_init__(self, lr: Sequence[float] | None) -> None:
        if lr is not None:
            if self.learning_rate and list(lr) != list(self.learning_rate):
                raise TypeError("lr and learning_rate are the same field; they disagree")
            self.learning_rate = list(lr)
        if not self.step and self.loss:
            self.step = list(range(len(self.loss)))
        if self.val_loss and not self.val_step:
            # Without steps, spread the validation points evenly over the run.
            n, m = max(len(self.loss), 1), len(self.val_loss)
            self.val_step = [
                self.step[min(n - 1, (i + 1) * n // m - 1)] if self.step else i for i in range(m)
            ]

    # ------------------------------------------------------------------ recording
    def record(self, *args: Any, **kwargs: Any) -> None:
        """Record one training step, in either documented form.

        Step-first: ``record(step, loss, grad_norm, lr, val_loss=None)``;
        loss-first: ``record(loss, grad_norm, lr)``. Keywords work in both
        (``learning_rate=`` is accepted for ``lr``). Without a step, the step
        is one past the last recorded one.
        """
        if "learning_rate" in kwargs:
            if "lr" in kwargs:
                raise TypeError("pass either lr or learning_rate, not both")
            kwargs["lr"] = kwargs.pop("learning_rate")
        form_000 = ("step", "loss", "grad_norm", "lr", "val_loss")
        form_001 = ("loss", "grad_norm", "lr", "val_loss")
        names: tuple[str, ...]
        if len(args) >= 4 or (
            args and "step" not in kwargs and any(name in kwargs for name in form_001[: len(args)])
        ):
            names = form_000
        else:
            names = form_001
        if len(args) > len(names):
            raise TypeError(f"record() takes at most {len(names)} positional arguments")
        for name, value in zip(names, args):
            if name in kwargs:
                raise TypeError(f"record() got multiple values for argument {name!r}")
            kwargs[name] = value
        unknown = set(kwargs) - set(form_000)
        if unknown:
            raise TypeError(f"record() got unexpected arguments {sorted(unknown)}")
        missing = [n for n in ("loss", "grad_norm", "lr") if kwargs.get(n) is None]
        if missing:
            raise TypeError(f"record() missing {missing}")
        step = kwargs.get("step")
        step = (self.step[-1] + 1 if self.step else 0) if step is None else int(step)
        # every value checked before any list grows: a refused step leaves the lists aligned
        loss = _scalar(kwargs["loss"], "loss")
        grad_norm = _not_negative(_scalar(kwargs["grad_norm"], "grad_norm"), "grad_norm")
        lr = _not_negative(_scalar(kwargs["lr"], "lr"), "lr")
        val_loss = kwargs.get("val_loss")
        val_loss = None if val_loss is None else _scalar(val_loss, "val_loss")
        self.step.append(step)
        self.loss.append(loss)
        self.grad_norm.append(grad_norm)
        self.learning_rate.append(lr)
        if val_loss is not None:
            self.val_loss.append(val_loss)
            self.val_step.append(step)

    # ------------------------------------------------------------------ curves
    def smoothed_loss(self, window: int = 100) -> list[float]:
        """Exponential moving average of the loss with bias correction (as Adam corrects its moments).

        The decay is ``1 - 1/window`` so ``window`` is the effective averaging
        length; the bias correction makes early values averages rather than
        values pulled toward zero. A non-finite loss stays non-finite from then on.
        """
        if window < 1:
            raise ValueError(f"window must be >= 1, got {window}")
        beta = 1.0 - 1.0 / window
        ema, out = 0.0, []
        for t, value in enumerate(self.loss, start=1):
            ema = beta * ema + (1.0 - beta) * value
            out.append(ema / (1.0 - beta**t) if beta else ema)
        return out

    # ------------------------------------------------------------------ detectors
    # Each detector is one rule of :mod:`diag.diagnosis` applied to :meth:`to_series`, the same rules the
    # live hook and the analyzer apply; ``diagnose`` is :func:`diag.diagnosis.diagnose` on that series.
    def detect_explosion(self) -> Issue | None:
        """Loss went non-finite, or grew an order of magnitude above where it started (and stayed there)."""
        return _rule(rules._loss_explosion, self.to_series())

    def detect_oscillation(self, window: int | None = None) -> Issue | None:
        """Loss swings without a downward trend, over interval means or step to step.

        ``window`` (steps) restricts the judgement to the last ``2 * window`` steps.
        """
        series = self._tail(window)
        return _rule(rules._loss_oscillation, series) or rules.step_oscillation(series)

    def detect_plateau(self, threshold: float = 0.001, window: int | None = None) -> bool:
        """Whether the loss stopped improving after early progress (code LOSS_PLATEAU).

        Plateaued: the loss fell at least 20% from its start early on, and over the last third of
        the run (or the last ``window`` steps) changed by less than ``threshold`` (relative) while
        still well above zero. A loss that never moved is SLOW_CONVERGENCE, not a plateau.
        """
        series = self.to_series()
        if window is not None and len(self.loss) > 3 * int(window):
            # the last third of the judged stretch is the last ``window`` steps
            series = self._tail(int(window) * 3 // 2)
        return _rule(rules._loss_plateau, series, min_change=threshold) is not None

    def detect_slow_convergence(self, window: int | None = None) -> Issue | None:
        """The loss barely moved over the run (``window``: over its last ``2 * window`` steps): LR too low."""
        return _rule(rules._slow_convergence, self._tail(window))

    def _aligned_train_loss(self) -> np.ndarray:
        """For each validation point, the mean finite training loss since the previous validation point.

        When no training step lies in between, the latest training loss at or
        before the validation step stands in; none at all gives NaN.
        """
        order = np.argsort(np.asarray(self.step, dtype=np.int64), kind="stable")
        steps = np.asarray(self.step, dtype=np.int64)[order]
        loss = np.asarray(self.loss, dtype=np.float64)[order]
        finite = np.isfinite(loss)
        csum = np.concatenate([[0.0], np.cumsum(np.where(finite, loss, 0.0))])
        ccount = np.concatenate([[0], np.cumsum(finite)])
        ends = np.searchsorted(steps, np.asarray(self.val_step, dtype=np.int64), side="right")
        starts = np.concatenate([[0], ends[:-1]])
        out = np.full(len(ends), math.nan)
        for i, (a, b) in enumerate(zip(starts, ends)):
            count = ccount[b] - ccount[a]
            if count:
                out[i] = (csum[b] - csum[a]) / count
            elif ccount[b]:  # the latest finite loss at or before this validation step
                out[i] = loss[np.flatnonzero(finite[:b])[-1]]
        return out

    def detect_overfitting(self, min_points: int = 5) -> Issue | None:
        """Validation loss rose well above its best while the training loss of the same stretch kept falling.

        Validation points are matched with the training steps they were recorded at (each point with
        the mean training loss since the one before); fewer than ``min_points`` points are not judged.
        """
        if len(self.val_loss) < min_points:
            return None
        return _rule(rules._overfitting, self.to_series())

    def issues(self) -> list[Issue]:
        """Every finding of the shared rules (:func:`diag.diagnosis.diagnose`), most severe first."""
        return rules.diagnose(self.to_series())

    def diagnose(self) -> dict[str, Any]:
        """``{'status', 'issues', 'recommendations', 'details'}`` (the documented shape, plus evidence).

        ``issues`` is the list of codes (as documented), ``recommendations``
        the fixes from :data:`diag.codes.CODES` for them, ``details`` one
        :meth:`Issue.to_dict` per code with severity, first step and evidence.
        """
        return report_of(self.issues())

    def _tail(self, window: int | None) -> RunSeries:
        """The series of the last ``2 * window`` steps (the whole run without a window)."""
        series = self.to_series()
        if window is None or 2 * int(window) >= len(self.loss):
            return series
        cut = len(self.loss) - 2 * max(2, int(window))
        for name in ("step", "loss", "grad_norm", "lr"):
            setattr(series, name, getattr(series, name)[cut:])
        series.epoch_step, series.epoch_train_loss, series.epoch_val_loss = [], [], []
        return series

    # ------------------------------------------------------------------ early stopping
    def early_stopping(self, patience: int = 10, min_delta: float = 0.0) -> dict[str, Any]:
        """Where the best model was and whether to stop: ``{'best_step', 'best_loss', 'since_best',
        'should_stop', 'monitor'}``.

        Watches the validation loss when there is one (patience counts
        validation points), otherwise the smoothed training loss (patience
        counts steps). A new best must beat the old by ``min_delta`` relative.
        """
        if self.val_loss:
            values, steps, monitor = self.val_loss, self.val_step, "val_loss"
        else:
            values, steps, monitor = self.smoothed_loss(window=10), self.step, "loss"
        best_i, best = None, math.inf
        for i, v in enumerate(values):
            if not math.isfinite(v):
                continue
            if best_i is None or v < best - min_delta * abs(best):
                best_i, best = i, v
        if best_i is None:
            return {
                "best_step": None,
                "best_loss": None,
                "since_best": len(values),
                "should_stop": len(values) > patience,
                "monitor": monitor,
            }
        since = len(values) - 1 - best_i
        return {
            "best_step": int(steps[best_i]),
            "best_loss": float(best),
            "since_best": since,
            "should_stop": since >= patience,
            "monitor": monitor,
        }

    def should_stop_early(self, patience: int = 10, min_delta: float = 0.0) -> bool:
        """True once the monitored loss has not improved for ``patience`` evaluations."""
        return bool(self.early_stopping(patience, min_delta)["should_stop"])

    # ------------------------------------------------------------------ interop
    def to_series(self, num_classes: int | None = None) -> RunSeries:
        """The same data as a per-step :class:`RunSeries`, the input of the shared rules and the analyzer.

        Each validation point is an "epoch" whose training loss is the mean training loss since the
        previous point, so the overfitting rule compares the same stretches of training.
        """
        return RunSeries(
            num_classes=num_classes,
            sampling="step",
            step=list(self.step),
            loss=list(self.loss),
            grad_norm=list(self.grad_norm),
            lr=list(self.learning_rate),
            epoch_step=list(self.val_step),
            epoch_train_loss=[float(v) for v in self._aligned_train_loss()]
            if self.val_loss
            else [],
            epoch_val_loss=list(self.val_loss),
            initial_loss=self.loss[0] if self.loss else None,
            planned_steps=self.step[-1] if self.step else None,
        )


def _rule(rule: Callable[..., Issue | None], series: RunSeries, **kwargs: Any) -> Issue | None:
    """One rule of the shared table on ``series``, read as the table reads it (interval means)."""
    return rule(interval_means(series), **kwargs)


def report_of(found: list[Issue]) -> dict[str, Any]:
    """The documented report shape for a list of findings.

    Every finding is listed; the status is the worst severity at warning or above, so an
    info-level hint alone leaves a run ``healthy``.
    """
    recommendations: list[str] = []
    for issue in found:
        recommendations += [
            r for r in CODES[issue.code]["recommendations"] if r not in recommendations
        ]
    worst = max((SEVERITY_RANK[i.severity] for i in found), default=0)
    status = "critical" if worst >= 2 else "warning" if worst == 1 else "healthy"
    return {
        "status": status,
        "issues": [i.code for i in found],
        "recommendations": recommendations,
        "details": [i.to_dict() for i in found],
    }


def _get_lr(self: TrainingHistory) -> list[float]:
    return self.learning_rate


def _set_lr(self: TrainingHistory, value: Sequence[float]) -> None:
    self.learning_rate = list(value)


# Installed after the dataclass is built: ``lr`` is an init-only argument of the
# constructor and, on instances, an alias of ``learning_rate`` (the loss-first API's name).
# setattr: to the type checker the class has ``lr`` only as the InitVar, not as an attribute.
_LR_DOC = "Alias of learning_rate (the loss-first API's field name)."
setattr(TrainingHistory, "lr", property(_get_lr, _set_lr, doc=_LR_DOC))  # noqa: B010
