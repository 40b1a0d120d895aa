"""The per-step training record and the loss-curve diagnosis on it (``TrainingHistory``).

``record`` accepts both documented call forms: the step-first form
``record(step, loss, grad_norm, lr, val_loss=None)`` and the loss-first form
``record(loss, grad_norm, lr)`` (the step is then the next one). Validation
losses are stored with the step they were recorded at (``val_step``), so the
overfitting rule compares validation points with the training losses of the
same stretch of training, not with the first ``len(val_loss)`` steps.

The rules use windows and relative measures so they hold for any loss scale:
each compares window means, and a change only counts when it is larger than
what the step-to-step noise of those windows could produce.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import InitVar, dataclass, field
from typing import Any

import numpy as np
import torch

from diag.codes import BLOWUP_CODES, CODES, Issue
from diag.gradient_stats import MAX_HEALTHY_NORM, MIN_HEALTHY_NORM
from diag.series import RunSeries

# Rule parameters (relative, so independent of the loss scale).
EXPLOSION_FACTOR = 10.0  # loss one order of magnitude above its start
OSCILLATION_CV = 0.2  # detrended std / mean of the late loss
OSCILLATION_SWING = 0.05  # detrended std / starting loss
PLATEAU_THRESHOLD = (
    0.01  # relative improvement per window, beyond noise, that still counts as progress
)
PROGRESS = 0.1  # relative drop from the start that counts as "early progress"
SLOW_DROP = 0.05  # relative drop over the whole run below which the loss "barely moves"
OVERFIT_RISE = 0.05  # validation loss this far (relative) above its best
GRADIENT_GROWTH = 100.0  # late median gradient norm over the early median


def _scalar(value: Any) -> float:
    """A host float from a Python number, a NumPy scalar or a one-element tensor."""
    if isinstance(value, torch.Tensor):
        return float(value.detach().float().cpu().item())
    return (
        float(np.asarray(value, dtype=np.float64).reshape(-1)[0])
        if np.ndim(value)
        else float(value)
    )


def _first_index(mask: np.ndarray) -> int | None:
    idx = np.flatnonzero(mask)
    return int(idx[0]) if idx.size else None


def _rel(a: float, b: float) -> float:
    """(a - b) / |b|, with a zero ``b`` treated as a tiny positive number."""
    return (a - b) / max(abs(b), 1e-12)


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
        self.step.append(step)
        self.loss.append(_scalar(kwargs["loss"]))
        self.grad_norm.append(_scalar(kwargs["grad_norm"]))
        self.learning_rate.append(_scalar(kwargs["lr"]))
        if kwargs.get("val_loss") is not None:
            self.val_loss.append(_scalar(kwargs["val_loss"]))
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

    def _window(self, window: int | None) -> int:
        n = len(self.loss)
        return max(10, n // 4) if window is None else max(2, int(window))

    def _start(self, window: int) -> float:
        """The starting loss level: the median of the first few finite values."""
        head = np.asarray(self.loss[: max(3, min(window // 5, 20))], dtype=np.float64)
        head = head[np.isfinite(head)]
        return float(np.median(head)) if head.size else math.nan

    def _late(self, window: int) -> tuple[np.ndarray, np.ndarray]:
        """The last two windows of loss, as (previous, last)."""
        a = np.asarray(self.loss, dtype=np.float64)
        return a[-2 * window : -window], a[-window:]

    @staticmethod
    def _significant_drop(prev: np.ndarray, last: np.ndarray) -> tuple[float, float]:
        """Relative drop of the window mean, and three standard errors of it (more than noise alone gives)."""
        m_prev, m_last = float(prev.mean()), float(last.mean())
        # Step-to-step noise from first differences, so a smooth trend inside a window is not noise.
        noise_var = float(np.var(np.diff(np.concatenate([prev, last])))) / 2.0
        se = math.sqrt(noise_var / prev.size + noise_var / last.size)
        return -_rel(m_last, m_prev), 3.0 * se / max(abs(m_prev), 1e-12)

    # ------------------------------------------------------------------ detectors
    def detect_explosion(self) -> Issue | None:
        """Loss went non-finite, or grew an order of magnitude above where it started."""
        if not self.loss:
            return None
        a = np.asarray(self.loss, dtype=np.float64)
        bad = _first_index(~np.isfinite(a))
        if bad is not None:
            return self._issue(
                "LOSS_EXPLOSION", bad, f"loss went {a[bad]} at step {self.step[bad]}"
            )
        start = self._start(self._window(None))
        if not start > 0 or a.size < 5:
            return None
        # A rolling median of 5 so one spike is not an explosion; rolled[j] covers steps j..j+4.
        rolled = np.median(np.lib.stride_tricks.sliding_window_view(a, 5), axis=1)
        grown = _first_index(rolled > EXPLOSION_FACTOR * start)
        if grown is None:
            return None
        grown += 4
        return self._issue(
            "LOSS_EXPLOSION",
            grown,
            f"loss rose from {start:.4g} to {a.max():.4g} "
            f"(x{a.max() / start:.0f}); above x{EXPLOSION_FACTOR:.0f} at step {self.step[grown]}",
        )

    def detect_oscillation(self, window: int | None = None) -> Issue | None:
        """Loss swings widely (relative to its level) in the late run without a downward trend."""
        w = self._window(window)
        if len(self.loss) < 2 * w:
            return None
        prev, last = self._late(w)
        late = np.concatenate([prev, last])
        if not np.all(np.isfinite(late)):
            return None
        x = np.arange(late.size, dtype=np.float64)
        slope, intercept = np.polyfit(x, late, 1)
        resid = late - (slope * x + intercept)
        cv = float(resid.std() / max(abs(late.mean()), 1e-12))
        swing = float(resid.std() / max(abs(self._start(w)), 1e-12))
        drop, noise = self._significant_drop(prev, last)
        if cv < OSCILLATION_CV or swing < OSCILLATION_SWING or drop > max(noise, PROGRESS):
            return None
        return self._issue(
            "LOSS_OSCILLATION",
            len(self.loss) - 2 * w,
            f"late loss swings by {cv:.0%} of its mean ({resid.std():.3g}) "
            f"and fell only {drop:.1%} between the last two windows of {w} steps",
        )

    def detect_plateau(self, threshold: float = 0.001, window: int | None = None) -> bool:
        """Whether the loss stopped improving after early progress (code LOSS_PLATEAU).

        Plateaued: the mean loss of the last ``window`` steps fell less than
        ``threshold`` (relative) below the window before it, beyond what the
        noise of those windows can produce (three standard errors), while the
        loss had dropped at least 10% from its start. A loss that never moved is SLOW_CONVERGENCE,
        not a plateau. ``window`` defaults to a quarter of the run (at least 10).
        """
        return self._plateau(threshold, window) is not None

    def _plateau(self, threshold: float = 0.001, window: int | None = None) -> Issue | None:
        w = self._window(window)
        if len(self.loss) < 2 * w:
            return None
        prev, last = self._late(w)
        if not (np.all(np.isfinite(prev)) and np.all(np.isfinite(last))):
            return None
        start = self._start(w)
        progress = -_rel(float(prev.mean()), start)
        drop, noise = self._significant_drop(prev, last)
        if progress < PROGRESS or drop >= threshold + noise:
            return None
        return self._issue(
            "LOSS_PLATEAU",
            len(self.loss) - 2 * w,
            f"loss fell {progress:.0%} from {start:.4g} then changed {-drop:+.2%} "
            f"over the last {w} steps (noise level {noise:.2%})",
        )

    def detect_slow_convergence(self, window: int | None = None) -> Issue | None:
        """The loss barely moved over the whole run (below 5% from its start): LR too low."""
        w = self._window(window)
        if len(self.loss) < 2 * w:
            return None
        _, last = self._late(w)
        if not np.all(np.isfinite(last)):
            return None
        start = self._start(w)
        drop = -_rel(float(last.mean()), start)
        if not start > 0 or drop >= SLOW_DROP:
            return None
        return self._issue(
            "SLOW_CONVERGENCE",
            self.step[0] if self.step else 0,
            f"loss moved {-drop:+.2%} from {start:.4g} over {len(self.loss)} steps",
        )

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
        """Validation loss rose above its best while the training loss of the same stretch kept falling.

        Validation points are matched with the training steps they were
        recorded at; windows of a quarter of the validation points are compared.
        """
        m = len(self.val_loss)
        if m < min_points:
            return None
        val = np.asarray(self.val_loss, dtype=np.float64)
        train = self._aligned_train_loss()
        if not (np.all(np.isfinite(val)) and np.all(np.isfinite(train))):
            return None
        k = max(1, m // 4)
        val_roll = np.convolve(val, np.ones(k) / k, mode="valid")  # val_roll[i] = mean(val[i:i+k])
        train_roll = np.convolve(train, np.ones(k) / k, mode="valid")
        best = int(np.argmin(val_roll[:-k])) if val_roll.size > k else None
        if best is None:
            return None
        rise = _rel(float(val_roll[-1]), float(val_roll[best]))
        train_drop = -_rel(float(train_roll[-1]), float(train_roll[best]))
        if rise < OVERFIT_RISE or train_drop <= 0:
            return None
        first = best + int(np.argmin(val[best : best + k]))
        return self._issue(
            "OVERFITTING",
            self.val_step[first],
            f"validation loss rose {rise:.0%} above its best {val[first]:.4g} "
            f"(step {self.val_step[first]}) while training loss fell {train_drop:.0%}",
        )

    def _gradient_issues(self) -> list[Issue]:
        g = np.asarray(self.grad_norm, dtype=np.float64)
        if g.size == 0:
            return []
        issues = []
        bad = _first_index(~np.isfinite(g))
        if bad is not None:
            issues.append(
                self._issue(
                    "NONFINITE_GRADIENTS",
                    bad,
                    f"gradient norm was {g[bad]} at step {self.step[bad]}",
                )
            )
        finite = g[np.isfinite(g)]
        if finite.size < 5:
            return issues
        w = max(5, finite.size // 10)
        early, late = float(np.median(finite[:w])), float(np.median(finite[-w:]))
        if late > MAX_HEALTHY_NORM or (early > 0 and late > GRADIENT_GROWTH * early):
            first = _first_index(
                np.isfinite(g)
                & (
                    g
                    > max(
                        MAX_HEALTHY_NORM if late > MAX_HEALTHY_NORM else 0.0,
                        GRADIENT_GROWTH * early,
                    )
                )
            )
            issues.append(
                self._issue(
                    "EXPLODING_GRADIENTS",
                    first if first is not None else g.size - 1,
                    f"gradient norm median {early:.3g} early, {late:.3g} late",
                )
            )
        elif late < MIN_HEALTHY_NORM:
            first = _first_index(np.isfinite(g) & (g < MIN_HEALTHY_NORM))
            issues.append(
                self._issue(
                    "VANISHING_GRADIENTS",
                    first if first is not None else 0,
                    f"gradient norm median {late:.2e} over the last {w} steps",
                )
            )
        return issues

    def _issue(self, code: str, index: int, evidence: str) -> Issue:
        severity = "critical" if code in BLOWUP_CODES else "warning"
        step = self.step[index] if 0 <= index < len(self.step) else index
        return Issue(code=code, severity=severity, first_step=int(step), evidence=evidence)

    def issues(self) -> list[Issue]:
        """Every finding, most severe first. After an explosion the curve-shape rules are skipped."""
        found: list[Issue] = []
        explosion = self.detect_explosion()
        if explosion is not None:
            found.append(explosion)
        found += self._gradient_issues()
        if explosion is None:
            shape = (
                self.detect_oscillation()
                or self._plateau(PLATEAU_THRESHOLD)
                or self.detect_slow_convergence()
            )
            if shape is not None:
                found.append(shape)
            overfit = self.detect_overfitting()
            if overfit is not None:
                found.append(overfit)
        return sorted(found, key=lambda i: i.severity != "critical")

    def diagnose(self) -> dict[str, Any]:
        """``{'status', 'issues', 'recommendations', 'details'}`` (the documented shape, plus evidence).

        ``issues`` is the list of codes (as documented), ``recommendations``
        the fixes from :data:`diag.codes.CODES` for them, ``details`` one
        :meth:`Issue.to_dict` per code with severity, first step and evidence.
        """
        found = self.issues()
        recommendations: list[str] = []
        for issue in found:
            recommendations += [
                r for r in CODES[issue.code]["recommendations"] if r not in recommendations
            ]
        status = (
            "critical"
            if any(i.severity == "critical" for i in found)
            else "warning"
            if found
            else "healthy"
        )
        return {
            "status": status,
            "issues": [i.code for i in found],
            "recommendations": recommendations,
            "details": [i.to_dict() for i in found],
        }

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
        """The same data as a :class:`RunSeries`, the input of the shared rules engine and analyzer."""
        return RunSeries(
            num_classes=num_classes,
            step=list(self.step),
            loss=list(self.loss),
            grad_norm=list(self.grad_norm),
            lr=list(self.learning_rate),
            epoch_step=list(self.val_step),
            epoch_val_loss=list(self.val_loss),
        )


def _get_lr(self: TrainingHistory) -> list[float]:
    return self.learning_rate


def _set_lr(self: TrainingHistory, value: Sequence[float]) -> None:
    self.learning_rate = list(value)


# Installed after the dataclass is built: ``lr`` is an init-only argument of the
# constructor and, on instances, an alias of ``learning_rate`` (the loss-first API's name).
# setattr: to the type checker the class has ``lr`` only as the InitVar, not as an attribute.
_LR_DOC = "Alias of learning_rate (the loss-first API's field name)."
setattr(TrainingHistory, "lr", property(_get_lr, _set_lr, doc=_LR_DOC))  # noqa: B010
