"""Synthetic training runs with a known problem, to exercise the diagnosis (``simulate_training``).

Each curve starts at ln(10), the cross-entropy of a 10-class model at chance,
and carries multiplicative minibatch noise. Shapes are laid out in fractions
of the run, so they keep their character for any number of steps.
"""

from __future__ import annotations

import math

import numpy as np

from diag.history import TrainingHistory

ISSUES = ("healthy", "lr_high", "lr_low", "overfit", "plateau", "oscillation")
CHANCE_LOSS = math.log(10.0)


def _power_decay(t: np.ndarray, steps: int, floor: float) -> np.ndarray:
    """A loss that keeps falling ever more slowly, as healthy training does."""
    tau = max(1.0, 0.05 * steps)
    return floor + (CHANCE_LOSS - floor) / (1.0 + t / tau) ** 0.8


def simulate_training(issue: str = "healthy", steps: int = 1000, seed: int = 0) -> TrainingHistory:
    """Simulate a run with a given problem and return its :class:`TrainingHistory`.

    ``issue`` is one of healthy, lr_high (explodes to Inf then NaN), lr_low
    (barely moves), overfit (validation rises while training falls), plateau
    (early progress, then flat), oscillation (wide swings, no trend).
    Validation losses are recorded every ``steps // 20`` steps, except for
    lr_high. The same ``seed`` gives the same run.
    """
    if issue not in ISSUES:
        raise ValueError(f"unknown issue {issue!r}; choose one of {', '.join(ISSUES)}")
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 1:
        raise ValueError(f"simulate_training(steps=...): a whole number >= 1, got {steps!r}")
    rng = np.random.default_rng(seed)
    t = np.arange(steps, dtype=np.float64)
    u = t / steps
    noise = np.exp(rng.normal(0.0, 0.05, steps))  # minibatch-to-minibatch variation
    val_noise = np.exp(rng.normal(0.0, 0.01, steps))  # a full validation pass varies much less
    val_every = max(1, steps // 20)
    val = None

    if issue == "healthy":
        lr = np.full(steps, 1e-3)
        smooth = _power_decay(t, steps, floor=0.05)
        loss = smooth * noise
        grad = 2.0 * np.sqrt(smooth / CHANCE_LOSS) * np.exp(rng.normal(0.0, 0.2, steps))
        val = smooth * 1.1 + 0.05
    elif issue == "lr_high":
        lr = np.full(steps, 1.0)
        # A brief dip, then exponential growth that overflows about 40% into the run.
        onset, overflow = 0.05 * steps, 0.4 * steps
        rate = math.log(1e38 / CHANCE_LOSS) / max(1.0, overflow - onset)
        with np.errstate(over="ignore"):
            smooth = np.where(
                t < onset,
                CHANCE_LOSS * (1.0 - 0.3 * t / max(onset, 1.0)),
                0.7 * CHANCE_LOSS * np.exp(rate * (t - onset)),
            )
        loss = smooth * noise
        grad = 5.0 * np.sqrt(smooth) * np.exp(rng.normal(0.0, 0.2, steps))
        loss[loss > 1e38] = np.inf
        grad[grad > 1e38] = np.inf
        first_inf = np.flatnonzero(np.isinf(loss))
        if first_inf.size:  # once Inf, the next update makes the weights NaN
            loss[first_inf[0] + 1 :] = np.nan
            grad[first_inf[0] + 1 :] = np.nan
    elif issue == "lr_low":
        lr = np.full(steps, 1e-7)
        smooth = CHANCE_LOSS * (1.0 - 0.01 * u)
        loss = smooth * np.exp(rng.normal(0.0, 0.01, steps))
        grad = np.full(steps, 1.5) * np.exp(rng.normal(0.0, 0.1, steps))
        val = smooth + 0.02
    elif issue == "overfit":
        lr = np.full(steps, 1e-3)
        smooth = _power_decay(t, steps, floor=0.005)
        loss = smooth * noise
        grad = 2.0 * np.sqrt(smooth / CHANCE_LOSS) * np.exp(rng.normal(0.0, 0.2, steps))
        # Generalisation stalls a quarter of the way in, then validation loss climbs.
        turn = 0.25
        val = (
            _power_decay(np.minimum(t, turn * steps), steps, floor=0.3)
            + 1.5 * np.clip(u - turn, 0, None) ** 1.5
        )
    elif issue == "plateau":
        lr = np.full(steps, 1e-2)
        level = 0.8
        smooth = level + (CHANCE_LOSS - level) * np.exp(-t / max(1.0, 0.05 * steps))
        loss = smooth * noise
        grad = 1.0 * np.exp(rng.normal(0.0, 0.2, steps))
        val = smooth * 1.05
    else:  # oscillation
        lr = np.full(steps, 0.3)
        # an array, unlike plateau's level
        centre = 1.5 + (CHANCE_LOSS - 1.5) * np.exp(-t / max(1.0, 0.05 * steps))
        period = 7.3  # steps; the optimiser overshoots back and forth across a valley
        swing = 0.4 * np.sin(2 * np.pi * t / period + rng.uniform(0, 2 * np.pi)) + rng.normal(
            0.0, 0.15, steps
        )
        loss = centre * np.exp(swing)
        grad = 8.0 * np.exp(swing + rng.normal(0.0, 0.2, steps))
        val = centre * 1.05

    history = TrainingHistory()
    for i in range(steps):
        v = None
        if val is not None and (i + 1) % val_every == 0:
            v = float(val[i] * val_noise[i])
        history.record(
            step=i, loss=float(loss[i]), grad_norm=float(grad[i]), lr=float(lr[i]), val_loss=v
        )
    return history
