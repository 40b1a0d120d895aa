"""``confusion_matrix.png``: which classes the model mixes up on the test split.

Rows are the true classes, columns the predictions; each cell's colour is the share of its row (so a
rare class reads as clearly as a common one) and, for up to 20 classes, the cell shows its count.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from diag.run_files import open_run_file

ANNOTATE_UP_TO = 20  # classes; beyond this the counts would not fit in their cells


def confusion_figure(
    matrix: Sequence[Sequence[float]], class_names: Sequence[str], title: str = ""
):
    """A matplotlib Figure of ``matrix`` (rows true class, columns predicted) labelled with ``class_names``."""
    from matplotlib.figure import Figure

    m = np.asarray(matrix, dtype=float)
    k = m.shape[0]
    names = [str(n) for n in class_names] if len(class_names) == k else [str(i) for i in range(k)]
    rows = m.sum(axis=1, keepdims=True)
    share = np.divide(m, rows, out=np.zeros_like(m), where=rows > 0)
    side = min(max(4.5, 0.5 * k + 2.0), 16.0)
    fig = Figure(figsize=(side + 1.2, side))
    ax = fig.add_subplot()
    im = ax.imshow(share, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.04, label="share of the true class")
    ticks = range(k) if k <= 40 else range(0, k, max(1, k // 20))
    size = 8 if k <= 20 else 6
    rotate = k > 10 or max(map(len, names)) > 3
    ax.set_xticks(
        list(ticks),
        [names[i] for i in ticks],
        rotation=45 if rotate else 0,
        ha="right" if rotate else "center",
        fontsize=size,
    )
    ax.set_yticks(list(ticks), [names[i] for i in ticks], fontsize=size)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    if k <= ANNOTATE_UP_TO:
        for i in range(k):
            for j in range(k):
                if m[i, j]:
                    ax.text(
                        j,
                        i,
                        f"{int(m[i, j])}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if share[i, j] > 0.5 else "black",
                    )
    total = m.sum()
    acc = np.trace(m) / total if total else float("nan")
    ax.set_title(  # y given: placed at the top edge, not after measuring every tick label (nothing is on top)
        title or f"test confusion matrix: {int(total)} examples, accuracy {acc:.3f}",
        fontsize=10,
        y=1.0,
    )
    # Fixed margins sized from the labels, not tight_layout: that lays the figure out by drawing it once
    # more, 40% of the PNG's time, paid at the end of every run.
    longest = max((len(names[i]) for i in ticks), default=1)
    # inches of the longest tick label (DejaVu Sans averages 0.6 em), and its height when rotated 45°
    width = longest * 0.6 * size / 72
    height = (width + size / 72) * 0.71 if rotate else size / 72
    label = 0.4  # an axis label, its pad and the ticks
    fig.subplots_adjust(
        left=(label + width + 0.1) / (side + 1.2),
        right=1 - 0.75 / (side + 1.2),  # the colorbar's tick labels and its label
        bottom=(label + height + 0.1) / side,
        top=1 - 0.4 / side,  # the title
    )
    return fig


def plot_confusion(
    matrix: Sequence[Sequence[float]], class_names: Sequence[str], path: Path, title: str = ""
) -> Path:
    """Draw :func:`confusion_figure` to ``path`` (PNG) and return the path."""
    # a plain Figure: no pyplot import, nothing to close
    fig = confusion_figure(matrix, class_names, title)
    with open_run_file(Path(path), "wb") as fh:  # never through a link planted in the run directory
        fig.savefig(fh, dpi=90, format="png")
    return Path(path)
