"""Learning-rate range test (Smith 2015; fastai's and torch-lr-finder's finders).

The LR grows exponentially from ``min_lr`` to ``max_lr``, one training step per
value, and the loss is recorded. The loss is smoothed with a bias-corrected
EMA, the test stops once the smoothed loss exceeds ``diverge_factor`` × its best
(for a best at or under zero: once it rises ``(diverge_factor - 1)`` × ``|best|`` above it) or goes
non-finite, and a suggestion is read off the smoothed curve with the
first and last points skipped, as the public finders do:

- ``valley`` (fastai's default): the middle-left of the longest descending run;
- ``steepest`` (the classic range-test rule): the steepest negative slope, moved a tenth of
  the curve to the left as a safety margin;
- ``descent``: the steepest negative slope itself, no margin, on the way to the minimum only and
  within 1000x under it (a curve that does not fall there gets ``min10``);
- ``min10`` (also ``minimum/10``): a tenth of the LR at the lowest loss;
- ``min5`` (also ``minimum/5``): a fifth of it;
- ``min2`` (also ``minimum/2``): half of it; for SGD the minimum sought only within :data:`EDGE_SPAN`
  under the test's last LR (a nearly flat curve's lowest point can be anywhere, down to its start);
- ``min1`` (also ``minimum/1``): the LR at the lowest loss itself;
- ``auto`` (the default) picks by optimizer (:func:`optimizer_family`) and by how far the curve
  fell: ``descent`` for SGD, ``min5`` for Adam, AdamW and any other (``min10`` when the optimizer is not
  known); when the smoothed loss fell by under :data:`WEAK_FALL` (a hard task learns little in 100
  steps; its slopes are noise, its minimum near the test's end still marks the edge) ``min2`` for SGD and ``min1`` for any
  other optimizer, which is then held under :data:`HARD_TASK_CAP` (the minimum of such a curve sat at
  1.6e-3-1.8e-2 on the bench, the best LR at 3e-3: half of it undershot). Then a ceiling
  (:func:`auto_cap`): SGD at most :data:`NO_EDGE_CAP` x sqrt(batch size / :data:`NO_EDGE_BATCH`)
  (:func:`no_edge_cap`) when the test never diverged (no edge to read); an adaptive optimizer never
  above :data:`ADAPTIVE_CAP`, nor above :data:`HARD_TASK_CAP` when the loss fell by under
  :data:`HARD_FALL`. SGD trains best close to where the loss falls
  fastest, not far from where it diverges; an adaptive optimizer breaks far earlier, and with
  BatchNorm its test diverges late or never, so its curve's minimum says little.
  ``bench/lr_finder.py`` (bench/results/lr_finder*.md, one file a round) has the figures: ``min10`` alone
  landed 5-10x under SGD's best LR on the 28x28 set (0.80 and 0.93 of a log grid's best); for Adam(W)
  the best LR sat 2.6-11x under the minimum, and ``min10`` undershot the wide MLPs by 2-4x.
  ``valley`` lands early when the model learns during the test.

A curve of fewer than :data:`MIN_POINTS` points (a test that diverged within its first steps) has nothing
to read: the suggestion falls back to ``10 * min_lr`` if the test passed that LR without breaking, else to
``min_lr``, the lowest LR tried (:meth:`LearningRateFinder.fallback_lr`), never at or above where it
diverged nor outside ``[min_lr, max_lr]``; its ``method`` starts with ``fallback`` and says which. A caller
that acts on the LR (the runner) should refuse such a result rather than train at it.

Two entry points: the documented ``range_test(train_fn)`` where ``train_fn(lr)``
takes one step and returns the loss, and :meth:`LearningRateFinder.range_test_torch`
which drives a model and optimizer itself and then restores their state (and the
scaler's, the RNGs' and the gradients'), so the caller's model is untouched.
"""

from __future__ import annotations

import math
import textwrap
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from diag.lr_rules import LABELS, METHODS, canonical_method
from diag.training_state import TrainingState, apply, capture

WEAK_FALL = 0.05
"""A curve whose smoothed loss falls by less than this fraction of its first read value learned too
little in the test for its slopes to mean anything: ``auto`` reads its minimum instead (half its LR for
SGD, the LR itself under :data:`HARD_TASK_CAP` for the rest)."""
FAMILIES = ("sgd", "adaptive")
NO_EDGE_CAP = 0.1
"""SGD's ceiling under ``auto`` when the test found no edge (the loss never diverged below
``0.9 * max_lr``), at a batch of :data:`NO_EDGE_BATCH`: SGD with momentum's conventional LR. A BatchNorm
CNN's range test can run to lr=10 without blowing up, its smoothed minimum at 1-4, and every rule read
off that curve landed 2-40x over the best LR (bench/results/lr_finder_round*.md); with no edge seen,
nothing above the convention is safe."""
NO_EDGE_BATCH = 64
"""The batch size :data:`NO_EDGE_CAP` was measured at (the bench's batch). :func:`no_edge_cap` scales
the ceiling with the square root of the batch (the gradient noise's scale; Hoffer et al. 2017): a batch
of 256 takes a quarter of the steps with half the noise, and the bench's batch-256 BatchNorm CNNs lost
up to 20% at 0.1 against 0.2-0.3, and 40-80% at 0.5 (linear scaling's 0.4 sits next to that drop)."""
ADAPTIVE_CAP = 1e-2
"""An adaptive optimizer's ceiling under ``auto``, edge or not: with BatchNorm the test diverges late
(lr 5-10) or never, ``min10`` then reads 0.05-0.1 where the best LR was 3e-3-1e-2 on every such
bench task, and whether it diverged just under or just over ``0.9 * max_lr`` is chance."""
MIN_POINTS = 10
"""The fewest points a curve needs for any rule to read it; under that :meth:`LearningRateFinder.suggest`
falls back (:meth:`LearningRateFinder.fallback_lr`): two or three points before a divergence show no
slope, minimum or valley."""
HARD_TASK_CAP = 3e-3
HARD_FALL = 0.10
"""An adaptive optimizer whose test loss fell by under this fraction is on a hard (noisy) task: at
most :data:`HARD_TASK_CAP` (Adam's conventional LR), where 1e-2 lost 15-30% on the bench's CIFAR-shaped
set."""


def no_edge_cap(batch_size: int | None) -> float:
    """SGD's ceiling on a test with no edge: :data:`NO_EDGE_CAP` x sqrt(``batch_size`` /
    :data:`NO_EDGE_BATCH`), :data:`NO_EDGE_CAP` itself when the batch size is not known."""
    if not batch_size:
        return NO_EDGE_CAP
    return NO_EDGE_CAP * math.sqrt(batch_size / NO_EDGE_BATCH)


def auto_cap(
    family: str | None, fall: float, no_edge: bool, batch_size: int | None = None
) -> float | None:
    """``auto``'s ceiling: SGD's :func:`no_edge_cap` when the test found no edge, else none; any other
    optimizer :data:`HARD_TASK_CAP` if the loss fell by under :data:`HARD_FALL`, else :data:`ADAPTIVE_CAP`."""
    if family == "sgd":
        return no_edge_cap(batch_size) if no_edge else None
    return HARD_TASK_CAP if fall < HARD_FALL else ADAPTIVE_CAP


def cap_reason(
    family: str | None, fall: float, max_lr: float, batch_size: int | None = None
) -> str:
    """Why :func:`auto_cap` capped (shown in a plot's legend and the printed suggestion)."""
    if family == "sgd":
        batch = f", batch {batch_size}" if batch_size else ""
        return f"no divergence below {0.9 * max_lr:.3g}{batch}"
    if fall < HARD_FALL:
        return f"adaptive, loss fell {fall:.0%} < {HARD_FALL:.0%}"
    return "adaptive"


def optimizer_family(optimizer: torch.optim.Optimizer) -> str:
    """``sgd`` for :class:`torch.optim.SGD` (any momentum, Nesterov or not), ``adaptive`` for any other.

    Why it matters: SGD's step is the LR times the gradient, so it trains best close to where the
    range test's loss falls fastest; a per-parameter normalised step (Adam, AdamW, RMSprop, ...)
    is already large at small LRs and breaks well before the curve's minimum. An optimizer this
    does not know is treated as adaptive, the conservative side.
    """
    return "sgd" if isinstance(optimizer, torch.optim.SGD) else "adaptive"


def auto_rule(family: str | None, fall: float | None = None) -> str:
    """The rule ``auto`` uses: ``descent`` for SGD, ``min5`` for adaptive optimizers, fastai's ``min10``
    when the optimizer is not known (``range_test(train_fn)`` without ``optimizer_family``); when the
    curve fell by less than :data:`WEAK_FALL` (``fall``) ``min2`` for SGD and ``min1`` for the rest.

    Why ``min5``, not fastai's ``min10``: over the bench's Adam(W) tasks the best LR of a short cosine
    run sat 2.6-11x under the curve's minimum; a tenth trained the wide MLPs at 2-4x under their best
    (0.95 and 0.91 of it on 3-seed means), a fifth is at most 2x over the best where a tenth was right,
    and the ceilings below hold it on the steep side.

    Why ``min1`` there: an adaptive optimizer's weak-fall curve is always held under
    :data:`HARD_TASK_CAP` by :func:`auto_cap`; its minimum is as often under that as over it, and
    halving it too put the LR 2-3x under the best (bench/lr_finder.py, mlp/adam/cifar32 at 3 seeds:
    minima at 1.6e-3-4e-3, best 3e-3, ``min2`` 0.916 of it).
    """
    if fall is not None and fall < WEAK_FALL:
        return "min2" if family == "sgd" else "min1"
    if family == "sgd":
        return "descent"
    return "min5" if family == "adaptive" else "min10"


CANDIDATE_SPACING = 3.0
"""How far apart the checked candidates sit (a factor): the spacing of a coarse LR grid. Round 9 of
``bench/lr_finder.py`` missed by 2.5-3.6x (SGD at batch 256 under its best, SGD at batch 32 and a
capped AdamW over it): one step of the ladder each way covers those."""


def candidate_ladder(
    center: float, count: int, low: float, high: float, spacing: float = CANDIDATE_SPACING
) -> list[float]:
    """``count`` LRs ``spacing``x apart around ``center`` (the curve rule's pick), ascending, inside
    ``[low, high]``: a rung past an end is moved to the other end of the ladder, so ``count`` stays.

    Why a ladder around the pick rather than the curve's rules' own readings: the readings cluster
    (several rules read the same minimum) and where the curve says nothing (a flat SGD curve) they
    scatter over decades; a ladder spends the trials evenly where the rule's errors were measured.
    ``high`` is where the range test diverged: nothing above it is worth a trial.
    """
    if count < 1:
        raise ValueError(f"count={count}: need at least one candidate")
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got low={low}, high={high}")
    center = min(max(center, low), high)
    first = -((count - 1) // 2) - (count - 1) % 2  # an even count puts its extra rung below
    rungs = list(range(first, first + count))
    while (
        center * spacing ** rungs[-1] > high * (1 + 1e-9)
        and center * spacing ** (rungs[0] - 1) >= low
    ):
        rungs = [rungs[0] - 1, *rungs[:-1]]
    while (
        center * spacing ** rungs[0] < low * (1 - 1e-9)
        and center * spacing ** (rungs[-1] + 1) <= high
    ):
        rungs = [*rungs[1:], rungs[-1] + 1]
    lrs = sorted({min(max(center * spacing**k, low), high) for k in rungs})
    return [float(lr) for lr in lrs]


def learned(trial: dict[str, Any], start_score: float | None = None) -> bool:
    """A trial that ran to its end with a finite score, better than the untrained model's
    (``start_score``): one that ended at or above it learned nothing, as good as diverged."""
    if trial["diverged"] or not math.isfinite(trial["score"]):
        return False
    return start_score is None or not math.isfinite(start_score) or trial["score"] < start_score


def pick_trial(
    trials: list[dict[str, Any]], start_score: float | None = None, truncated: bool = False
) -> dict[str, Any] | None:
    """The trial with the lowest ``score`` (validation loss) among those that :func:`learned`; ``None``
    when none did. A tie keeps the lower LR (the safer side).

    ``truncated`` (the trials are shorter than the run): when the next candidate up broke (diverged or
    learned nothing), the pick sits at the edge of stability and the next candidate down is taken. A
    longer run spends more steps at its peak LR; on the bench's dev tasks the trial's winner next to a
    broken candidate trained worse over the whole run than the one under it (bench/results/
    lr_finder_round10.md, dev: mlp_wide/sgd_hb/cifar32/bs32/seed8, 0.17 against 0.058 where 0.03-0.1
    was best).
    """
    best = lowest(trials, start_score)
    if best is not None and truncated:
        ordered = sorted(trials, key=lambda t: t["lr"])
        k = ordered.index(best)
        above = ordered[k + 1] if k + 1 < len(ordered) else None
        below = ordered[k - 1] if k > 0 else None
        if (
            above is not None
            and not learned(above, start_score)
            and below is not None
            and learned(below, start_score)
        ):
            return below
    return best


def interpolate(
    trials: list[dict[str, Any]], pick: dict[str, Any], start_score: float | None = None
) -> float:
    """The LR at the vertex of the parabola through ``pick``'s score and its two neighbours' against
    log LR (at most half way to either neighbour); ``pick``'s own LR unless both neighbours
    :func:`learned` and scored above ``pick`` (a bracketed minimum).

    Why: the ladder's rungs sit 3x apart and the run's best LR often lies between two of them (round
    10 of ``bench/lr_finder.py``: a peak at 0.1 between rungs at 0.048 and 0.143); the three scores the
    check already has say which side it lies on, at no extra trial (successive parabolic interpolation,
    the classic line-search step). A pick stepped down from the edge of stability has a lower score
    above it, so no bracket, and stays.
    """
    ordered = sorted(trials, key=lambda t: t["lr"])
    k = ordered.index(pick)
    if not 0 < k < len(ordered) - 1:
        return float(pick["lr"])
    lo, hi = ordered[k - 1], ordered[k + 1]
    ys = (lo["score"], pick["score"], hi["score"])
    if not (learned(lo, start_score) and learned(hi, start_score)):
        return float(pick["lr"])
    if not (ys[1] < ys[0] and ys[1] < ys[2]):
        return float(pick["lr"])
    x0, x1, x2 = (math.log(t["lr"]) for t in (lo, pick, hi))
    a, b = (x1 - x0) * (ys[1] - ys[2]), (x1 - x2) * (ys[1] - ys[0])
    # under both neighbours, the vertex lies between the midpoints: never past half way to either
    return float(math.exp(x1 - 0.5 * ((x1 - x0) * a - (x1 - x2) * b) / (a - b)))


def lowest(trials: list[dict[str, Any]], start_score: float | None = None) -> dict[str, Any] | None:
    """The trial that :func:`learned` with the lowest score (a tie: the lower LR), or ``None``."""
    alive = [t for t in trials if learned(t, start_score)]
    return min(alive, key=lambda t: (t["score"], t["lr"])) if alive else None


def next_candidate(
    trials: list[dict[str, Any]],
    low: float,
    high: float,
    start_score: float | None = None,
    spacing: float = CANDIDATE_SPACING,
) -> float | None:
    """One more rung past the ladder's end when the best trial sits at that end (the scores still fall
    that way: the curve rule's pick was far off), inside ``[low, high]``; else ``None``. A line search:
    it stops where the score turns up or a candidate breaks."""
    best = lowest(trials, start_score)
    if best is None:
        return None
    lrs = sorted(t["lr"] for t in trials)
    if best["lr"] == lrs[-1] and best["lr"] * spacing <= high:
        return float(best["lr"] * spacing)
    if best["lr"] == lrs[0] and best["lr"] / spacing >= low:
        return float(best["lr"] / spacing)
    return None


def relative_fall(losses: np.ndarray) -> float:
    """How far the curve falls from its first value to its minimum, as a fraction of the first."""
    first = float(losses[0])
    return (first - float(np.min(losses))) / abs(first) if first != 0 else 0.0


def smooth_losses(losses: Iterable[float], beta: float) -> list[float]:
    """Bias-corrected exponential moving average (Adam-style), so early values are not pulled to zero."""
    out, avg = [], 0.0
    for i, loss in enumerate(losses):
        avg = beta * avg + (1 - beta) * loss
        out.append(avg / (1 - beta ** (i + 1)) if beta > 0 else loss)
    return out


def valley_index(losses: np.ndarray) -> int:
    """fastai's ``valley``: longest strictly decreasing subsequence, then 1/2 of the way into its first 2/3."""
    n = len(losses)
    lds = [1] * n
    max_start = max_end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and lds[i] < lds[j] + 1:
                lds[i] = lds[j] + 1
            if lds[max_end] < lds[i]:
                max_end = i
                max_start = max_end - lds[max_end]
    sections = (max_end - max_start) / 3
    return max(0, min(n - 1, max_start + int(sections) + int(sections / 2)))


def steepest_index(lrs: np.ndarray, losses: np.ndarray) -> int:
    """The classic rule: steepest descent in log-LR, minus a tenth of the curve for safety."""
    grads = np.gradient(losses, np.log(lrs))
    return max(0, int(np.argmin(grads)) - len(losses) // 10)


DESCENT_SPAN = 1000.0
"""``descent`` reads the fall only within this factor under the minimum's LR: SGD's best LR was never
more than ~10x under it on the bench, while a young EMA's wiggles at the start of a noisy test can be
as steep as a hard task's real fall."""


EDGE_SPAN = 300.0
"""SGD's ``min2`` reads the minimum only from the test's last LR / this up: on a curve that hardly fell the
lowest point is noise wherever the loss is flat, and the edge it should mark is where the test ended.
Every weak-fall SGD minimum of the bench's dev curves sat 3-183x under the test's last LR; round 8's two
that sat 1400x and 3e6x under it (7.1e-3 and 9.3e-7, the test's start, on a curve that fell 0.07%)
read 3.5e-3 and 4.7e-7 and trained to 0.195 and chance (bench/results/lr_finder_round8.md)."""


def edge_minimum_index(lrs: np.ndarray, losses: np.ndarray, last_lr: float) -> int:
    """The lowest loss among the points within :data:`EDGE_SPAN` under ``last_lr`` (the test's last LR,
    which may lie past ``lrs``); the global minimum if no point is that close."""
    near = np.flatnonzero(lrs >= last_lr / EDGE_SPAN)
    if near.size == 0:
        return int(np.argmin(losses))
    return int(near[np.argmin(losses[near])])


def descent_index(lrs: np.ndarray, losses: np.ndarray) -> int | None:
    """Where the loss falls fastest in log-LR on the way to its minimum, with no safety shift.

    Only points from ``minimum's LR / DESCENT_SPAN`` up to the minimum count (a fall after a
    spike past it is not a trainable LR); ``None`` if the loss does not fall there.
    """
    grads = np.gradient(losses, np.log(lrs))
    low = int(np.argmin(losses))
    first = int(np.searchsorted(lrs, lrs[low] / DESCENT_SPAN))
    i = first + int(np.argmin(grads[first : low + 1]))
    return i if grads[i] < 0 else None


class NothingMeasured(ValueError):
    """The range test measured no LR: its first loss was non-finite, or (torch mode) ``batches`` gave no
    batch. Any suggestion would be made up (a caller may say it its own way)."""


class LearningRateFinder:
    """LR range test with EMA smoothing, a divergence stop and selectable suggestion rules.

    ``smooth`` is the EMA coefficient (0 disables smoothing); ``skip_start``
    defaults to a tenth of ``num_steps`` and ``skip_end`` to 5, like fastai.
    ``method="auto"`` reads ``descent`` for SGD and ``min5`` for adaptive optimizers; the torch mode
    learns ``optimizer_family`` from its optimizer, ``range_test(train_fn)`` needs it given
    (``"sgd"`` or ``"adaptive"``; without it ``auto`` is ``min10``). ``batch_size`` (the torch mode
    reads it off the first batch) scales SGD's no-edge ceiling (:func:`no_edge_cap`).
    """

    def __init__(
        self,
        min_lr: float = 1e-7,
        max_lr: float = 10.0,
        num_steps: int = 100,
        method: str = "auto",
        smooth: float = 0.98,
        diverge_factor: float = 4.0,
        skip_start: int | None = None,
        skip_end: int = 5,
        optimizer_family: str | None = None,
        batch_size: int | None = None,
    ) -> None:
        if not (min_lr > 0 and max_lr > min_lr):
            raise ValueError(f"need 0 < min_lr < max_lr, got min_lr={min_lr}, max_lr={max_lr}")
        if isinstance(num_steps, bool) or int(num_steps) != num_steps or num_steps < 2:
            raise ValueError(f"num_steps={num_steps}: a whole number of steps, at least 2")
        if not 0 <= smooth < 1:
            raise ValueError(f"smooth={smooth}: the EMA coefficient must be in [0, 1)")
        if not diverge_factor > 1:
            raise ValueError(f"diverge_factor={diverge_factor}: must be > 1")
        if optimizer_family not in (None, *FAMILIES):
            raise ValueError(
                f"optimizer_family={optimizer_family!r}: one of {', '.join(FAMILIES)} (or None)"
            )
        if batch_size is not None and int(batch_size) < 1:
            raise ValueError(f"batch_size={batch_size}: must be a positive whole number")
        self.optimizer_family = optimizer_family
        self.batch_size = None if batch_size is None else int(batch_size)
        self.min_lr = float(min_lr)
        self.max_lr = float(max_lr)
        self.num_steps = int(num_steps)
        self.method = canonical_method(method)
        self.smooth = float(smooth)
        self.diverge_factor = float(diverge_factor)
        self.skip_start = self.num_steps // 10 if skip_start is None else int(skip_start)
        self.skip_end = int(skip_end)
        self.lrs: list[float] = []
        self.losses: list[float] = []
        self.smoothed_losses: list[float] = []
        self.stop_reason = "not run"
        # the LR at which the test stopped on a divergence or a non-finite loss (None: it did not)
        self.diverged_lr: float | None = None
        self._result: dict[str, Any] | None = None

    # -- the schedule and the record ----------------------------------------
    def schedule(self) -> np.ndarray:
        """The exponential LR schedule: ``num_steps`` values from ``min_lr`` to ``max_lr``."""
        return np.exp(np.linspace(np.log(self.min_lr), np.log(self.max_lr), self.num_steps))

    def _reset(self) -> None:
        self.lrs, self.losses, self.smoothed_losses = [], [], []
        self._avg, self._best = 0.0, math.inf
        self.stop_reason = "completed"
        self.diverged_lr = None
        self._result = None

    def _record(self, lr: float, loss: float) -> bool:
        """Store one point; return True when the test must stop (non-finite or diverged)."""
        if not math.isfinite(loss):
            self.stop_reason = f"non-finite loss at lr={lr:.3g}"
            self.diverged_lr = float(lr)
            return True
        i = len(self.losses)
        self._avg = self.smooth * self._avg + (1 - self.smooth) * loss
        smoothed = self._avg / (1 - self.smooth ** (i + 1)) if self.smooth > 0 else loss
        self.lrs.append(float(lr))
        self.losses.append(float(loss))
        self.smoothed_losses.append(float(smoothed))
        self._best = min(self._best, smoothed)
        if self._diverged(lr, smoothed):
            self.diverged_lr = float(lr)
            return True
        return False

    def _diverged(self, lr: float, smoothed: float) -> bool:
        """Whether ``smoothed`` is past the divergence limit; if so, :attr:`stop_reason` says why.

        A positive best: ``smoothed > diverge_factor * best``, as the public finders test. A ratio means
        nothing for a loss that can be negative (a Gaussian NLL, an ELBO): there the rise above the best
        is compared with ``(diverge_factor - 1) * |best|``, the same limit written for any sign, so a
        negative curve is not stopped at its first step. A best of exactly 0 stops at any rise, as
        the ratio does.
        """
        best, factor = self._best, self.diverge_factor
        if best > 0:  # today's test, not rewritten: a positive curve stops exactly where it did
            if smoothed > factor * best:
                self.stop_reason = (
                    f"diverged at lr={lr:.3g} (smoothed loss {smoothed:.3g} > "
                    f"{factor:g} x best {best:.3g})"
                )
                return True
            return False
        limit = (factor - 1) * abs(best)
        if smoothed - best > limit:
            self.stop_reason = (
                f"diverged at lr={lr:.3g} (smoothed loss {smoothed:.3g} rose "
                f"{smoothed - best:.3g} above its best {best:.3g}, more than {factor - 1:g} x |best| "
                f"= {limit:.3g})"
            )
            return True
        return False

    # -- documented public API ------------------------------------------------
    def range_test(
        self, train_fn: Callable[[float], float] | None = None, **torch_kwargs: Any
    ) -> dict[str, Any]:
        """Run the test with ``train_fn(lr) -> loss`` (documented API), or in torch mode given ``model=...`` etc."""
        if train_fn is None:
            return self.range_test_torch(**torch_kwargs)
        if torch_kwargs:
            raise TypeError(
                f"range_test(train_fn) takes no other arguments, got {sorted(torch_kwargs)}"
            )
        self._reset()
        for lr in self.schedule():
            loss = train_fn(float(lr))
            if isinstance(loss, torch.Tensor) and loss.numel() == 1:
                loss = loss.item()
            if isinstance(loss, bool) or not isinstance(loss, (int, float, np.number)):
                raise TypeError(
                    f"range_test: train_fn({lr:.3g}) must return the step's loss as a number, "
                    f"got {type(loss).__name__}"
                )
            if self._record(float(lr), float(loss)):
                break
        if not self.losses:  # nothing measured: any suggestion would be made up
            raise self._nothing_measured("train_fn returned", float(loss))
        return self.result()

    def _nothing_measured(self, source: str, loss: float) -> NothingMeasured:
        """The error of a test whose first loss was non-finite: no LR was measured, so there is no LR
        under the break to suggest (the first loss is the untrained model's: the LR is not the cause)."""
        return NothingMeasured(
            f"range_test: {source} a non-finite loss ({loss}) at the first LR "
            f"({self.min_lr:.3g}), before any LR was measured: the model or the loss is broken "
            "before the LR matters (check the inputs and the initial loss)"
        )

    def run(
        self, train_fn: Callable[[float], float] | None = None, **torch_kwargs: Any
    ) -> dict[str, Any]:
        """The name other LR finders use for :meth:`range_test` (same arguments, same result)."""
        return self.range_test(train_fn, **torch_kwargs)

    # -- torch mode ------------------------------------------------------------
    def range_test_torch(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        batches: Iterable[Any],
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
        scaler: torch.amp.GradScaler | None = None,
        autocast_dtype: torch.dtype | None = None,
        clip_max_norm: float | None = None,
        device: torch.device | str | None = None,
    ) -> dict[str, Any]:
        """Train ``model`` on ``(inputs, targets)`` batches along the schedule, then restore everything.

        Each batch is a tuple or list whose first item is the inputs tensor and second the targets
        (what a ``DataLoader`` over a ``TensorDataset`` yields; further items are ignored); any other
        batch (a dict, a bare tensor) is refused with a ``TypeError``. ``batches`` is re-iterated when
        it runs out (a loader), or the test ends with it (an iterator); one that gives no batch at all
        raises :class:`NothingMeasured`, as a model without trainable parameters raises a ``ValueError``
        before any step. The model, optimizer, scaler, gradients, train/eval mode, torch RNG and the
        loader's ``generator`` are put back as they were, from deep copies, even if a step raises.
        """
        if not any(p.requires_grad for p in model.parameters()):
            raise ValueError(
                f"range_test(model=...): the model ({type(model).__name__}) has no trainable parameters "
                "(none, or all with requires_grad=False), so no LR can move it: unfreeze the layers to "
                "tune (p.requires_grad_(True)) and pass them to the optimizer"
            )
        self._reset()
        if self.optimizer_family is None:  # what method="auto" reads off the curve depends on it
            self.optimizer_family = optimizer_family(optimizer)
        saved = _snapshot(model, optimizer, scaler, batches)
        bad = math.nan  # the non-finite loss the test stopped on, if it did
        try:
            model.train()
            params = [p for p in model.parameters() if p.requires_grad]
            stream = cycle_batches(batches)
            for lr in self.schedule():
                batch = next(stream, None)
                if batch is None:
                    self.stop_reason = "ran out of batches"
                    break
                x, y = _inputs_targets(batch)
                if self.batch_size is None:  # SGD's no-edge ceiling scales with it
                    self.batch_size = len(x)
                if device is not None:
                    x, y = x.to(device), y.to(device)
                for group in optimizer.param_groups:
                    group["lr"] = float(lr)
                optimizer.zero_grad(set_to_none=True)
                with torch.autocast(
                    x.device.type,
                    dtype=autocast_dtype or torch.float32,
                    enabled=autocast_dtype is not None,
                ):
                    loss = loss_fn(model(x), y)
                if not loss.requires_grad:  # torch's own error names neither the loss nor the model
                    raise ValueError(
                        "range_test(loss_fn=...): the loss does not depend on any trainable parameter of "
                        f"the model ({type(model).__name__}), so a step cannot change it: compute it from "
                        "the model's outputs without detaching them"
                    )
                value = float(
                    loss.detach().float()
                )  # one host read per step: the stop rule needs it
                if not math.isfinite(value):
                    self._record(float(lr), value)
                    bad = value
                    break
                if scaler is not None and scaler.is_enabled():
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    if clip_max_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, clip_max_norm)
                    scaler.step(optimizer)
                    scaler.update()
                else:
                    loss.backward()
                    if clip_max_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, clip_max_norm)
                    optimizer.step()
                if self._record(float(lr), value):
                    break
        finally:
            _restore(saved, model, optimizer, scaler, batches)
        if not self.losses and self.diverged_lr is None:  # the stream ended before its first batch
            raise NothingMeasured(
                "range_test(batches=...): no batch came out of it, so no LR was measured: pass a loader "
                "or a list of (inputs, targets) batches that is not empty (an iterator already "
                "consumed is empty)"
            )
        if (
            not self.losses and self.diverged_lr is not None
        ):  # as range_test(train_fn): nothing to read
            raise self._nothing_measured("the model's loss was", bad)
        return self.result()

    # -- suggestions -------------------------------------------------------------
    def _window(self) -> tuple[int, int]:
        """The slice the suggestion reads: skip the first/last points unless that leaves too few."""
        n = len(self.losses)
        start, end = self.skip_start, n - self.skip_end
        if end - start < 10:
            start, end = 0, n
        return start, end

    def suggest(self, method: str | None = None) -> dict[str, Any]:
        """``{'lr', 'index', 'method'}`` for one rule (``auto``: the optimizer's).

        Fewer than :data:`MIN_POINTS` points: :meth:`fallback_lr`, ``index`` None and a ``method`` that
        starts with ``fallback (fewer than 10 points`` and says which LR it took (no rule can read such
        a curve; a caller about to train should refuse it, as the runner does).
        """
        name = canonical_method(method or self.method)
        if len(self.losses) < MIN_POINTS:
            lr = self.fallback_lr()
            which = "10 x min_lr" if lr > self.min_lr else "min_lr, the lowest LR tried"
            return {
                "lr": lr,
                "index": None,
                "method": f"fallback (fewer than {MIN_POINTS} points: {which})",
            }
        start, end = self._window()
        lrs = np.asarray(self.lrs[start:end])
        losses = np.asarray(self.smoothed_losses[start:end])
        cap, fall = None, relative_fall(losses)
        if name == "auto":
            name = auto_rule(self.optimizer_family, fall)
            cap = auto_cap(self.optimizer_family, fall, self.found_no_edge(), self.batch_size)
        if name == "valley":
            i = valley_index(losses)
            lr = lrs[i]
        elif name == "steepest":
            i = steepest_index(lrs, losses)
            lr = lrs[i]
        elif name == "descent" and (d := descent_index(lrs, losses)) is not None:
            i = d
            lr = lrs[i]
        elif name == "min5":
            i = int(np.argmin(losses))
            lr = lrs[i] / 5
        elif name == "min2":
            # for SGD only: an adaptive curve's minimum sits far under its end
            sgd = self.optimizer_family == "sgd"
            i = edge_minimum_index(lrs, losses, self.lrs[-1]) if sgd else int(np.argmin(losses))
            lr = lrs[i] / 2
        elif name == "min1":
            i = int(np.argmin(losses))
            lr = lrs[i]
        else:  # min10, and descent on a curve that never falls (nothing to read but its minimum)
            name = "min10"
            i = int(np.argmin(losses))
            lr = lrs[i] / 10
        if cap is not None and lr > cap:
            why = cap_reason(self.optimizer_family, fall, self.max_lr, self.batch_size)
            return {
                "lr": cap,
                "index": start + i,
                "method": name,
                "capped_at": cap,
                "cap_reason": why,
            }
        return {"lr": float(lr), "index": start + i, "method": name}

    def fallback_lr(self) -> float:
        """The LR :meth:`suggest` gives a curve too short to read: ``10 * min_lr`` (the finder's
        documented fallback) when the test passed that LR without diverging, else ``min_lr``.

        Why not ``10 * min_lr`` always: a test that diverged within a decade of its start (``min_lr=1
        max_lr=2``: diverged at 1.01) then suggested 10, over both the test's range and the LR that
        blew it up. The result is in ``[min_lr, max_lr]`` and under :attr:`diverged_lr` (the first
        point cannot diverge; a non-finite first loss makes the test raise).
        """
        ten = 10 * self.min_lr
        passed = [lr for lr in self.lrs if self.diverged_lr is None or lr < self.diverged_lr]
        if passed and ten <= min(max(passed), self.max_lr):
            return ten
        return self.min_lr

    def found_no_edge(self) -> bool:
        """The test ran (nearly) to ``max_lr`` without the loss diverging: the curve shows no edge."""
        return bool(self.lrs) and self.lrs[-1] >= 0.9 * self.max_lr

    def result(self) -> dict[str, Any]:
        """The documented ``suggested_lr``/``lrs``/``losses`` plus which method chose it, every rule's answer
        and why it stopped (``diverged_lr``: where, if it diverged). On a curve of fewer than
        :data:`MIN_POINTS` points ``suggested_lr`` is :meth:`fallback_lr` and ``suggested_index`` None."""
        chosen = self.suggest()
        self._result = {
            "suggested_lr": chosen["lr"],
            "method": chosen["method"],
            "capped_at": chosen.get("capped_at"),
            "cap_reason": chosen.get("cap_reason"),
            "rule": self.method,
            "optimizer_family": self.optimizer_family,
            "batch_size": self.batch_size,
            "suggested_index": chosen["index"],
            "suggestions": {m: self.suggest(m)["lr"] for m in METHODS},
            "lrs": list(self.lrs),
            "losses": list(self.losses),
            "smoothed_losses": list(self.smoothed_losses),
            "stop_reason": self.stop_reason,
            "diverged_lr": self.diverged_lr,
            "num_steps_run": len(self.losses),
            "min_lr": self.min_lr,
            "max_lr": self.max_lr,
            "smooth": self.smooth,
            "diverge_factor": self.diverge_factor,
        }
        return self._result

    # -- picture -------------------------------------------------------------------
    def plot(self, path: str | Path, result: dict[str, Any] | None = None) -> Path:
        """Write loss vs LR (log axis), raw and smoothed, with the suggestion marked; returns the path."""
        fig = self.figure(result)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=110)
        return path

    def figure(self, result: dict[str, Any] | None = None) -> Any:
        """The plot as a matplotlib ``Figure``: every rule's suggestion marked, the chosen one in red."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        from diag.log_ticks import plain_log_labels

        res = result or self._result or self.result()
        lrs, raw, smoothed = res["lrs"], res["losses"], res["smoothed_losses"]
        trials = (res.get("verify") or {}).get("trials") or []
        fig = Figure(figsize=(7, 7.5 if trials else 4.5))
        FigureCanvasAgg(fig)
        if trials:
            ax, check = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [3, 2]})
        else:
            ax, check = fig.add_subplot(), None
        if lrs:
            ax.plot(lrs, raw, color="tab:blue", alpha=0.35, linewidth=1, label="loss (raw)")
            ax.plot(lrs, smoothed, color="tab:blue", linewidth=2, label="loss (smoothed)")
            top = max(smoothed[0], np.percentile(smoothed, 90)) * 1.25
            bottom = min(min(raw), min(smoothed))
            ax.set_ylim(bottom - 0.05 * (top - bottom), top)
            styles = {
                "valley": ("o", "tab:green"),
                "steepest": ("s", "tab:orange"),
                "min10": ("^", "tab:purple"),
                "descent": ("D", "tab:brown"),
                "min5": ("X", "tab:pink"),
                "min2": ("v", "tab:olive"),
                "min1": ("P", "tab:cyan"),
            }
            # the chosen rule's own reading too when a cap replaced it
            others = [
                (n, lr)
                for n, lr in res["suggestions"].items()
                if n != res["method"] or res.get("capped_at") or trials
            ]
            for k, (name, lr) in enumerate(others):
                marker, color = styles[name]
                # a reading outside the LRs tested has no loss on the curve: in the legend only
                where = outside_tested(res, lr)
                # hollow, the first one larger: two methods that agree stay visible on one point
                ax.plot(
                    [] if where else [lr],
                    [] if where else [np.interp(np.log(lr), np.log(lrs), smoothed)],
                    marker,
                    color=color,
                    markersize=max(12 - 2 * k, 5),
                    markerfacecolor="none",
                    markeredgewidth=2,
                    label=f"{LABELS.get(name, name)}: {lr:.2e}{where}",
                )
            ax.axvline(
                res["suggested_lr"],
                color="tab:red",
                linestyle="--",
                linewidth=1.5,
                # the rule's label runs long (caps, the check): wrapped, so the legend fits the figure
                label=textwrap.fill(
                    f"suggested: {res['suggested_lr']:.2e} ({rule_label(res)})",
                    60,
                    subsequent_indent="  ",
                ),
            )
            ax.plot(
                [res["suggested_lr"]],
                [np.interp(np.log(res["suggested_lr"]), np.log(lrs), smoothed)],
                "o",
                color="tab:red",
                markersize=9,
            )
            for t in trials:  # where the check trained, on the curve
                ax.axvline(t["lr"], color="0.5", linestyle=":", linewidth=1)
        ax.set_xscale("log")
        plain_log_labels(ax.xaxis)
        ax.set_xlabel("" if check is not None else "learning rate (log scale)")
        ax.set_ylabel("training loss")
        if check is not None:
            self._draw_trials(check, res)
        ax.set_title(
            f"LR range test: {res['num_steps_run']} steps, {res['stop_reason']}", fontsize=9
        )
        ax.grid(True, which="both", alpha=0.3)
        # where the curve and the markers are not: lower left on most curves (low LRs at low loss), but a
        # narrow range's curve falls through that corner at once
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        return fig

    @staticmethod
    def _draw_trials(ax: Any, res: dict[str, Any]) -> None:
        """The check's panel: each candidate's validation loss after its short trial, the diverged ones
        marked at the top, the curve rule's pick and the one suggested."""
        from diag.log_ticks import plain_log_labels

        verify = res["verify"]
        trials = verify["trials"]
        alive = [t for t in trials if learned(t, verify.get("start_score"))]
        scores = [t["score"] for t in alive]
        top = max(scores) * 1.15 if scores else 1.0
        if alive:
            ax.plot(
                [t["lr"] for t in alive],
                scores,
                "o-",
                color="tab:gray",
                label=f"{verify['metric']} after a {verify['steps']}-step trial",
            )
        dead = [t["lr"] for t in trials if t not in alive]
        if dead:
            ax.plot(
                dead,
                [top] * len(dead),
                "x",
                color="black",
                markersize=9,
                label="diverged or learned nothing",
            )
        ax.axvline(
            verify["curve_lr"],
            color="tab:blue",
            linestyle="--",
            linewidth=1,
            label=f"the curve rule's pick: {verify['curve_lr']:.2e}",
        )
        if verify.get("picked_lr") is not None:
            best = next(t for t in alive if t["lr"] == verify["picked_lr"])
            suggested = verify.get("suggested_lr") or best["lr"]
            ax.plot([best["lr"]], [best["score"]], "o", color="tab:red", markersize=10)
            if best["score"] > min(scores):
                why = " (one under the lowest: the one over that broke)"
            elif suggested != best["lr"]:
                why = f" (between the trials; the best trial: {best['lr']:.2e})"
            else:
                why = ""
            ax.axvline(
                suggested,
                color="tab:red",
                linestyle="--",
                linewidth=1.5,
                label=f"suggested: {suggested:.2e}{why}",
            )
        start = verify.get("start_score")
        if start is not None and math.isfinite(start):
            ax.axhline(start, color="0.6", linewidth=1, label=f"untrained: {start:.3g}")
        # log: the candidates' scores sit far under the untrained model's, and their differences matter
        ax.set_yscale("log")
        plain_log_labels(ax.yaxis)
        ax.set_ylabel(f"{verify['metric']} (log scale)")
        ax.set_xlabel("learning rate (log scale)")
        ax.set_title(
            f"the check: {len(trials)} candidates, {verify['steps']} steps each (the run's schedule), "
            f"{verify['seconds']:.1f}s",
            fontsize=9,
        )
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")


def outside_tested(result: dict[str, Any], lr: float) -> str:
    """`` (below the LRs tested)``, `` (above the LRs tested)`` or ``""``: a rule's reading off the curve's
    ends (``minimum/10`` of a minimum within a decade of ``min_lr``) is an LR the test never tried."""
    lrs = result.get("lrs") or []
    if not lrs:
        return ""
    if lr < min(lrs) * (1 - 1e-9):
        return " (below the LRs tested)"
    if lr > max(lrs) * (1 + 1e-9):
        return " (above the LRs tested)"
    return ""


def rule_label(result: dict[str, Any]) -> str:
    """``descent`` or, when ``auto`` chose it, ``auto for sgd: descent`` (what a plot or a log line shows)."""
    method = LABELS.get(result["method"], result["method"])
    if result.get("capped_at"):
        method += f", capped at {result['capped_at']:g} ({result.get('cap_reason') or 'auto'})"
    verify = result.get("verify") or {}
    if verify.get("picked_lr") is not None:
        method += f"; checked by {len(verify['trials'])} short trials"
    elif verify:
        method += "; every checked candidate diverged: the rule's own pick"
    if result.get("rule") == "auto":
        return f"auto for {result.get('optimizer_family') or 'an unknown optimizer'}: {method}"
    return method


def cycle_batches(batches: Iterable[Any]) -> Iterator[Any]:
    """Yield batches forever from a re-iterable (a loader), or until a one-shot iterator ends."""
    while True:
        it = iter(batches)
        produced = False
        for batch in it:
            produced = True
            yield batch
        if not produced or it is batches:
            return


def _inputs_targets(batch: Any) -> tuple[torch.Tensor, Any]:
    """The inputs and targets of one torch-mode batch, or a ``TypeError`` that says which forms work."""
    if isinstance(batch, (tuple, list)) and len(batch) >= 2 and isinstance(batch[0], torch.Tensor):
        return batch[0], batch[1]
    if isinstance(batch, Mapping):
        got = f"a {type(batch).__name__} with keys {sorted(map(str, batch))}"
    elif isinstance(batch, (tuple, list)):
        got = (
            f"a {type(batch).__name__} of {len(batch)} items, the first a {type(batch[0]).__name__}"
            if batch
            else f"an empty {type(batch).__name__}"
        )
    else:
        got = f"a {type(batch).__name__}"
    raise TypeError(
        f"range_test(batches=...): each batch must be an (inputs, targets) tuple or list with the inputs "
        f"as a tensor (what a DataLoader over a TensorDataset yields), got {got}: map other batches "
        "first, e.g. [(b['x'], b['y']) for b in batches]"
    )


def _snapshot(
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    batches: Any,
) -> tuple[TrainingState, list[Any], bool]:
    generator = getattr(batches, "generator", None)
    saved = capture(
        model,
        optimizer,
        scaler=scaler,
        rng=True,
        generator=generator if isinstance(generator, torch.Generator) else None,
    )
    grads = [None if p.grad is None else p.grad.detach().clone() for p in model.parameters()]
    return saved, grads, model.training


def _restore(
    saved: tuple[TrainingState, list[Any], bool],
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    scaler: torch.amp.GradScaler | None,
    batches: Any,
) -> None:
    state, grads, training = saved
    generator = getattr(batches, "generator", None)
    apply(
        state,
        model,
        optimizer,
        scaler=scaler,
        generator=generator if isinstance(generator, torch.Generator) else None,
    )
    for p, g in zip(model.parameters(), grads):
        p.grad = g
    model.train(training)


LRFinder = LearningRateFinder
"""The name other tools give the LR range test (``LRFinder(...).run(train_fn)``)."""
