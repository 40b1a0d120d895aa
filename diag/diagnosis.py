"""The diagnosis rules: from a :class:`~diag.series.RunSeries` to a list of :class:`~diag.codes.Issue`.

Every rule works on windows and relative measures so it holds for any loss
scale, batch size and number of classes: chance level is ``ln(classes)`` and
``1/classes``, growth is measured against the run's own start, and layer
gradients against each other. Rules aim at mechanisms (is the gradient reaching
the first layer? do the weights move? do units fire?) and the symptoms that
only a mechanism explains are suppressed when it is found (a loss at chance
with vanishing gradients is reported as vanishing gradients, not a data bug).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence

import numpy as np

from diag.codes import BLOWUP_CODES, CODES, SEVERITY_RANK, Issue
from diag.series import RunSeries, interval_means

# Thresholds: ratios and fractions, never absolute loss values.
EXPLOSION_GROWTH = 10.0  # loss above 10x its starting value
NONFINITE_MIN_STEPS = 3  # a few skipped fp16 steps at start-up are normal
VANISHING_RATIO = 1e-3  # first-layer / last-layer gradient norm (per unit weight)
GLOBAL_NORM_TINY = 1e-7
EXPLODING_GROWTH = 100.0  # gradient norm 100x its early median
DEAD_FRACTION = 0.5
SATURATION_FRACTION = 0.3
INIT_OFF_FACTOR = 10.0
INIT_LOSS_FACTOR = (
    2.0  # a first loss above this x ln(classes): the initial outputs are far from uniform
)
NO_LEARNING_RATIO = 1e-6  # per-step ‖Δw‖/‖w‖
SLOW_RATIO = 1e-3  # healthy runs move their weights by 1e-3 to 1e-2 per step early on
CHANCE_ACC_FACTOR = (
    2.5  # an accuracy below 2.5/classes still reads as chance next to a loss at ln(k)
)
MIN_CHANCE_STEPS = (
    20  # optimizer steps before a run at chance is called stuck (not its first batches)
)
SPIKE_CHANCE_FACTOR = 4.0  # a sampled loss above 4 x ln(classes) after a sane start: a blow-up
UNIFORM_BAND = (
    0.05  # a loss within 5% of ln(classes): predictions near uniform, whatever the accuracy
)


def _arr(values: Sequence[float | None] | np.ndarray) -> np.ndarray:
    return np.array(values, dtype=float)  # a None becomes NaN


def _finite(a: np.ndarray) -> np.ndarray:
    return a[np.isfinite(a)]


def _median(values: Sequence[float | None] | np.ndarray) -> float:
    return median_1d(_finite(_arr(values)))


def median_1d(a: np.ndarray) -> float:
    """``np.median`` of a 1-d array, NaN if it holds one, NaN when empty; a sort and an index instead of
    its generic path, about ten times faster on the short series the rules read many times per diagnosis."""
    s = np.sort(np.asarray(a, dtype=float))
    if not s.size:
        return math.nan
    if math.isnan(s[-1]):  # np.sort puts NaN last
        return math.nan
    h = s.size // 2
    return float(s[h]) if s.size % 2 else float((s[h - 1] + s[h]) / 2)


def _step_at(series_steps: Sequence[int], i: int) -> int:
    return int(series_steps[i]) if 0 <= i < len(series_steps) else 0


def _chance_loss(series: RunSeries) -> float | None:
    return math.log(series.num_classes) if series.num_classes and series.num_classes > 1 else None


def _total_steps(series: RunSeries) -> int:
    last = max([0, *series.step[-1:], *series.epoch_step[-1:], *series.layer_step[-1:]])
    return max(last, series.planned_steps or 0)


# -- loss --------------------------------------------------------------------
def _loss_explosion(s: RunSeries) -> Issue | None:
    """The training loss blew up or went non-finite, or else the validation loss went non-finite."""
    return _training_loss_explosion(s) or _nonfinite_validation(s)


VALIDATION_DATA_ADVICE = 3  # LOSS_EXPLOSION's advice on the validation data and eval mode


def _nonfinite_validation(s: RunSeries) -> Issue | None:
    """A NaN/Inf validation loss: the model's outputs or the loss fail on the validation data, which no
    other rule can read (they skip non-finite values), so a run validating at NaN would pass as healthy.

    Every NaN here is a measured one: a source with no validation loss has an empty list, and the live
    hook carries a value over rather than pad with NaN.
    """
    va = _arr(s.epoch_val_loss)
    bad = np.flatnonzero(~np.isfinite(va))
    if not bad.size:
        return None
    e = int(bad[0])
    step = _step_at(s.epoch_step, e)
    more = f"; {bad.size} of {va.size} validations were non-finite" if bad.size > 1 else ""
    # training's own loss is finite here (its rule runs first): the validation data or eval mode leads
    return Issue(
        "LOSS_EXPLOSION",
        "critical",
        step,
        f"validation loss is {va[e]} at epoch {e + 1 + s.epoch_offset} (step {step}): the model's "
        f"outputs or the loss are non-finite on the validation data{more}",
        lead=VALIDATION_DATA_ADVICE,
    )


def _training_loss_explosion(s: RunSeries) -> Issue | None:
    loss = _arr(s.loss)
    if loss.size == 0:
        return None
    bad = np.flatnonzero(~np.isfinite(loss))
    nonfinite = None
    if bad.size:
        i = int(bad[0])
        nonfinite = Issue(
            "LOSS_EXPLOSION",
            "critical",
            _step_at(s.step, i),
            f"training loss became non-finite ({loss[i]}) at step {_step_at(s.step, i)}",
        )
        # the growth that led there, if any, is when the run blew up
        loss = loss[:i]
        if loss.size == 0:
            return nonfinite
    chance = _chance_loss(s)
    first = loss[0] if np.isfinite(loss[0]) else math.inf
    # The first sample is an interval mean and may itself hold the blow-up: a known chance level or the
    # first step's loss (on the initial weights) is the baseline then; without either, the first sample is.
    initial = (
        s.initial_loss if s.initial_loss is not None and 0 < s.initial_loss < math.inf else None
    )
    anchors = [v for v in (chance, initial) if v]
    start = min([first, *anchors])
    if not (0 < start < math.inf):
        return nonfinite
    # an interval's mean loss 10x its start is a blow-up even when the loss falls back after it: the
    # weights it left behind (dead units, a loss stuck at chance) are its consequences
    over = np.flatnonzero(loss > EXPLOSION_GROWTH * start)
    if not anchors:
        over = over[over > 0]
    sane_start = initial if initial is not None else first
    val_blowup = _validation_blowup(s, chance, sane_start)
    if val_blowup is not None and not over.size:
        return val_blowup
    if chance and sane_start < 1.5 * chance:
        # a run that started near ln(k) and then averaged several times ln(k) over an interval blew up,
        # even when that is less than 10x its start (and even when it falls back afterwards)
        spike = np.flatnonzero(loss > SPIKE_CHANCE_FACTOR * chance)
        if spike.size and (not over.size or spike[0] < over[0]):
            i = int(spike[0])
            then = f"; it went non-finite at step {nonfinite.first_step}" if nonfinite else ""
            return Issue(
                "LOSS_EXPLOSION",
                "critical",
                _step_at(s.step, i),
                f"training loss reached {loss[i]:.3g}, {loss[i] / chance:.2g}x ln({s.num_classes}) = "
                f"{chance:.3g} (it started at {sane_start:.3g}), by step {_step_at(s.step, i)}{then}",
            )
    if over.size:
        i = int(over[0])
        then = f"; it went non-finite at step {nonfinite.first_step}" if nonfinite else ""
        return Issue(
            "LOSS_EXPLOSION",
            "critical",
            _step_at(s.step, i),
            f"training loss reached {loss[i]:.3g}, x{loss[i] / start:.2g} its starting level "
            f"{start:.3g}, by step {_step_at(s.step, i)}{then}",
        )
    return nonfinite


def _validation_blowup(s: RunSeries, chance: float | None, start: float) -> Issue | None:
    """A validation loss several times ln(k) while the model is still far from fitting its training data:
    the weights were thrown out (a well-fitted, overconfident model is not this)."""
    if not chance or not start < 1.5 * chance:
        return None
    va, tr = _arr(s.epoch_val_loss), _arr(s.epoch_train_loss)
    n = min(va.size, tr.size)
    hit = np.flatnonzero((va[:n] > SPIKE_CHANCE_FACTOR * chance) & (tr[:n] > 0.1 * chance))
    if not hit.size:
        return None
    e = int(hit[0])
    return Issue(
        "LOSS_EXPLOSION",
        "critical",
        _step_at(s.epoch_step, e),
        f"validation loss reached {va[e]:.3g}, {va[e] / chance:.2g}x ln({s.num_classes}) = {chance:.3g}, at "
        f"epoch {e + 1 + s.epoch_offset} while the training loss was {tr[e]:.3g}: the weights were thrown out",
    )


def _nonfinite_gradients(s: RunSeries) -> Issue | None:
    skipped = sorted(set(s.skipped_steps))
    gn = _arr(s.grad_norm)
    nonfinite_samples = np.flatnonzero(~np.isfinite(gn)) if gn.size else np.array([], dtype=int)
    total = _total_steps(s)
    # fp16 loss scaling skips a few steps while it finds its scale: tolerate a handful early on.
    late = [st for st in skipped if st > max(20, 0.05 * total)]
    count = len(skipped)
    if count >= NONFINITE_MIN_STEPS and (late or count > max(10, 0.02 * total)):
        first = s.first_nonfinite_step if s.first_nonfinite_step is not None else skipped[0]
        where = f" (first in layer {s.first_nonfinite_layer})" if s.first_nonfinite_layer else ""
        return Issue(
            "NONFINITE_GRADIENTS",
            "critical",
            int(first),
            f"{count} steps had NaN/Inf gradients and were skipped, first at step {first}{where}",
            layer=s.first_nonfinite_layer,
        )
    if not skipped and nonfinite_samples.size:
        i = int(nonfinite_samples[0])
        return Issue(
            "NONFINITE_GRADIENTS",
            "critical",
            _step_at(s.step, i),
            f"gradient norm was non-finite at step {_step_at(s.step, i)}",
        )
    return None


def windows(x: np.ndarray, w: int) -> np.ndarray:
    """Every run of ``w`` consecutive values of ``x`` as a row: a copy, which on the rules' short series
    costs a third of ``sliding_window_view``'s checks."""
    return x[np.arange(x.size - w + 1)[:, None] + np.arange(w)]


def oscillating_windows(loss: np.ndarray, scale: float, w: int = 8) -> np.ndarray:
    """For each window of ``w`` consecutive loss samples: does it swing without trending down?

    A window swings when its range is over 10% of ``scale`` (the chance-level loss), its end is not
    well below its start, it dips below 0.9 x scale, and its big moves (over a quarter of the range)
    reverse direction at least twice, or it holds a spike (x3 over the minimum before it). All
    windows at once: the live diagnosis rescans the run's whole history, so a Python loop over
    windows would make each diagnosis grow costly with the run's length. Plain indexing and
    arithmetic rather than NumPy's convenience functions (``diff``, ``mean``, ``take_along_axis``):
    on these small arrays their Python-level overhead was most of the live diagnosis's cost.
    """
    W = windows(loss, w)
    rows = np.arange(len(W))
    hi, lo = W.max(axis=1), W.min(axis=1)
    span = hi - lo
    amplitude = span / scale
    quarter = w // 4
    trend = (
        W[:, -quarter:].sum(axis=1) / quarter - W[:, :quarter].sum(axis=1) / quarter
    ) / np.maximum(span, 1e-12)
    moves = W[:, 1:] - W[:, :-1]
    sign = np.sign(moves)
    big = np.abs(moves) > 0.25 * span[:, None]
    # each big move against the previous big move in its window (moves in between that are not big are skipped)
    last_big = np.maximum.accumulate(np.where(big, np.arange(w - 1), -1), axis=1)
    prev = np.empty_like(last_big)
    prev[:, 0] = -1
    prev[:, 1:] = last_big[:, :-1]
    prev_sign = sign[rows[:, None], np.maximum(prev, 0)]
    reversals = (big & (prev >= 0) & (prev_sign != sign)).sum(axis=1)
    top = W.argmax(axis=1)
    low_before_top = np.minimum.accumulate(W, axis=1)[rows, top]
    spike = (top < w - 1) & (hi > 3 * low_before_top)
    return (
        (amplitude > 0.1)
        & (trend > -0.5)
        & (lo < 0.9 * scale)
        & ((reversals >= 2) | (spike & (amplitude > 0.15)))
    )


def _loss_oscillation(s: RunSeries) -> Issue | None:
    """Windows of sampled loss that swing by a sizeable share of the chance-level loss, with no downward trend."""
    loss = _arr(s.loss)
    w = 8
    if not np.all(np.isfinite(loss)):
        return None
    if loss.size < w + 2:
        return _validation_swings(s) or _epoch_loss_climbs(s)
    scale = _chance_loss(s) or _median(loss[:3])
    if not scale > 0:
        return None
    noise = _interval_noise(s)
    # epochs whose training loss keeps falling: within-epoch swings are step noise, no window is read
    # (the common, healthy case; the scan's hits would be dropped below anyway)
    hits = (
        np.empty(0, dtype=int)
        if _epochs_falling(s)
        else np.flatnonzero(oscillating_windows(loss, scale, w))
    )
    if hits.size and noise is not None:
        # swings a few standard errors of an interval mean wide are what the batch size makes, not the LR
        W = windows(loss, w)[hits]
        span = W.max(axis=1) - W.min(axis=1)
        hits = hits[span > NOISE_SPAN * noise * np.maximum(np.median(W, axis=1), 1e-12)]
    if not hits.size:
        return (
            _loss_climbs_back(s, loss, scale, noise)
            or _validation_swings(s)
            or _epoch_loss_climbs(s)
        )
    first = int(hits[0])
    win, i = loss[first : first + w], first + w - 1
    moves = np.diff(win)
    big = moves[np.abs(moves) > 0.25 * (win.max() - win.min())]
    reversals = int(np.sum(np.sign(big[1:]) != np.sign(big[:-1]))) if big.size > 1 else 0
    return Issue(
        "LOSS_OSCILLATION",
        "warning",
        _step_at(s.step, i),
        f"loss swung between {win.min():.3g} and {win.max():.3g} over steps "
        f"{_step_at(s.step, first)}-{_step_at(s.step, i)} ({reversals} reversals, no downward trend)",
    )


NOISE_SPAN = 6.0  # a window's range, in standard errors of one interval mean, that batch noise does not reach


def _interval_noise(s: RunSeries) -> float | None:
    """The relative standard error of one sampled interval mean from batch noise alone: a cross-entropy's
    per-example spread is about its mean, so the mean of ``batch x steps-per-sample`` examples varies by
    1/sqrt of that. None when the batch size or the sampling interval is unknown."""
    if not s.batch_size or len(s.step) < 2:
        return None
    steps = np.asarray(s.step, float)
    every = median_1d(steps[1:] - steps[:-1])
    if s.sampling == "step" or not every > 0:
        every = 1.0
    return 1.0 / math.sqrt(s.batch_size * every)


def _epochs_falling(s: RunSeries) -> bool:
    """At the scale of epochs the training loss keeps falling (each of the last epochs below the one before,
    overall by over 3%): whatever the sampled loss does within an epoch is step noise, not oscillation."""
    tr = _finite(_arr(s.epoch_train_loss))
    if tr.size < 2:
        return False
    last = tr[-3:]
    return bool(np.all(np.diff(last) < 0.01 * last[:-1]) and last[-1] < 0.97 * last[0])


def _loss_climbs_back(
    s: RunSeries, loss: np.ndarray, scale: float, noise: float | None
) -> Issue | None:
    """The sampled loss climbs back to 1.8x its best so far (and by a quarter of ln(k)) for two samples in a
    row after it had halved: the steps overshoot the valley. Batch noise moves one interval mean, not two."""
    best = np.minimum.accumulate(loss)
    start = loss[0]
    gap = max(0.25 * scale, NOISE_SPAN * (noise or 0.0) * median_1d(loss))
    up = (loss > 1.8 * best) & (loss > best + gap) & (best < 0.5 * start)
    two = np.flatnonzero(up[1:] & up[:-1])
    if not two.size:
        back = _climbed_back_to_chance(s)
        if back is None:
            return None
        b, i = back
        lr = _arr(s.lr)
        return Issue(
            "LOSS_OSCILLATION",
            "warning",
            _step_at(s.step, i),
            f"the loss had fallen to {loss[b]:.3g} by step {_step_at(s.step, b)}, then climbed back to chance "
            f"({loss[i]:.3g}, ln({s.num_classes}) = {scale:.3g}) by step {_step_at(s.step, i)} as the LR rose "
            f"from {lr[b]:.3g} to {lr[i]:.3g}: the larger steps threw away what the model had learned",
        )
    i = int(two[0]) + 1
    return Issue(
        "LOSS_OSCILLATION",
        "warning",
        _step_at(s.step, i),
        f"the loss climbed back from its best {best[i]:.3g} to {loss[i]:.3g} by step {_step_at(s.step, i)}: "
        "the steps overshoot",
    )


def _climbed_back_to_chance(s: RunSeries) -> tuple[int, int] | None:
    """(best, back): the sampled loss fell below 0.6 x ln(k) at ``best``, then sat at chance (0.95 x ln(k) or
    more) for two samples running from ``back``, with the LR there 1.5x or more what it was at ``best`` (a
    warm-up or one-cycle climbing to a peak too high). The labels carry signal (the loss fell well below
    ln(k)), so the chance level it ends at is the LR's doing, not the data's."""
    chance, loss, lr = _chance_loss(s), _arr(s.loss), _arr(s.lr)
    if chance is None or loss.size < 3 or lr.size != loss.size:
        return None
    bad = np.flatnonzero(~np.isfinite(loss[1:]))
    end = (
        int(bad[0]) + 1 if bad.size else loss.size
    )  # the samples read before the first non-finite one
    best = first_argmin_so_far(loss[:end])
    i = np.arange(end)
    hit = (
        (loss[best] < 0.6 * chance)
        & (i > best + 1)
        & (np.minimum(loss[np.maximum(i - 1, 0)], loss[:end]) >= 0.95 * chance)
        & (lr[np.maximum(i - 1, 0)] >= 1.5 * lr[best])
    )
    hit[:1] = False
    at = np.flatnonzero(hit)
    return (int(best[at[0]]), int(at[0]) - 1) if at.size else None


EPOCH_CLIMB = 0.15  # an epoch's training loss this much above the best epoch before it (relative)
EPOCH_CLIMB_CHANCE = (
    0.04  # and by this share of ln(k): a fitted model's 0.01 -> 0.02 is not a swing
)


def _epoch_loss_climbs(s: RunSeries) -> Issue | None:
    """The training loss of whole epochs climbs back above its best, twice, at an LR no higher than then.

    An epoch's mean loss over thousands of examples carries little batch noise (a standard error of
    1/sqrt(examples) of its level), and a training loss does not rise while the model fits (overfitting
    raises the validation loss, not this one). Climbing back twice at the same or a lower LR is the
    steps overshooting the valley, at the scale of epochs, however steadily the run ends.
    """
    tr, lr = _arr(s.epoch_train_loss), _arr(s.epoch_lr)
    chance = _chance_loss(s)
    n = min(tr.size, lr.size, len(s.epoch_step))
    if chance is None or n < 3:
        return None
    if not np.all(np.isfinite(tr[:n])):
        return None  # a blow-up: other rules name it
    episodes: list[tuple[int, int]] = []  # (epoch, best epoch before it) where a climb began
    climbing = False
    b = 0  # the best epoch before e (the first of equals), kept as e advances: one pass, not one per epoch
    for e in range(1, n):
        if tr[e - 1] < tr[b]:
            b = e - 1
        examples = (s.batch_size or 1) * max(1, s.epoch_step[e] - s.epoch_step[e - 1])
        noise = NOISE_SPAN / math.sqrt(examples) if s.batch_size else 0.0
        up = (
            tr[e] > tr[b] * (1 + max(EPOCH_CLIMB, noise))
            and tr[e] - tr[b] > EPOCH_CLIMB_CHANCE * chance
            and lr[e] <= lr[b] * 1.001
        )
        if up and not climbing:
            episodes.append((e, b))
        climbing = up
    if len(episodes) < 2:
        return None
    (e1, b1), (e, b) = episodes[0], episodes[1]
    off = 1 + s.epoch_offset
    return Issue(
        "LOSS_OSCILLATION",
        "warning",
        _step_at(s.epoch_step, e),
        f"the training loss of a whole epoch climbed back above its best twice at an LR no higher than "
        f"then: {tr[b1]:.3g} (epoch {b1 + off}) -> {tr[e1]:.3g} (epoch {e1 + off}), {tr[b]:.3g} (epoch "
        f"{b + off}) -> {tr[e]:.3g} (epoch {e + off}): the steps overshoot",
    )


def _validation_swings(s: RunSeries) -> Issue | None:
    """Epoch by epoch the validation loss jumps up and down by over 30-40% (twice at least) and its accuracy
    by over 0.2: the weights are thrown across the valley from epoch to epoch, not slowly overfitted."""
    va, acc = _arr(s.epoch_val_loss), _arr(s.epoch_val_acc)
    n = min(va.size, acc.size)
    if n < 4 or not np.all(np.isfinite(va[:n])):
        return None
    rel = np.diff(va[:n]) / np.maximum(va[: n - 1], 1e-12)
    dacc = np.diff(acc[:n])
    big = np.flatnonzero(((rel > 0.4) | (rel < -0.3)) & (np.abs(dacc) > 0.2))
    if big.size < 3:
        return None
    signs = np.sign(rel[big])
    reversals = np.flatnonzero(signs[1:] != signs[:-1])
    if reversals.size < 2:
        return None
    e = int(big[reversals[1] + 1]) + 1
    return Issue(
        "LOSS_OSCILLATION",
        "warning",
        _step_at(s.epoch_step, e),
        f"validation loss jumped up and down by 30-40% or more {big.size} times by epoch "
        f"{e + 1 + s.epoch_offset} (accuracy swinging by over 0.2): the steps throw the weights across the valley",
    )


STEP_OSCILLATION_CV = 0.2  # detrended std / mean of the late per-step loss
STEP_OSCILLATION_SWING = 0.05  # detrended std / starting loss
STEP_OSCILLATION_ACF = (
    0.3  # |autocorrelation| at some lag up to 10 steps: a rhythm, not batch noise
)


def step_oscillation(s: RunSeries) -> Issue | None:
    """Step-to-step swings of a per-step series (``sampling == "step"``) that interval means would average away.

    The late half of the run (its last two quarters), detrended: the swings must be large against their
    own level and against the run's start, carry a rhythm (an autocorrelation at some lag of up to 10
    steps well beyond what independent batch noise gives), and the loss must not have kept falling.
    """
    if s.sampling != "step":
        return None
    loss = _arr(s.loss)
    w = max(10, loss.size // 4)
    if loss.size < 2 * w:
        return None
    late = loss[-2 * w :]
    if not np.all(np.isfinite(late)):
        return None
    x = np.arange(late.size, dtype=float)
    slope, intercept = np.polyfit(x, late, 1)
    resid = late - (slope * x + intercept)
    sd = float(resid.std())
    start = _median(loss[: max(3, min(w // 5, 20))])
    mean = float(late.mean())
    if not (sd > 0 and start > 0 and mean > 0):
        return None
    cv, swing = sd / mean, sd / start
    centred = resid - resid.mean()
    acf = [
        float(np.dot(centred[:-lag], centred[lag:]) / np.dot(centred, centred))
        for lag in range(1, min(11, late.size // 3))
    ]
    rhythm = max((abs(a) for a in acf), default=0.0)
    prev, last = late[:w], late[w:]
    drop = (prev.mean() - last.mean()) / max(abs(prev.mean()), 1e-12)
    noise_var = float(np.var(np.diff(late))) / 2.0
    noise = 3.0 * math.sqrt(2 * noise_var / w) / max(abs(prev.mean()), 1e-12)
    if (
        cv < STEP_OSCILLATION_CV
        or swing < STEP_OSCILLATION_SWING
        or rhythm < max(STEP_OSCILLATION_ACF, 4 / math.sqrt(late.size))
        or drop > max(noise, 0.1)
    ):
        return None
    first = loss.size - 2 * w
    return Issue(
        "LOSS_OSCILLATION",
        "warning",
        _step_at(s.step, first),
        f"late loss swings by {cv:.0%} of its mean ({sd:.3g}) step to step, with a rhythm "
        f"(autocorrelation {rhythm:.2f}), and fell only {drop:.1%} between the last two windows of {w} steps",
    )


def _weights_moving(s: RunSeries) -> float:
    """Median per-step update ratio, or NaN when not measured."""
    return _median(s.update_ratio)


def _at_peak_lr(
    ratios: Sequence[float], ratio_steps: Sequence[int], steps: Sequence[int], lrs: Sequence[float]
) -> float:
    """Median update ratio as it would be at the run's peak LR: the steps a schedule shrank, scaled back up.

    Weights that stop moving because a schedule annealed the LR to ~0 (a plateau
    scheduler cutting again and again after the model converged) are the
    schedule's doing, not a model that cannot learn.
    """
    upd, lr = _arr(ratios), _arr(lrs)
    n = min(upd.size, len(ratio_steps))
    if (
        n == 0
        or lr.size == 0
        or len(steps) != lr.size
        or not np.isfinite(lr).any()
        or np.nanmax(lr) <= 0
    ):
        return _median(upd)
    lr_then = np.interp(np.asarray(ratio_steps[:n], float), np.asarray(steps, float), lr)
    with np.errstate(divide="ignore", invalid="ignore"):
        # LR 0: would move
        scaled = np.where(lr_then > 0, upd[:n] * (np.nanmax(lr) / lr_then), math.inf)
    scaled = scaled[~np.isnan(scaled)]
    return median_1d(scaled) if scaled.size else math.nan


def _slow_convergence(s: RunSeries) -> Issue | None:
    loss = _arr(s.loss)
    if loss.size < 8 or not np.all(np.isfinite(loss)):
        return None
    start, now = _median(loss[:3]), _median(loss[-3:])
    if not start > 0:
        return None
    progress = 1 - now / start
    ratio = _weights_moving(s)
    chance = _chance_loss(s)
    still_high = chance is None or now > 0.5 * chance
    # weights judged at the peak LR: a warmup's small first steps are the schedule's, not an LR set too low
    if (
        progress < 0.1
        and still_high
        and (
            math.isnan(ratio)
            or _at_peak_lr(s.update_ratio, s.layer_step, s.step, s.lr) < SLOW_RATIO
        )
    ):
        return Issue(
            "SLOW_CONVERGENCE",
            "warning",
            _step_at(s.step, loss.size - 1),
            f"loss moved only {progress:.1%} ({start:.3g} -> {now:.3g}) over {s.step[-1]} steps"
            + (
                f"; weights change by {ratio:.1e} of their norm per step"
                if not math.isnan(ratio)
                else ""
            ),
        )
    return None


def _no_learning(s: RunSeries) -> Issue | None:
    ratio = _weights_moving(s)
    if (
        len(s.update_ratio) >= 3
        and ratio < NO_LEARNING_RATIO
        and _at_peak_lr(s.update_ratio, s.layer_step, s.step, s.lr) < NO_LEARNING_RATIO
    ):
        return Issue(
            "NO_LEARNING",
            "critical" if ratio < NO_LEARNING_RATIO / 100 else "warning",
            _step_at(s.layer_step or s.step, 2),
            f"weights change by {ratio:.1e} of their norm per step (median): training is not moving them",
        )
    upd = _finite(_arr(s.epoch_weight_update))
    if (
        upd.size >= 2
        and median_1d(upd) < NO_LEARNING_RATIO
        and _at_peak_lr(s.epoch_weight_update, s.epoch_step, s.epoch_step, s.epoch_lr)
        < NO_LEARNING_RATIO
    ):
        return Issue(
            "NO_LEARNING",
            "warning",
            _step_at(s.epoch_step, 1),
            f"weights changed by {median_1d(upd):.1e} of their norm per epoch (median)",
        )
    return None


def _loss_plateau(s: RunSeries, min_change: float = 0.01) -> Issue | None:
    """Early progress, then the last third of the run changed by less than ``min_change`` (relative)."""
    loss = _arr(s.loss)
    if loss.size < 20 or not np.all(np.isfinite(loss)):
        return None
    start = _median(loss[:3])
    third = loss.size // 3
    early_best = np.min(loss[:third])
    late = loss[-third:]
    progressed = early_best < 0.8 * start
    late_change = (median_1d(late[: len(late) // 2]) - median_1d(late[len(late) // 2 :])) / max(
        median_1d(late), 1e-12
    )
    chance = _chance_loss(s)
    still_high = median_1d(late) > (0.1 * chance if chance else 0.1 * start)
    # two standard errors of that difference of medians: a short run's last third has few samples, and
    # their sample-to-sample noise alone moves the halves' medians apart
    half = max(1, len(late) // 2)
    noise = float(np.std(np.diff(late))) / math.sqrt(2) if len(late) > 2 else 0.0
    allowance = 2 * 1.25 * noise * math.sqrt(2 / half) / max(median_1d(late), 1e-12)
    if (
        progressed
        and late_change < min_change + allowance
        and still_high
        and not _label_noise_floor(s)
        and not _schedule_annealed(s, loss.size - third)
    ):
        return Issue(
            "LOSS_PLATEAU",
            "warning" if median_1d(late) > 0.3 * start else "info",
            _step_at(s.step, loss.size - third),
            f"loss fell from {start:.3g} to {early_best:.3g} early, then changed by {late_change:.1%} over "
            f"the last third of the run (now {median_1d(late):.3g})",
        )
    return None


# the LR over the run's last third at most this share of its peak: the schedule settled it ...
ANNEALED = 0.1
# ... unless it fell that low within this share of the run (LR_DECAYED_TOO_EARLY's ground)
EARLY_CUT = 0.25


def _schedule_annealed(s: RunSeries, start: int) -> bool:
    """The LR from sample ``start`` on is a tenth of its peak or less: the schedule annealed the run, and a
    loss that stops moving there is the schedule's doing, not a stalled optimizer's (whose fix, "decay the
    learning rate", is already done). Whether it came too early is LR_DECAYED_TOO_EARLY's question."""
    lr = _arr(s.lr)
    if lr.size != len(s.loss) or lr.size <= start or not np.all(np.isfinite(lr)):
        return False
    top = int(np.argmax(lr))
    peak = float(lr[top])
    if peak <= 0 or median_1d(lr[start:]) > ANNEALED * peak:
        return False
    # cut to a tenth within the run's first quarter is a decay too early, not an annealing: its plateau stays
    first_low = top + int(np.argmax(lr[top:] <= ANNEALED * peak))
    return first_low >= EARLY_CUT * lr.size


def _label_noise_floor(s: RunSeries, margin: float = 0.02) -> bool:
    """Validation accuracy above training accuracy at the end: the training labels are noisier than
    the validation labels, and the loss floor they set is the data's, not a stalled optimizer's."""
    train, val = _finite(_arr(s.epoch_train_acc)), _finite(_arr(s.epoch_val_acc))
    return bool(train.size and val.size and val[-1] > train[-1] + margin)


# weights moving by less than this share of their norm per step (median of the sampled steps) stand still:
# healthy runs move theirs by 1e-3 to 1e-2, an LR 100x too low by ~1e-6 to 1e-5
STILL_RATIO = 1e-4
STILL_ADVICE = 3  # STUCK_AT_CHANCE's advice to raise the LR


def weights_still(s: RunSeries) -> float | None:
    """The median update ratio ‖Δw‖/‖w‖ of the sampled steps when it is below ``STILL_RATIO``, else None:
    a run at chance for that reason has an LR too low to move its weights, not labels that disagree with
    the inputs or a model that cannot learn."""
    ratios = _finite(_arr(s.update_ratio))
    if not ratios.size:
        return None
    median = median_1d(ratios)
    return median if median < STILL_RATIO else None


def _stuck_at_chance(s: RunSeries) -> Issue | None:
    issue = _stuck_at_chance_by_metrics(s)
    if issue is None or (still := weights_still(s)) is None:
        return issue
    return dataclasses.replace(  # recommendations=[]: rendered again, the LR first
        issue,
        evidence=f"{issue.evidence}; its weights stand still (median update ratio {still:.1e} a step)",
        lead=STILL_ADVICE,
        recommendations=[],
    )


def _stuck_at_chance_by_metrics(s: RunSeries) -> Issue | None:
    chance = _chance_loss(s)
    if chance is None:
        return None
    k = s.num_classes
    assert k is not None  # a chance level needs the number of classes
    acc = _arr(s.epoch_val_acc) if s.epoch_val_acc else _arr(s.epoch_train_acc)
    vloss = _arr(s.epoch_val_loss) if s.epoch_val_loss else _arr(s.epoch_train_loss)
    if acc.size >= 2:
        recent_acc, recent_loss = _median(acc[-2:]), _median(vloss[-2:])

        def at_chance(a: float, loss: float) -> bool:
            # accuracy at chance with a loss near ln(k); or a loss so close to ln(k) that the predictions are
            # near uniform, whatever a few lucky argmaxes make of the accuracy (0.18 on 10 classes at 0.994 ln 10).
            # Not a loss well above ln(k): that is confidently wrong (a bad init, a blow-up), not uniform.
            # the accuracy quoted must read as chance too: 0.6 on 10 classes is not stuck, whatever the loss
            return bool(
                (a < 1.5 / k and loss > 0.85 * chance)
                or (abs(loss / chance - 1) < UNIFORM_BAND and a < CHANCE_ACC_FACTOR / k)
            )

        if at_chance(recent_acc, recent_loss):
            both = list(zip(acc, vloss))
            idx = next(
                (
                    i
                    for i in range(1, len(both))
                    if at_chance(*both[i])
                    and at_chance(*both[i - 1])
                    and _step_at(s.epoch_step, i) >= MIN_CHANCE_STEPS
                ),
                None,
            )
            if idx is None:  # two epochs of a few steps each: too early to call a run stuck
                return None
            return Issue(
                "STUCK_AT_CHANCE",
                "critical",
                _step_at(s.epoch_step, idx),
                f"accuracy {recent_acc:.3f} vs chance {1 / k:.3f} and loss {recent_loss:.3f} vs "
                f"ln({k}) = {chance:.3f} after {acc.size} epochs",
            )
        return None
    loss = _arr(s.loss)
    if loss.size >= 20 and np.all(np.isfinite(loss)):
        recent = _median(loss[-5:])
        # a loss that started well above ln(k) and came down to it may be on its way down; one validation
        # at chance by both its accuracy and its loss (a run of a single epoch) says it is not
        val_at_chance = bool(
            acc.size
            and vloss.size
            and acc[-1] < 1.5 / k
            and abs(vloss[-1] / chance - 1) < UNIFORM_BAND
        )
        if abs(recent - chance) < 0.05 * chance and (
            _median(loss[:3]) < 1.2 * chance or val_at_chance
        ):
            return Issue(
                "STUCK_AT_CHANCE",
                "critical",
                _step_at(s.step, loss.size - 1),
                f"loss {recent:.3f} stays at ln({k}) = {chance:.3f}: the model predicts uniformly",
            )
    return None


def _at_chance(s: RunSeries) -> Issue | None:
    """The model at chance, or the training labels it is given (one code: the fix is the same, the data)."""
    return _stuck_at_chance(s) or _training_labels_at_chance(s)


NOISY_LABEL_GAP = 0.3  # validation accuracy this far above training accuracy


def _training_labels_at_chance(s: RunSeries) -> Issue | None:
    """The training loss stays near ln(k) while validation accuracy is far above training accuracy.

    The model predicts held-out examples well, so it learned the inputs; what it cannot fit are the
    training labels, at a loss a uniform guess would make: most of them disagree with their inputs
    (shuffled or mostly noisy labels). Validation accuracy only 0.1-0.2 above training accuracy is the
    floor a few noisy labels set, with a training loss well below ln(k): not this.
    """
    chance = _chance_loss(s)
    tr, tacc, vacc = _arr(s.epoch_train_loss), _arr(s.epoch_train_acc), _arr(s.epoch_val_acc)
    n = min(tr.size, tacc.size, vacc.size)
    if chance is None or n < 2:
        return None
    hit = (tr[:n] > 0.85 * chance) & (vacc[:n] - tacc[:n] > NOISY_LABEL_GAP)
    if not (hit[-1] and hit[-2]):
        return None
    e = n - 2
    while e > 0 and hit[e - 1]:
        e -= 1
    e = max(e, 1)  # the second epoch of the stretch: two agree
    return Issue(
        "STUCK_AT_CHANCE",
        "warning",
        _step_at(s.epoch_step, e),
        f"training loss {tr[n - 1]:.3f} stays near ln({s.num_classes}) = {chance:.3f} with training accuracy "
        f"{tacc[n - 1]:.3f}, while validation accuracy is {vacc[n - 1]:.3f}: the model learned the inputs "
        "but fits the training labels no better than a guess (most of them disagree with their inputs)",
    )


# validation accuracy below its best by this much: overfitting that costs the user
OVERFIT_ACC_LOST = 0.02


def first_argmin_so_far(x: np.ndarray) -> np.ndarray:
    """For each i, ``argmin(x[: i + 1])`` (its first occurrence) in one pass, for finite ``x``."""
    low = np.minimum.accumulate(x)
    new = np.empty(x.size, dtype=bool)
    new[:1] = True
    new[1:] = low[1:] < low[:-1]
    return np.maximum.accumulate(np.where(new, np.arange(x.size), 0))


def _overfitting(s: RunSeries) -> Issue | None:
    """Validation loss stops improving (or rises) while training keeps fitting, with a real accuracy gap."""
    val, train = _arr(s.epoch_val_loss), _arr(s.epoch_train_loss)
    vacc, tacc = _arr(s.epoch_val_acc), _arr(s.epoch_train_acc)
    n = min(val.size, train.size)
    if n < 4 or not np.all(np.isfinite(val[:n])) or not np.all(np.isfinite(train[:n])):
        return None
    # only a model that fits its training data can overfit it: not one near chance (a chaotic high-LR run's
    # validation loss swings too), nor one that does better on validation than on training examples
    fitting_below = 0.5 * math.log(s.num_classes) if s.num_classes else math.inf
    best_so_far = first_argmin_so_far(val[:n])
    for e in range(3, n):
        best = int(best_so_far[e])
        since = e - best
        if since < 3 or not train[e] < 0.7 * train[best] or not train[e] < fitting_below:
            continue  # validation improved recently, or training is not fitting (further) either
        if float(np.min(val[e:n])) <= val[best]:
            # the validation loss came back below that best later on: a swing (an LR peak shaking a
            # batch-norm net), not a model that learned its training examples at validation's cost
            continue
        rise = val[e] / max(val[best], 1e-12)
        acc_gap = (tacc[e] - vacc[e]) if vacc.size > e and tacc.size > e else 0.0
        if acc_gap < 0:
            continue
        if rise > 1.05 and (acc_gap > 0.08 or rise > 1.5):
            # what a user pays for overfitting is validation accuracy: a validation loss up 50% on a
            # model whose accuracy holds (0.076 -> 0.115, gap 0.02) is a note, not a warning
            lost = float(np.max(vacc[: e + 1]) - np.min(vacc[e:n])) if vacc.size >= n else 0.0
            # (without both accuracies the cost cannot be read, and the loss's rise is all there is)
            known = vacc.size >= n and tacc.size >= n
            costly = not known or acc_gap > 0.08 or lost > OVERFIT_ACC_LOST
            severity = "warning" if (rise > 1.3 and costly) or acc_gap > 0.08 else "info"
            return Issue(
                "OVERFITTING",
                severity,
                _step_at(s.epoch_step, e),
                f"validation loss {val[best]:.3g} at epoch {best + 1 + s.epoch_offset} rose to {val[e]:.3g} "
                f"by epoch {e + 1 + s.epoch_offset} "
                f"while training loss fell to {train[e]:.3g} (accuracy gap {acc_gap:.2f})",
            )
    # memorised: every training example right, validation well behind and its loss far above training's
    # (a validation loss still drifting down does not make 100% vs 80% accuracy a fit)
    if vacc.size >= n and tacc.size >= n:
        # the training accuracy is read with dropout on: on 32 examples it swings by one or two of them
        # epoch to epoch (1.0, 0.938, 1.0, 0.969), so "every example right" is the best of the last three
        recent = tacc[
            :n
        ].copy()  # the max of each epoch's and the two before (NaN propagates, as in max)
        recent[1:] = np.maximum(recent[1:], tacc[: n - 1])
        recent[2:] = np.maximum(recent[2:], tacc[: n - 2])
        held = (recent >= 0.98) & (tacc[:n] - vacc[:n] > 0.15) & (val[:n] > 2 * train[:n])
        if held[-1] and n >= 4:  # still so at the latest epoch: from the start of that stretch
            e = n - 1
            while e > 3 and held[e - 1]:
                e -= 1
            return Issue(
                "OVERFITTING",
                "warning",
                _step_at(s.epoch_step, e),
                f"training accuracy {tacc[e]:.3f} against validation {vacc[e]:.3f} at epoch "
                f"{e + 1 + s.epoch_offset}, validation loss {val[e]:.3g} vs training {train[e]:.3g}: the "
                "model memorised its training examples",
            )
    return None


def _underfitting(s: RunSeries) -> Issue | None:
    return (
        _narrow_layer(s)
        or _underfitting_flat(s)
        or _stopped_while_learning(s)
        or _short_run_unfitted(s)
    )


UNFIT_VAL_ACC = (
    0.7  # a finished run's validation accuracy below this (and above chance's band): not fitted
)
FLAT_END = 0.05  # the sampled loss changed less than this (relative) over the run's last third


def _short_run_unfitted(s: RunSeries) -> Issue | None:
    """A finished run too short in epochs for the flat rule (under 6) that ends unfitted and flat.

    Validation accuracy below 0.7 but above 1.5/k (chance's band is ``STUCK_AT_CHANCE``'s) with the
    sampled training loss flat over the last third of the run: the model stopped getting better far
    from fitting, what the flat rule says of longer runs from their epochs (a 12-layer tanh MLP at
    batch 8 for 3 epochs: validation 0.236, loss ~1.8 for its last 160 steps).
    """
    k = s.num_classes
    vacc = _finite(_arr(s.epoch_val_acc))
    if not k or len(s.epoch_step) >= 6 or not vacc.size or not _finished(s):
        return None
    if not 1.5 / k <= vacc[-1] < UNFIT_VAL_ACC:
        return None
    loss = _arr(s.loss)
    third = loss[-(loss.size // 3) :] if loss.size >= 9 else np.array([])
    if third.size < 3 or not np.all(np.isfinite(third)):
        return None
    before, after = _median(third[: third.size // 2]), _median(third[third.size // 2 :])
    if (before - after) / max(after, 1e-12) >= FLAT_END:
        return None  # still falling: _stopped_while_learning's, when far enough
    return Issue(
        "UNDERFITTING",
        "warning",
        _step_at(s.step, loss.size - third.size),
        f"validation accuracy {vacc[-1]:.3f} when the run ended, with the training loss flat at "
        f"{after:.3g} over its last third ({before:.3g} -> {after:.3g}): the model cannot fit the data",
    )


# a model with a narrow layer that fits its training data this well is left alone
NARROW_FITTED_ACC = 0.9


def _narrow_layer(s: RunSeries) -> Issue | None:
    """A layer narrower than k - 1 units, on a run that is not fitting: the model is too small.

    The logits are a function of every layer's outputs in turn, so a layer of w units leaves them at most
    w free directions, and k classes need k - 1 (one logit per class, up to a shared shift). A 1-2 unit
    layer in a 10-class net is a bottleneck whatever the optimizer does; its one unit dying (ReLU) is a
    consequence, as are a loss stuck near ln(k) or a plateau. Judged while the training accuracy (before
    the first epoch ends, the sampled loss from the first read, step 10) says the model is not fitting:
    a narrow layer that fits its data is not a fault.
    """
    k = s.num_classes
    if not k or k < 3 or not s.layer_width:
        return None
    name, width = min(s.layer_width.items(), key=lambda kv: kv[1])
    if width >= k - 1:
        return None
    chance = math.log(k)
    tacc = _finite(_arr(s.epoch_train_acc))
    if tacc.size:
        if tacc[-1] >= NARROW_FITTED_ACC:
            return None
        step, now = _step_at(s.epoch_step, tacc.size - 1), f"training accuracy {tacc[-1]:.3f}"
    else:
        loss = _arr(s.loss)
        if not loss.size or not s.step or s.step[-1] < 10 or not np.all(np.isfinite(loss[-2:])):
            return None
        if _median(loss[-2:]) < 0.5 * chance:
            return None
        step = int(s.step[-1])
        now = f"training loss {_median(loss[-2:]):.3g} (ln({k}) = {chance:.3g})"
    return Issue(
        "UNDERFITTING",
        "warning",
        step,
        f"layer {name} has {width} unit{'s' if width > 1 else ''}, fewer than the {k - 1} directions "
        f"{k} classes need: the model is too small to separate them ({now})",
        layer=name,
    )


# what a narrow layer explains: its units dying (one dead unit is the whole layer), a loss left at chance,
# a plateau or a slow fall are the bottleneck's doing
_NARROW_EXPLAINS = frozenset(
    {"DEAD_NEURONS", "STUCK_AT_CHANCE", "LOSS_PLATEAU", "SLOW_CONVERGENCE", "NO_LEARNING"}
)


def _underfitting_flat(s: RunSeries) -> Issue | None:
    tr_acc, tr_loss, v_loss = (
        _arr(s.epoch_train_acc),
        _arr(s.epoch_train_loss),
        _arr(s.epoch_val_loss),
    )
    k = s.num_classes
    if tr_acc.size < 6 or not k or not np.all(np.isfinite(tr_loss)):
        return None
    third = tr_acc.size // 3
    acc_now = _median(tr_acc[-2:])
    improving = (median_1d(tr_loss[-third:][: max(1, third // 2)]) - median_1d(tr_loss[-2:])) / max(
        median_1d(tr_loss[-2:]), 1e-12
    )
    gap = (
        abs(_median(v_loss[-2:]) - _median(tr_loss[-2:])) / max(_median(tr_loss[-2:]), 1e-12)
        if v_loss.size
        else 0
    )
    if not (1.5 / k <= acc_now < 0.7 and gap < 0.2):
        return None
    if improving < 0.02:
        return Issue(
            "UNDERFITTING",
            "warning",
            _step_at(s.epoch_step, tr_acc.size - third),
            f"training accuracy flat at {acc_now:.2f} with training and validation loss close "
            f"({_median(tr_loss[-2:]):.3g} vs {_median(v_loss[-2:]):.3g}): the model cannot fit the data",
        )
    # judged once the run is over (mid-run, still learning is the normal case): a loss that fell by a tenth or
    # more over the second half, with the model still far from fitting, was stopped (or annealed) too soon
    finished = bool(s.planned_steps and s.epoch_step and s.epoch_step[-1] >= s.planned_steps)
    half = tr_loss.size // 2
    second_half = (_median(tr_loss[half - 1 : half + 1]) - _median(tr_loss[-2:])) / max(
        _median(tr_loss[-2:]), 1e-12
    )
    if finished and second_half > 0.1:
        return Issue(
            "UNDERFITTING",
            "warning",
            _step_at(s.epoch_step, tr_acc.size - 1),
            f"training accuracy {acc_now:.2f} when the run ended, with the training loss down "
            f"{second_half:.0%} over its second half ({_median(tr_loss[half - 1 : half + 1]):.3g} -> "
            f"{_median(tr_loss[-2:]):.3g}): the run stopped while the model was still learning; train longer "
            "or raise the learning rate",
            lead=TRAIN_LONGER,
        )
    return None


RESOLVED_ACC = 0.9  # accuracy at the end that shows a run fits (a finding about fitting resolved)
STILL_FALLING = 0.1  # the training loss fell this much (relative) over the run's last fifth
# UNDERFITTING's advice that a run stopped while still learning leads with (its evidence says why)
TRAIN_LONGER = next(
    i for i, a in enumerate(CODES["UNDERFITTING"]["advice"]) if a.text.startswith("Train longer")
)


def _stopped_while_learning(s: RunSeries) -> Issue | None:
    """The run ended with its training loss far from fitted and still falling fast over its last fifth.

    A loss still coming down by a tenth or more over the last 20% of the steps had not converged: the run
    was too short for its steps (a batch of the whole split takes one step an epoch). Judged only on a
    finished run, at its end. A loss below 0.3 x ln(k) falling further is not this: that is a fitted model,
    or the floor 20% noisy labels set.
    """
    chance = _chance_loss(s)
    if chance is None or not s.planned_steps:
        return None
    epochs = _finite(_arr(s.epoch_train_loss))
    steps = s.epoch_step if epochs.size >= 5 else s.step
    loss = epochs if epochs.size >= 5 else _arr(s.loss)
    if loss.size < 5 or not np.all(np.isfinite(loss)) or not steps or steps[-1] < s.planned_steps:
        return None
    fifth = max(1, loss.size // 5)
    before, last = _median(loss[-2 * fifth : -fifth]), _median(loss[-fifth:])
    fell = (before - last) / max(before, 1e-12)
    # two standard errors of a difference of two fifths' means of sampled interval means (a batch of 2 is
    # all noise); an epoch's mean over the whole split carries little
    noise = _interval_noise(s) if steps is s.step else None
    if fell < max(STILL_FALLING, 2 * (noise or 0.0) * math.sqrt(2 / fifth)) or last < 0.3 * chance:
        return None
    # a model already right on 0.9+ of validation is usable: stopping early is a note (augmentation keeps
    # the training loss above validation's: a CNN at validation 0.931 with its training loss at 0.43 ln(k))
    vacc = _finite(_arr(s.epoch_val_acc))
    usable = bool(vacc.size and vacc[-1] >= RESOLVED_ACC)
    return Issue(
        "UNDERFITTING",
        "info" if usable else "warning",
        int(steps[-1]),
        f"the run ended at step {steps[-1]} with the training loss at {last:.3g} ({last / chance:.2f} x "
        f"ln({s.num_classes})) and still falling ({before:.3g} -> {last:.3g} over its last fifth): it "
        "stopped before it converged",
        lead=TRAIN_LONGER,
    )


FEW_STEPS = 50  # a whole run of fewer optimizer steps than this does not fit a model from scratch
TINY_BATCH = 4  # examples per step: the mean gradient of so few is mostly their noise
# UNDERFITTING's advice about the batch size (a batch rule's finding leads with it)
PICK_BATCH = next(
    i
    for i, a in enumerate(CODES["UNDERFITTING"]["advice"])
    if a.text.startswith("Use a batch size")
)


def _batch_extreme(s: RunSeries) -> Issue | None:
    """The batch size read against the split, on a run that is not fitting: a cause, like a narrow layer.

    A batch that holds the whole training split takes one optimizer step an epoch, so a run of a few
    epochs is a few dozen steps however many examples it reads; a batch of 2-4 gives a gradient that is
    mostly the noise of those few examples (and batch norm's statistics of 2), and a run of some hundred
    steps reads less than one pass of the data. Both are facts of the settings (``batch_size``,
    ``steps_per_epoch``, ``planned_steps``); they are a fault while the model is not fitting: training
    accuracy below 0.9 at the latest epoch or, before one ends, a sampled loss above half of ``ln(k)``
    from step 20 on.
    """
    chance, b = _chance_loss(s), s.batch_size
    if chance is None or not b or not s.planned_steps:
        return None
    whole = s.steps_per_epoch == 1 and s.planned_steps < FEW_STEPS
    if not whole and b > TINY_BATCH:
        return None
    tacc = _finite(_arr(s.epoch_train_acc))
    loss = _arr(s.loss)
    if tacc.size:
        if tacc[-1] >= NARROW_FITTED_ACC:
            return None
        now = f"training accuracy {tacc[-1]:.3f}"
    else:
        if not s.step or s.step[-1] < MIN_CHANCE_STEPS or not np.all(np.isfinite(loss[-3:])):
            return None
        level = _median(loss[-3:])
        if level < 0.5 * chance:
            return None
        now = f"training loss {level:.3g}, ln({s.num_classes}) = {chance:.3g}"
    # the setting held from the start: first seen at the first epoch end (a whole-split batch) or at the
    # first sample from step 20 (a tiny one)
    if whole and s.epoch_step:
        step = int(s.epoch_step[0])
    else:
        step = next((int(st) for st in s.step if st >= MIN_CHANCE_STEPS), int(s.planned_steps))
    if whole:
        what = (
            f"batch {b} holds the whole training split: one optimizer step an epoch, {s.planned_steps} "
            "steps in the run, too few to fit"
        )
    else:
        seen = s.planned_steps * b
        share = (
            f", {s.planned_steps / s.steps_per_epoch:.0%} of one epoch"
            if s.steps_per_epoch and s.planned_steps < s.steps_per_epoch
            else ""
        )
        what = (
            f"batch {b}: each step's gradient is the mean of {b} examples, mostly their noise, and the "
            f"run's {s.planned_steps} steps read {seen} examples{share}"
        )
    return Issue("UNDERFITTING", "warning", step, f"{what} ({now})", lead=PICK_BATCH)


# what a batch too large or too small explains: the slow or noisy loss it makes, and the model left unfitted
_BATCH_EXPLAINS = frozenset(
    {"STUCK_AT_CHANCE", "LOSS_PLATEAU", "SLOW_CONVERGENCE", "LOSS_OSCILLATION", "NO_LEARNING"}
)


# -- gradients ---------------------------------------------------------------
def _layer_matrix(d: dict[str, list[float]]) -> tuple[list[str], np.ndarray]:
    names = list(d)
    if not names:
        return [], np.zeros((0, 0))
    n = min(len(v) for v in d.values())
    return names, np.array([_arr(d[k][:n]) for k in names])


def _vanishing(s: RunSeries) -> Issue | None:
    names, m = _layer_matrix(s.layer_grad_norm)
    need = s.min_layer_samples
    if len(names) >= 2 and m.shape[1] >= need:
        first, last = m[0], m[-1]
        ok = np.isfinite(first) & np.isfinite(last) & (last > 0)
        if ok.sum() >= need:
            ratio = first[ok] / last[ok]
            med = median_1d(ratio)
            if med < VANISHING_RATIO:
                idx = int(np.flatnonzero(ok)[min(1, ok.sum() - 1)])
                return Issue(
                    "VANISHING_GRADIENTS",
                    "critical" if med < VANISHING_RATIO**2 else "warning",
                    _step_at(s.layer_step, idx),
                    f"first layer {names[0]} gets {med:.1e} of the gradient norm of the last layer "
                    f"{names[-1]} "
                    + (
                        f"(median over {int(ok.sum())} samples)"
                        if s.per_layer_source == "batches"
                        else "(the optimizer's running record of each layer's gradients)"
                    ),
                    layer=names[0],
                )
    gn = _finite(_arr(s.grad_norm))
    if gn.size >= 5 and median_1d(gn) < GLOBAL_NORM_TINY:
        return Issue(
            "VANISHING_GRADIENTS",
            "warning",
            _step_at(s.step, 4),
            f"global gradient norm is tiny (median {median_1d(gn):.1e})",
        )
    return None


def _exploding(s: RunSeries) -> Issue | None:
    gn = _arr(s.grad_norm)
    fin = _finite(gn)
    if fin.size < 6:
        return None
    early = _median(fin[:3])
    if early > 0:
        over = np.flatnonzero(np.isfinite(gn) & (gn > EXPLODING_GROWTH * early))
        if over.size:
            i = int(over[0])
            return Issue(
                "EXPLODING_GRADIENTS",
                "critical",
                _step_at(s.step, i),
                f"gradient norm grew from {early:.3g} to {gn[i]:.3g} (x{gn[i] / early:.2g}) "
                f"by step {_step_at(s.step, i)}",
            )
    names, m = _layer_matrix(s.layer_grad_norm)
    if len(names) >= 2 and m.shape[1] >= 2:
        ok = np.isfinite(m[0]) & np.isfinite(m[-1]) & (m[-1] > 0)
        if ok.sum() >= 2:
            med = median_1d(m[0][ok] / m[-1][ok])
            if med > 1 / VANISHING_RATIO:
                return Issue(
                    "EXPLODING_GRADIENTS",
                    "warning",
                    _step_at(s.layer_step, 1),
                    f"first layer {names[0]} gets {med:.1e}x the gradient norm of the last layer",
                    layer=names[0],
                )
    return None


# -- units and weights -------------------------------------------------------
def _worst_layer(
    per_layer: dict[str, list[float]], threshold: float, need: int = 2
) -> tuple[str, float, int] | None:
    """The layer whose recent fraction is highest, if above ``threshold``: (name, fraction, first index above)."""
    worst: tuple[str, float, int] | None = None
    for name, values in per_layer.items():
        v = _arr(values)
        if v.size < need:
            continue
        recent = _median(v[-3:])
        if recent > threshold and (worst is None or recent > worst[1]):
            above = np.flatnonzero(v > threshold)
            worst = (name, recent, int(above[0]) if above.size else v.size - 1)
    return worst


def _dead_neurons(s: RunSeries) -> Issue | None:
    found = _worst_layer(s.layer_dead_fraction, DEAD_FRACTION, s.min_layer_samples)
    if found is None:
        return None
    name, frac, idx = found
    return Issue(
        "DEAD_NEURONS",
        "critical" if frac > 0.9 else "warning",
        _step_at(s.layer_step, idx),
        f"{frac:.0%} of the units of {name} "
        + (
            "never fired over the sampled batches"
            if s.per_layer_source == "batches"
            else "got exactly zero gradient in the optimizer's running record: they never fire"
        ),
        layer=name,
    )


def _saturated(s: RunSeries) -> Issue | None:
    found = _worst_layer(s.layer_saturation, SATURATION_FRACTION)
    if found is None:
        return None
    name, frac, idx = found
    return Issue(
        "SATURATED_ACTIVATIONS",
        "critical" if frac > 0.8 else "warning",
        _step_at(s.layer_step, idx),
        f"{frac:.0%} of the outputs of {name} sit at the activation's bounds",
        layer=name,
    )


def _init_scale_evidence(name: str, ratio: float, ratios: dict[str, float]) -> str:
    """Why ``name``'s initial scale is off, in words. A std of 0 (all weights equal, a zero init) has no
    "x times smaller" (1/0 crashed the live diagnosis): it is said as what it does, symmetry never broken."""
    if ratio <= 0:
        flat = [n for n, r in ratios.items() if r == 0]
        where = "every layer" if len(flat) == len(ratios) > 1 else name
        also = f" ({name} first)" if where != name else ""
        return (
            f"initial weights of {where}{also} are all equal (std 0, e.g. all zero): every unit of "
            "a layer computes the same output and gets the same gradient, so symmetric units never "
            "differ"
        )
    direction = "larger" if ratio > 1 else "smaller"
    return (
        f"initial weights of {name} are {max(ratio, 1 / ratio):.0f}x {direction} than He/Xavier "
        "scale for the layer's fan-in"
    )


def _bad_initialization(s: RunSeries) -> Issue | None:
    """Weights far from He/Xavier scale, or (TheDeepChecker's and Karpathy's first check) a first loss far above ln(k)."""
    name, ratio = None, 1.0
    if s.init_scale_ratio:
        name, ratio = max(
            s.init_scale_ratio.items(), key=lambda kv: abs(math.log(max(kv[1], 1e-30)))
        )
        if ratio > INIT_OFF_FACTOR or ratio < 1 / INIT_OFF_FACTOR:
            return Issue(
                "BAD_INITIALIZATION",
                "critical" if ratio > INIT_OFF_FACTOR else "warning",
                0,
                _init_scale_evidence(name, ratio, s.init_scale_ratio),
                layer=name,
            )
    chance, first = _chance_loss(s), s.initial_loss
    if chance and first is not None and math.isfinite(first) and first > INIT_LOSS_FACTOR * chance:
        scale = (
            f"; the weights furthest from He/Xavier scale are {name}'s, {ratio:.1f}x"
            if name
            else ""
        )
        return Issue(
            "BAD_INITIALIZATION",
            "warning",
            0,
            f"the first loss is {first:.3g}, {first / chance:.1f}x ln({s.num_classes}) = {chance:.3g}: the "
            f"initial outputs are far from uniform{scale}",
            layer=name,
        )
    return None


def _lr_decayed_too_early(s: RunSeries) -> Issue | None:
    """The LR fell below half its peak in the first 30% of the run while the loss was still falling fast."""
    steps, lrs = (s.step, _arr(s.lr)) if len(s.lr) >= 4 else (s.epoch_step, _arr(s.epoch_lr))
    total = _total_steps(s)
    if lrs.size < 3 or not np.all(np.isfinite(lrs)) or total <= 0:
        return None
    peak = np.maximum.accumulate(lrs)
    cut = np.flatnonzero(lrs < 0.5 * peak)
    if not cut.size:
        return None
    i = int(cut[0])
    at = _step_at(steps, i)
    loss_steps, loss = np.asarray(s.step, float), _arr(s.loss)
    if loss_steps.size != loss.size:
        return None
    before = loss[(loss_steps <= at) & np.isfinite(loss)]
    # three samples are enough to see a fall (the earliest cut, at step 25 of a 230-step run, leaves three)
    if at <= 0.3 * total and before.size >= 3:
        recent, earlier = median_1d(before[-2:]), median_1d(before[-4:-2])
        if recent < 0.8 * earlier:
            return Issue(
                "LR_DECAYED_TOO_EARLY",
                "warning",
                at,
                f"learning rate was cut to {lrs[i] / peak[i]:.2g} of its peak at step {at} ({at / total:.0%} "
                f"of the run) while the loss was still falling ({earlier:.3g} -> {recent:.3g}); it ends at "
                f"{lrs[-1]:.1e}",
            )
    # a cut to a tenth or less before 40% of the run, and the loss has not come down since: the schedule
    # left the model unfitted (far above what a fitted classifier reaches), not a plateau of the model's
    deep = np.flatnonzero(lrs < 0.1 * peak)
    chance = _chance_loss(s)
    if not deep.size or chance is None:
        return None
    j = int(deep[0])
    at = _step_at(steps, j)
    after = loss[(loss_steps >= at) & np.isfinite(loss)]
    if at > 0.4 * total or after.size < 2 or _step_at(s.step, len(s.step) - 1) < at + 0.1 * total:
        return None
    now = _median(after[-3:])
    if now < 0.25 * chance or now < 0.8 * _median(after[:2]):
        return None
    upto = loss[(loss_steps <= at) & np.isfinite(loss)]
    start = (
        s.initial_loss if s.initial_loss and math.isfinite(s.initial_loss) else _median(loss[:2])
    )
    fell = upto.size >= 1 and _median(upto[-2:]) < 0.9 * start
    if not (fell or at <= 0.1 * total):
        return (
            None  # a loss that never fell before the cut has another cause (the LR was not helping)
        )
    return Issue(
        "LR_DECAYED_TOO_EARLY",
        "warning",
        at,
        f"learning rate fell to {lrs[j] / peak[j]:.2g} of its peak by step {at} ({at / total:.0%} of the run) "
        f"and the loss has stayed at {now:.3g} ({now / chance:.2f} x ln({s.num_classes})) since; it ends at "
        f"{lrs[-1]:.1e}",
    )


# -- causes read from the run's settings ------------------------------------------
DECAY_PER_STEP = 1e-3  # decoupled lr x weight decay: the share of every weight removed per step
COUPLED_DECAY = 0.5  # an L2 coefficient this large outweighs a classifier's gradients
DROPOUT_STRONG = 0.8
INPUT_MEAN_OFF = 3.0  # |mean| of a normalised input is near 0
INPUT_STD_RANGE = (0.05, 5.0)  # and its std near 1
MOMENTUM_HIGH = 0.99


def _regularization(s: RunSeries) -> Issue | None:
    """Weight decay or dropout so strong the training loss cannot come down: the setting, and what it does.

    Decoupled decay (AdamW) removes lr x wd of every weight per step, whatever the gradient; at 1e-3 or more
    per step (healthy recipes sit at 1e-5-1e-4) the weights are pulled to zero faster than the data pushes
    them, and the weight norm shrinks. Dropout of 0.8 or more leaves so little signal that the training
    loss (measured with dropout on) stays far above the validation loss (without it) and high.
    """
    chance = _chance_loss(s)
    loss = _arr(s.loss)
    p = s.dropout or 0.0
    if chance is not None and p >= DROPOUT_STRONG and loss.size:
        # inverted dropout multiplies the units it keeps by 1/(1-p) in training: at 0.9+ that is 10-20x
        # larger activations and gradients, a blow-up the same LR would not make without it
        blown = np.flatnonzero(~np.isfinite(loss) | (loss > EXPLOSION_GROWTH * chance))
        if blown.size:
            i = int(blown[0])
            return Issue(
                "TOO_MUCH_REGULARIZATION",
                "critical",
                _step_at(s.step, i),
                f"dropout {p:g} multiplies the units it keeps by {1 / (1 - p):.0f} in training, and the "
                f"training loss blew up to {loss[i]:.3g} by step {_step_at(s.step, i)}",
            )
    if chance is None or loss.size < 3 or not np.all(np.isfinite(loss[-3:])):
        return None
    now = _median(loss[-3:])
    wd = s.weight_decay or 0.0
    peak_lr = float(np.nanmax(_arr(s.lr))) if s.lr and np.isfinite(_arr(s.lr)).any() else math.nan
    per_step = wd * peak_lr if s.decoupled_weight_decay else math.nan
    strong_decay = (per_step >= DECAY_PER_STEP) or (
        not s.decoupled_weight_decay and wd >= COUPLED_DECAY
    )
    if strong_decay and now > 0.1 * chance:
        wn = _arr(s.weight_norm)
        shrink = ""
        at = _step_at(s.step, min(2, len(s.step) - 1))
        ref = s.initial_weight_norm if s.initial_weight_norm else (wn[0] if wn.size >= 2 else None)
        if ref is not None and wn.size and np.isfinite(ref) and ref > 0:
            below = np.flatnonzero(wn < 0.8 * ref)
            if not below.size:
                return None  # the data holds the weights up: the decay is not what limits this run
            at = _step_at(s.layer_step, int(below[0]))
            shrink = f"; the weight norm fell from {ref:.3g} to {wn[-1]:.3g}"
        how = (
            f"decoupled weight decay {wd:g} at a peak LR of {peak_lr:.2g} removes {per_step:.1e} of every "
            "weight per step"
            if s.decoupled_weight_decay
            else f"weight decay (L2) {wd:g}"
        )
        return Issue(
            "TOO_MUCH_REGULARIZATION",
            "critical" if now > 0.85 * chance else "warning",
            at,
            f"{how}{shrink}, and the training loss stays at {now:.3g} ({now / chance:.2f} x ln({s.num_classes}))",
        )
    if p < DROPOUT_STRONG:
        return None
    tr, va = _arr(s.epoch_train_loss), _arr(s.epoch_val_loss)
    n = min(tr.size, va.size)
    for e in range(n):
        if not (np.isfinite(tr[e]) and np.isfinite(va[e])):
            continue
        if tr[e] > 0.5 * chance and (tr[e] > 1.1 * va[e] or e >= 1 and tr[e] > 0.85 * chance):
            return Issue(
                "TOO_MUCH_REGULARIZATION",
                "critical" if tr[e] > 0.85 * chance else "warning",
                _step_at(s.epoch_step, e),
                f"dropout {p:g}: the training loss with dropout on is {tr[e]:.3g} against {va[e]:.3g} on "
                f"validation without it at epoch {e + 1 + s.epoch_offset}, both far from fitted "
                f"(ln({s.num_classes}) = {chance:.3g})",
            )
    return None


def _inputs_not_normalized(s: RunSeries) -> Issue | None:
    """The first batch's inputs far from zero mean and unit std: every first-layer pre-activation is scaled
    by them, so they act as a huge (or tiny) learning rate and push units into their dead or flat ranges."""
    m, sd = s.input_mean, s.input_std
    if m is None or sd is None or not (math.isfinite(m) and math.isfinite(sd)):
        return None
    lo, hi = INPUT_STD_RANGE
    if abs(m) <= INPUT_MEAN_OFF and lo <= sd <= hi:
        return None
    return Issue(
        "INPUTS_NOT_NORMALIZED",
        "warning",
        0,
        f"the first batch's inputs have mean {m:.3g} and std {sd:.3g} (normalised inputs: about 0 and 1)",
    )


def _momentum_too_high(s: RunSeries, found: dict[str, Issue]) -> Issue | None:
    """Momentum (or beta1) of 0.99 or more, and the loss overshoots: swings, blows up, or climbs back up."""
    mu = s.momentum
    if mu is None or mu < MOMENTUM_HIGH:
        return None
    symptoms = [
        found[c]
        for c in (
            "LOSS_EXPLOSION",
            "NONFINITE_GRADIENTS",
            "EXPLODING_GRADIENTS",
            "LOSS_OSCILLATION",
            "OVERFITTING",
        )
        if c in found
    ]
    loss = _arr(s.loss)
    fin = np.where(np.isfinite(loss), loss, np.inf)
    overshoot = None
    if loss.size >= 4:
        best = np.minimum.accumulate(fin)
        up = np.flatnonzero((fin > 1.3 * best) & (best < 0.8 * fin[0]))
        if up.size:
            i = int(up[0])
            overshoot = (
                _step_at(s.step, i),
                f"the loss climbed back from {best[i]:.3g} to {fin[i]:.3g} by step {_step_at(s.step, i)}",
            )
    if not symptoms and overshoot is None:
        return None
    first = min([i.first_step for i in symptoms] + ([overshoot[0]] if overshoot else []))
    what = ", ".join(i.code for i in symptoms) or overshoot[1]  # type: ignore[index]
    return Issue(
        "MOMENTUM_TOO_HIGH",
        "critical" if any(i.severity == "critical" for i in symptoms) else "warning",
        first,
        f"momentum {mu:g}: updates keep their direction for ~{1 / (1 - mu):.0f} steps and carry past the "
        f"minimum ({what})",
    )


RULES = (
    _bad_initialization,
    _inputs_not_normalized,
    _regularization,
    _loss_explosion,
    _nonfinite_gradients,
    _exploding,
    _vanishing,
    _dead_neurons,
    _saturated,
    _no_learning,
    _slow_convergence,
    _lr_decayed_too_early,
    _at_chance,
    _loss_oscillation,
    _overfitting,
    _loss_plateau,
    _underfitting,
)

# A symptom is not reported when a finding in this set already explains it.
# Causes (the run's settings) explain the symptoms their mechanism makes.
_CAUSES = {
    "TOO_MUCH_REGULARIZATION": {
        "STUCK_AT_CHANCE",
        "UNDERFITTING",
        "LOSS_PLATEAU",
        "SLOW_CONVERGENCE",
        "DEAD_NEURONS",
        "VANISHING_GRADIENTS",
        "NO_LEARNING",
        "LOSS_OSCILLATION",
    },
    "INPUTS_NOT_NORMALIZED": {
        "BAD_INITIALIZATION",
        "DEAD_NEURONS",
        "SATURATED_ACTIVATIONS",
        "STUCK_AT_CHANCE",
        "LOSS_OSCILLATION",
        "UNDERFITTING",
        "LOSS_PLATEAU",
    },
    "MOMENTUM_TOO_HIGH": {
        "LOSS_OSCILLATION",
        "OVERFITTING",
        "LOSS_PLATEAU",
        "STUCK_AT_CHANCE",
        "DEAD_NEURONS",
        "UNDERFITTING",
    },
}
EXPLAINED_BY = {
    "STUCK_AT_CHANCE": {
        "VANISHING_GRADIENTS",
        "SLOW_CONVERGENCE",
        "NO_LEARNING",
        "DEAD_NEURONS",
        "SATURATED_ACTIVATIONS",
        "LOSS_EXPLOSION",
        "NONFINITE_GRADIENTS",
        "BAD_INITIALIZATION",
        "LR_DECAYED_TOO_EARLY",
    },
    "SLOW_CONVERGENCE": {
        "LOSS_OSCILLATION",
        "VANISHING_GRADIENTS",
        "DEAD_NEURONS",
        "SATURATED_ACTIVATIONS",
        "LR_DECAYED_TOO_EARLY",
        "LOSS_EXPLOSION",
    },
    "LOSS_PLATEAU": {
        "LOSS_OSCILLATION",
        "LR_DECAYED_TOO_EARLY",
        "OVERFITTING",
        "STUCK_AT_CHANCE",
        "SLOW_CONVERGENCE",
        "VANISHING_GRADIENTS",
        "DEAD_NEURONS",
        "LOSS_EXPLOSION",
    },
    "UNDERFITTING": {
        "LR_DECAYED_TOO_EARLY",
        "VANISHING_GRADIENTS",
        "DEAD_NEURONS",
        "SATURATED_ACTIVATIONS",
        "SLOW_CONVERGENCE",
        "STUCK_AT_CHANCE",
        "LOSS_EXPLOSION",
        "LOSS_PLATEAU",
    },
    "LOSS_OSCILLATION": set(BLOWUP_CODES),
    "NO_LEARNING": {"LR_DECAYED_TOO_EARLY", "DEAD_NEURONS"},
}
for _cause, _symptoms in _CAUSES.items():
    for _symptom in _symptoms:
        EXPLAINED_BY.setdefault(_symptom, set()).add(_cause)


# After a blow-up these follow from it (dead units, frozen weights, chance-level loss) and are not reported.
CONSEQUENCES_OF_BLOWUP = {
    "NO_LEARNING",
    "DEAD_NEURONS",
    "SLOW_CONVERGENCE",
    "STUCK_AT_CHANCE",
    "LOSS_PLATEAU",
    "UNDERFITTING",
    "LOSS_OSCILLATION",
    "SATURATED_ACTIVATIONS",
    "VANISHING_GRADIENTS",
    "OVERFITTING",
}


def diagnose(series: RunSeries) -> list[Issue]:
    """Apply every rule; drop symptoms a found mechanism explains; most severe first.

    A per-step series (``sampling == "step"``) is read as interval means, what the rules are calibrated
    on, plus the step-to-step oscillation check those means cannot see. On a finished run, a warning the
    rules gave over most of its second half and not at its end is kept (:func:`keep_held`).
    """
    issues = _diagnose_now(series)
    return keep_held(issues, series) if _finished(series) else issues


def _finished(s: RunSeries) -> bool:
    last = max(s.step[-1] if s.step else 0, s.epoch_step[-1] if s.epoch_step else 0)
    return bool(s.planned_steps and last >= s.planned_steps)


HELD_SHARE = 0.6  # of the checks over a run's second half that gave a warning: it held
HELD_CHECKS = 12  # at most this many checks (epoch ends, evenly spread): the rules cost ~1 ms each
HELD_MIN_CHECKS = 3
# findings about where the run stands, judged on its end (the accuracy a chance-level finding quotes is the
# end's): a run that left chance or got going has left them, however long they held
JUDGED_AT_THE_END = frozenset(
    {"STUCK_AT_CHANCE", "SLOW_CONVERGENCE", "NO_LEARNING", "LOSS_PLATEAU", "UNDERFITTING"}
)


def keep_held(issues: list[Issue], series: RunSeries) -> list[Issue]:
    """``issues`` plus each warning the rules gave at most of the epoch ends of the run's second half,
    still within its last quarter, and not at its end.

    A finding that flickers with the epoch-to-epoch noise (a training accuracy that swings with dropout
    on 32 examples, a gap at the memorising threshold) was the run's state for most of it; the end is
    one epoch of that swing. Each check is the rules on the series as it stood then (:meth:`RunSeries.until`),
    so a live run, the analyzer and a hand-written loop agree. A code the end explains (its cause is
    found) or a blow-up's consequence is not brought back; the evidence says how long it held.
    """
    ends = (
        [st for st in series.epoch_step if 2 * st >= series.epoch_step[-1]][:-1]
        if series.epoch_step
        else []
    )
    if len(ends) > HELD_CHECKS:
        ends = [ends[round(i * (len(ends) - 1) / (HELD_CHECKS - 1))] for i in range(HELD_CHECKS)]
    if len(ends) < HELD_MIN_CHECKS:
        return issues
    present = {i.code for i in issues}
    blown = bool(BLOWUP_CODES & present)
    hits: dict[str, list[tuple[int, Issue]]] = {}
    for st in ends:
        for issue in _diagnose_now(series.until(st)):
            if SEVERITY_RANK[issue.severity] >= SEVERITY_RANK["warning"]:
                hits.setdefault(issue.code, []).append((st, issue))
    out = list(issues)
    last_quarter = ends[(3 * len(ends)) // 4]
    for code, seen in hits.items():
        if code in JUDGED_AT_THE_END:
            continue
        if code in present or EXPLAINED_BY.get(code, set()) & present:
            continue
        if (blown and code in CONSEQUENCES_OF_BLOWUP) or code in BLOWUP_CODES:
            continue  # a blow-up gone from the end is keep_unresolved's (critical) business
        if len(seen) < HELD_SHARE * len(ends) or seen[-1][0] < last_quarter:
            continue
        if _shows_resolved(code, series):
            continue
        first = min(i.first_step for _, i in seen)
        latest = seen[-1][1]
        out.append(
            Issue(
                code,
                "warning",
                first,
                f"{latest.evidence}; seen at {len(seen)} of {len(ends)} checks over the run's second half "
                f"(epoch ends, steps {ends[0]}-{ends[-1]}), last at step {seen[-1][0]}, not at its end",
                layer=latest.layer,
                lead=latest.lead,
            )
        )
    return sorted(out, key=lambda i: (-SEVERITY_RANK[i.severity], i.first_step))


def _shows_resolved(code: str, s: RunSeries) -> bool:
    """Whether the run's end shows ``code`` resolved: for overfitting, the accuracy gap closed to the
    rule's 0.08; for the rest, validation (else training) accuracy of 0.9 or more at the end."""
    tacc, vacc = _arr(s.epoch_train_acc), _arr(s.epoch_val_acc)
    t = float(tacc[-1]) if tacc.size and math.isfinite(tacc[-1]) else None
    v = float(vacc[-1]) if vacc.size and math.isfinite(vacc[-1]) else None
    if code == "OVERFITTING":
        return t is not None and v is not None and t - v <= 0.08
    end = v if v is not None else t
    return end is not None and end >= RESOLVED_ACC


def _diagnose_now(series: RunSeries) -> list[Issue]:
    """The rules on ``series`` as it stands (see :func:`diagnose`)."""
    found: dict[str, Issue] = {}
    for issue in run_rules(series):
        found[issue.code] = issue
    momentum = _momentum_too_high(interval_means(series), found)
    if momentum is not None:
        found[momentum.code] = momentum
    narrow = found.get("UNDERFITTING")
    # a loss that climbed back to chance as the LR rose: the labels carried signal, the chance level is the LR's
    if (
        "STUCK_AT_CHANCE" in found
        and "LOSS_OSCILLATION" in found
        and _climbed_back_to_chance(interval_means(series))
    ):
        _inherit_severity(found["LOSS_OSCILLATION"], found.pop("STUCK_AT_CHANCE"))
    # a layer too narrow (the one UNDERFITTING that names a layer): a cause, not a symptom
    if narrow is not None and narrow.layer is not None:
        for code in sorted(_NARROW_EXPLAINS & found.keys()):
            _inherit_severity(narrow, found.pop(code))
    else:
        batch = _batch_extreme(interval_means(series))
        if batch is not None:  # the batch size against the split: a cause, as a narrow layer is
            found["UNDERFITTING"] = batch
            for code in sorted(_BATCH_EXPLAINS & found.keys()):
                _inherit_severity(batch, found.pop(code))
    blowups = [found[c].first_step for c in sorted(BLOWUP_CODES) if c in found]
    if blowups:
        for code in CONSEQUENCES_OF_BLOWUP & found.keys():
            if found[code].first_step >= min(blowups) and not (
                code == "OVERFITTING" and _fits_training_set(series)
            ):
                del found[code]
    for code, causes in EXPLAINED_BY.items():
        if code in found and causes & found.keys():
            symptom = found.pop(code)
            for cause in causes & found.keys():
                _inherit_severity(found[cause], symptom)
    return sorted(found.values(), key=lambda i: (-SEVERITY_RANK[i.severity], i.first_step))


def _fits_training_set(s: RunSeries) -> bool:
    """Every training example right at the end: a model that memorised its data after a blow-up was not
    left broken by it, so its overfitting is its own finding, not the blow-up's consequence."""
    acc = _finite(_arr(s.epoch_train_acc))
    return bool(acc.size and acc[-1] >= 0.98)


def _recovered(s: RunSeries) -> str | None:
    """What shows the run recovered (accuracy well above chance, loss well below ln(k)), or None."""
    chance = _chance_loss(s)
    if chance is None:
        return None
    k = s.num_classes or 2
    vacc, tr = _finite(_arr(s.epoch_val_acc)), _finite(_arr(s.epoch_train_loss))
    loss = tr[-1] if tr.size else _median(_arr(s.loss)[-3:])
    if vacc.size:
        if vacc[-1] >= max(0.5, 3.0 / k) and loss < 0.6 * chance:
            return f"validation accuracy {vacc[-1]:.3f} and training loss {loss:.3g} at the end"
        return None
    if loss < 0.5 * chance:
        return f"training loss {loss:.3g} at the end ({loss / chance:.2f} x ln({k}))"
    return None


def keep_unresolved(
    issues: list[Issue], earlier: dict[str, Issue], series: RunSeries
) -> list[Issue]:
    """``issues`` plus each code that was critical earlier in the run and is gone now.

    It stays critical unless the run shows it resolved, and then it stays as info whose evidence says
    so. A code now explained by a cause that was found since (units found dead behind a loss at chance),
    or following a blow-up still reported, is left out: the finding that replaced it is in ``issues``.
    """
    present = {i.code for i in issues}
    blown = bool(BLOWUP_CODES & present)
    out = list(issues)
    for code, old in earlier.items():
        if code in present or EXPLAINED_BY.get(code, set()) & present:
            continue
        if blown and code in CONSEQUENCES_OF_BLOWUP:
            continue
        done = _recovered(series)
        if done:
            out.append(
                Issue(
                    code,
                    "info",
                    old.first_step,
                    f"critical at step {old.first_step} ({old.evidence}); resolved since: {done}",
                    layer=old.layer,
                )
            )
        else:
            out.append(
                Issue(
                    code,
                    "critical",
                    old.first_step,
                    f"{old.evidence}; no longer seen by the rules, but the run has not recovered",
                    layer=old.layer,
                )
            )
    return sorted(out, key=lambda i: (-SEVERITY_RANK[i.severity], i.first_step))


def run_rules(series: RunSeries) -> list[Issue]:
    """Every rule's finding on ``series`` (read as interval means), before any is explained away."""
    means = interval_means(series)
    out = [issue for rule in RULES if (issue := rule(means)) is not None]
    if not any(i.code == "LOSS_OSCILLATION" for i in out):
        stepwise = step_oscillation(series)
        if stepwise is not None:
            out.append(stepwise)
    return out


def _inherit_severity(cause: Issue, symptom: Issue) -> None:
    """A cause is as bad as the worst symptom it explains (and says so).

    Six sigmoid layers that leave a run at chance show vanishing gradients at a
    ratio that alone reads as a warning; the run is lost all the same. Only
    causes found at warning or above are raised, so an info-level hint never
    turns into an alarm because something else it could explain was seen.
    """
    if (
        SEVERITY_RANK[cause.severity] >= SEVERITY_RANK["warning"]
        and SEVERITY_RANK[symptom.severity] > SEVERITY_RANK[cause.severity]
    ):
        cause.severity = symptom.severity
        cause.evidence += f"; it explains {symptom.code} ({symptom.severity}): {symptom.evidence}"
