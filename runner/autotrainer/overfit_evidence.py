"""When an OVERFITTING warning is evidence enough to change a run before its end.

The diagnosis names overfitting as soon as the validation loss has stayed above its best for a few epochs
while training fits further; it sees only the run so far. Healthy runs do that too, and recover: a
batch-normalised ResNet at a constant LR swung between validation accuracy 0.47 and 0.90 from epoch to
epoch, and a CNN on 10%-noisy labels lost 11 points of validation accuracy mid-run without fitting its
training examples any better than its validation ones (a train-validation accuracy gap of 0.04), then
regained them as its schedule annealed. Both were regularised (seed 6's test half), and regularising
sent them to chance for a while. What an ordinary overfitting run needs is what EarlyStopping with a
best checkpoint gives: the best-validation weights tested at the end (``restore_best``).

A change during the run (``regularize``) asks for more (:func:`sustained`): the validation loss above
its best for ``window`` validations in a row, an accuracy fall beyond the noise of a validation set of
its size (a binomial of ``n`` examples, ``z`` standard errors of the difference), and a model that fits
its training examples clearly better than its validation ones (a train-validation accuracy gap of at
least ``min_gap`` over the window: the memorising the regularisation trades back).
"""

from __future__ import annotations

import logging
import math
import statistics
from collections.abc import Sequence
from typing import Any

log = logging.getLogger("runner.autotrainer")


def accuracy_noise(acc: float, n: int, window: int) -> float:
    """The standard error of (one accuracy) minus (the mean of ``window`` others) on ``n`` examples each."""
    p = min(max(acc, 0.0), 1.0)
    return math.sqrt(p * (1.0 - p) * (1.0 / n + 1.0 / (n * window)))


def sustained(
    val_loss: Sequence[float],
    val_acc: Sequence[float],
    train_acc: Sequence[float],
    n: int,
    *,
    window: int,
    min_rise: float,
    z: float,
    min_gap: float,
) -> str | None:
    """Why the overfitting of these per-epoch series (oldest first, one entry per validation) is sustained
    and costly, or None when it is not shown: the last ``window`` validation losses all above the best
    before them by more than ``min_rise``, their mean accuracy below the best accuracy before them by more
    than ``z`` standard errors (``n`` validation examples; 0: unknown, the fall must then exceed the
    series' own epoch-to-epoch change) and the training accuracy above the validation accuracy by at least
    ``min_gap`` on average over them."""
    m = min(len(val_loss), len(val_acc))
    if window < 1 or m <= window:
        return None
    loss, acc = list(val_loss[-m:]), list(val_acc[-m:])
    head, tail = loss[:-window], loss[-window:]
    if not all(math.isfinite(v) for v in loss) or not all(math.isfinite(a) for a in acc):
        return None
    best_loss = min(head)
    if not all(v > best_loss * (1.0 + min_rise) for v in tail):
        return None
    best_acc = max(acc[:-window])
    recent = statistics.fmean(acc[-window:])
    fall = best_acc - recent
    if n > 0:
        noise = z * accuracy_noise((best_acc + recent) / 2.0, n, window)
    else:
        changes = [abs(b - a) for a, b in zip(acc[:-1], acc[1:])]
        noise = statistics.median(changes) if changes else 0.0
    if fall <= noise:
        return None
    gaps = [t - v for t, v in zip(list(train_acc)[-window:], acc[-window:])]
    if len(gaps) < window or not all(math.isfinite(g) for g in gaps):
        return None
    gap = statistics.fmean(gaps)
    if gap < min_gap:
        return None
    return (
        f"validation loss above its best {best_loss:.3g} for {window} validations, accuracy "
        f"{recent:.3f} against its best {best_acc:.3f} (a fall of {fall:.3f}, noise {noise:.3f} on "
        f"{n or 'an unknown number of'} examples), training accuracy {gap:.2f} above validation"
    )


def shown(series: Any, n: int, rule: Any) -> bool:
    """Whether the diagnosis's per-epoch ``series`` (this attempt's, since the last repair) shows the
    evidence ``rule`` asks for (its ``sustained``, ``min_loss_rise``, ``noise_z``, ``min_acc_gap``), on a
    validation set of ``n`` examples."""
    if series is None:
        return False
    why = sustained(
        series.epoch_val_loss,
        series.epoch_val_acc,
        series.epoch_train_acc,
        n,
        window=int(rule.sustained),
        min_rise=float(rule.min_loss_rise or 0.0),
        z=float(rule.noise_z or 0.0),
        min_gap=float(rule.min_acc_gap or 0.0),
    )
    if why is not None:
        log.info("autotrainer: sustained overfitting: %s", why)
    return why is not None
