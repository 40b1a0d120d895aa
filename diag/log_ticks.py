"""Log-axis tick labels as plain text (``10⁻³``, ``2×10⁻¹``) instead of mathtext (``$10^{-3}$``).

Matplotlib labels log and symlog axes through its TeX-like mathtext engine, whose parser is built on
first use: the first log axis a process draws took ~50 ms more than a linear one here, each later one
~20 ms more, and a run's ``summary.png`` has three. The same labels in Unicode superscripts look the same in
the default font and are laid out as ordinary text. Which ticks carry a label is still matplotlib's choice
(:class:`matplotlib.ticker.LogFormatterSciNotation`); only the string changes.
"""

from __future__ import annotations

import re

import matplotlib as mpl
from matplotlib import ticker
from matplotlib.axis import Axis
from matplotlib.scale import LogTransform, SymmetricalLogTransform

_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")
_EXPONENT = re.compile(r"\^\{(-?\d+)\}")
_MATH = (r"$\mathdefault{", "}$")


def plain_label(label: str) -> str:
    """``$\\mathdefault{2\\times10^{-3}}$`` -> ``2×10⁻³``; a label it does not recognise, unchanged."""
    start, end = _MATH
    if not (label.startswith(start) and label.endswith(end)):
        return label
    body = _EXPONENT.sub(
        lambda m: m.group(1).translate(_SUPERSCRIPT), label[len(start) : -len(end)]
    )
    body = body.replace(r"\times", "×")
    if any(c in body for c in "\\{}^$"):
        return label  # something else mathtext would typeset: left to it
    if body.startswith("-") and mpl.rcParams["axes.unicode_minus"]:
        body = "\N{MINUS SIGN}" + body[1:]
    return body


# a log axis within these values and at most this many decades wide is labelled in decimals: matplotlib
# labels such an axis's minor ticks, as 2×10⁰ 3×10⁰ 4×10⁰, where 2 3 4 (or 0.02 0.05 0.1) read at a glance
DECIMAL_RANGE = (1e-3, 1e4)
DECIMAL_DECADES = 2.0


class PlainLogFormatter(ticker.LogFormatterSciNotation):
    """:class:`~matplotlib.ticker.LogFormatterSciNotation`'s labels, as plain text (see the module); on a
    narrow axis of ordinary numbers (``DECIMAL_RANGE``, ``DECIMAL_DECADES``), the same ticks in decimals."""

    def __call__(self, x: float, pos: int | None = None) -> str:
        label = super().__call__(x, pos)
        if label and self._decimal_axis():
            return f"{x:.6g}"
        return plain_label(label)

    def _decimal_axis(self) -> bool:
        axis = self.axis
        if not isinstance(axis, Axis) or not isinstance(axis.get_transform(), LogTransform):
            return False  # a colorbar's or a dummy axis: matplotlib's own labels
        lo, hi = sorted(axis.get_view_interval())
        low, high = DECIMAL_RANGE
        return low <= lo and hi <= high and hi <= lo * 10**DECIMAL_DECADES


def plain_log_labels(axis: Axis) -> None:
    """Give a log or symlog ``axis`` (after ``set_xscale``/``set_yscale``) plain-text tick labels."""
    transform = axis.get_transform()
    if not isinstance(transform, LogTransform | SymmetricalLogTransform):
        raise ValueError(f"plain_log_labels is for log and symlog axes, not {axis.get_scale()!r}")
    base = transform.base
    axis.set_major_formatter(PlainLogFormatter(base))
    if isinstance(axis.get_minor_formatter(), ticker.LogFormatterSciNotation):
        axis.set_minor_formatter(PlainLogFormatter(base, labelOnlyBase=False))
