"""``summary.png``: one page a person reads faster than the numbers.

Loss (train samples, validation per epoch), learning rate, global gradient
norm, a layer × step heat map of gradient norms, dead/saturated fractions per
layer, and accuracy; the diagnosis in the title.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from diag.codes import Issue
from diag.run_files import open_run_file
from diag.series import RunSeries

# A loss beyond this multiple of the starting loss is a blow-up: the panel spans start to peak on a log axis.
BLOW_UP = 1e3


def plot_summary(
    series: RunSeries,
    path: Path,
    issues: list[Issue] | None = None,
    annotations: list[tuple[int, str]] | None = None,
    final_lr: float | None = None,
) -> Path:
    """Draw :func:`summary_figure` to ``path`` (PNG) and return the path."""
    fig = summary_figure(series, issues, annotations, final_lr)
    path = Path(path)
    with open_run_file(path, "wb") as fh:  # never through a link planted in the run directory
        fig.savefig(fh, dpi=90, format="png")
    return path


def summary_figure(
    series: RunSeries,
    issues: list[Issue] | None = None,
    annotations: list[tuple[int, str]] | None = None,
    final_lr: float | None = None,
) -> Any:
    """The summary figure of ``series``: panels loss, LR, gradient norm / layer heat map, units, accuracy.

    ``annotations`` are (step, label) pairs, such as the AutoTrainer's actions, drawn as labelled
    vertical lines on the loss and learning-rate panels: what changed the run, where. ``final_lr`` is
    the LR after the last step (a per-epoch schedule sets it after the last sample: a cosine's 0).
    """
    # A plain Figure, not pyplot's: pyplot's backend and figure registry are for windows. The figure is
    # written to a file (its savefig picks Agg for PNG) or shown by the caller, whose backend it leaves
    # alone (this switched it to Agg). Time is the same: after matplotlib.figure, pyplot adds ~15 ms.
    import matplotlib
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from diag.log_ticks import plain_log_labels

    s = series
    # titles at the panels' top edge, where matplotlib would put them (no panel has labels along its
    # top): placing them itself, it measures every tick label of each panel, a tenth of the PNG's time
    with matplotlib.rc_context({"axes.titley": 1.0}):
        fig = Figure(figsize=(15, 8.5))
        axes = fig.subplots(2, 3)
    (ax_loss, ax_lr, ax_gn), (ax_heat, ax_units, ax_acc) = axes

    def finite_xy(x, y):
        x, y = np.asarray(x, float), np.asarray([np.nan if v is None else v for v in y], float)
        n = min(len(x), len(y))
        return x[:n], y[:n]

    x, y = finite_xy(s.step, s.loss)
    ax_loss.plot(x, y, lw=1, label="train (sampled)")
    ex, ev = finite_xy(s.epoch_step, s.epoch_val_loss)
    if ev.size:
        ax_loss.plot(ex, ev, "o-", ms=3, label="validation")
    start = s.initial_loss if s.initial_loss is not None and np.isfinite(s.initial_loss) else None
    if start is not None:
        ax_loss.plot([0], [start], "k*", ms=8, label=f"start {start:.3g}")
    bad = x[~np.isfinite(y)]
    if bad.size:
        ax_loss.axvline(
            bad[0], color="red", ls="--", lw=1, label=f"non-finite from step {int(bad[0])}"
        )
    fin = np.concatenate([y[np.isfinite(y)], ev[np.isfinite(ev)]])
    if fin.size and fin.min() > 0 and fin.max() / fin.min() > 50:
        ax_loss.set_yscale("log")  # a blow-up would flatten everything else on a linear axis
    if start is not None and start > 0 and fin.size and fin.max() > BLOW_UP * start:
        # a blow-up: the whole climb from the start to the peak on one log axis, the start joined to the
        # first sample so the rise is a line, not a jump off the panel
        ax_loss.set_yscale("log")
        first = np.flatnonzero(np.isfinite(y))
        if first.size:
            ax_loss.plot([0, x[first[0]]], [start, y[first[0]]], "k:", lw=1)
        ax_loss.set_ylim(min(start, fin[fin > 0].min()) / 3, fin.max() * 30)
        ax_loss.axhline(start, color="grey", ls=":", lw=0.8)
    if ax_loss.get_yscale() == "log":
        plain_log_labels(ax_loss.yaxis)
    ax_loss.set(title="loss", xlabel="step")
    ax_loss.legend(fontsize=8)

    x, y = finite_xy(s.step, s.lr)
    if final_lr is not None and x.size and np.isfinite(final_lr) and final_lr != y[-1]:
        # the LR the schedule ends at, after the last sample (a per-epoch cosine's final 0)
        ax_lr.plot(
            [x[-1]],
            [final_lr],
            "o",
            color="tab:green",
            ms=4,
            label=f"after the last step: {final_lr:.3g}",
        )
        ax_lr.legend(fontsize=8)
        x, y = np.append(x, x[-1]), np.append(y, final_lr)
    ax_lr.plot(x, y, color="tab:green")
    positive = y[np.isfinite(y) & (y > 0)]
    if positive.size and (y[np.isfinite(y)] <= 0).any():
        # a schedule that ends at 0: log-like above the smallest positive LR, linear down to 0
        ax_lr.set_yscale("symlog", linthresh=float(positive.min()))
        plain_log_labels(ax_lr.yaxis)
        ax_lr.set_ylim(bottom=0)
        ax_lr.text(
            0.02,
            0.02,
            f"linear below {positive.min():.2g} (shows 0)",
            transform=ax_lr.transAxes,
            fontsize=7,
            color="grey",
        )
    elif positive.size:
        ax_lr.set_yscale("log")
        plain_log_labels(ax_lr.yaxis)
    ax_lr.set(title="learning rate", xlabel="step")

    x, y = finite_xy(s.step, s.grad_norm)
    ax_gn.plot(x, y, ".-", color="tab:orange", ms=3)
    if s.skipped_steps:
        for st in s.skipped_steps[:200]:
            ax_gn.axvline(st, color="red", alpha=0.15, lw=1)
        ax_gn.plot(
            [], [], color="red", alpha=0.5, label=f"{len(s.skipped_steps)} skipped steps (NaN/Inf)"
        )
        ax_gn.legend(fontsize=8)
    if np.isfinite(y).any() and np.nanmin(np.where(np.isfinite(y), y, np.nan)) > 0:
        ax_gn.set_yscale("log")
        plain_log_labels(ax_gn.yaxis)
    ax_gn.set(title="global gradient norm (before clipping)", xlabel="step")

    names = list(s.layer_grad_norm)
    n = min((len(v) for v in s.layer_grad_norm.values()), default=0)
    if n:
        m = np.array(
            [
                [
                    v if v is not None and v >= 0 and np.isfinite(v) else np.nan
                    for v in s.layer_grad_norm[k][:n]
                ]
                for k in names
            ]
        )
        steps = s.layer_step[:n] if len(s.layer_step) >= n else list(range(n))
        half = (
            (steps[-1] - steps[0]) / (2 * (n - 1)) if n > 1 else 0
        ) or 0.5  # cells centred on their steps
        with np.errstate(divide="ignore", invalid="ignore"):
            # an exact 0 (no gradient reaches the layer) is -inf: drawn black, below the scale
            logs = np.log10(m)
        finite = logs[np.isfinite(logs)]
        lo, hi = (float(finite.min()), float(finite.max())) if finite.size else (0.0, 1.0)
        # below the scale (imshow would mask -inf as bad, i.e. blank)
        logs[np.isneginf(logs)] = lo - 1.0
        im = ax_heat.imshow(
            logs,
            aspect="auto",
            cmap=colormaps["viridis"].with_extremes(under="black"),
            interpolation="nearest",
            vmin=lo,
            vmax=hi,
            extent=(steps[0] - half, steps[-1] + half, len(names) - 0.5, -0.5),
        )
        ax_heat.set_yticks(range(len(names)), names, fontsize=7)
        fig.colorbar(im, ax=ax_heat, label="log10 gradient norm")
    else:
        ax_heat.text(
            0.5, 0.5, "no per-layer samples", ha="center", va="center", transform=ax_heat.transAxes
        )
    ax_heat.set(
        title="grad norm by layer, input on top\n(black = 0, blank = NaN/Inf)", xlabel="step"
    )

    plotted = False
    for name, values in s.layer_dead_fraction.items():
        if np.isfinite(np.asarray(values, float)).any():
            label = f"dead {name}"
            ax_units.plot(s.layer_step[: len(values)], values, ".-", ms=3, label=label)
            plotted = True
    for name, values in s.layer_saturation.items():
        label = f"saturated {name}"
        ax_units.plot(s.layer_step[: len(values)], values, ls="--", label=label)
        plotted = True
    ax_units.set(title="unit health (fraction of units)", xlabel="step", ylim=(-0.02, 1.02))
    if plotted:
        ax_units.legend(fontsize=7)
    else:
        ax_units.text(
            0.5,
            0.5,
            "no activation samples",
            ha="center",
            va="center",
            transform=ax_units.transAxes,
        )

    ex, ta = finite_xy(s.epoch_step, s.epoch_train_acc)
    ax_acc.plot(ex, ta, "o-", ms=3, label="train")
    ex, va = finite_xy(s.epoch_step, s.epoch_val_acc)
    ax_acc.plot(ex, va, "o-", ms=3, label="validation")
    if s.num_classes:
        ax_acc.axhline(1 / s.num_classes, color="grey", ls=":", label="chance")
    ax_acc.set(title="accuracy", xlabel="step", ylim=(0, 1.02))
    ax_acc.legend(fontsize=8)

    if s.step:  # every panel on the run's step axis, so a change in one lines up with the others
        for ax in (ax_heat, ax_units, ax_acc):
            ax.set_xlim(ax_loss.get_xlim())
    for ax in (ax_loss, ax_lr):
        lo, hi = ax.get_xlim()
        for k, (step, label) in enumerate(annotations or []):
            ax.axvline(step, color="tab:purple", ls=":", lw=1.2)
            # near the right edge: label to the left of the line
            right = step > lo + 0.8 * (hi - lo)
            ax.annotate(
                label,
                (step, 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(-2 if right else 2, -10 - 9 * (k % 3)),
                textcoords="offset points",
                fontsize=7,
                color="tab:purple",
                ha="right" if right else "left",
            )

    issues = issues or []
    title = (
        "healthy: no issues found"
        if not issues
        else "; ".join(f"{i.code} ({i.severity})" for i in issues)
    )
    fig.suptitle(
        title,
        color="black"
        if not issues
        else ("red" if any(i.severity == "critical" for i in issues) else "darkorange"),
        fontsize=13,
    )
    # Fixed margins, not tight_layout: that lays the figure out by drawing it once more, which took as
    # long as drawing it for the PNG (the left margin makes room for the heat map's layer names).
    longest = max(map(len, names), default=0)
    fig.subplots_adjust(
        left=max(0.045, 0.012 + 0.0042 * longest),
        right=0.985,
        top=0.91,
        bottom=0.07,
        wspace=0.22,
        hspace=0.32,
    )
    return fig
