"""Log-axis tick labels as plain text: the ticks matplotlib labels, the same values, no mathtext."""

from __future__ import annotations

import matplotlib
import pytest

matplotlib.use("Agg")
from matplotlib.figure import Figure  # noqa: E402

from diag.log_ticks import plain_label, plain_log_labels  # noqa: E402
from diag.series import RunSeries  # noqa: E402
from diag.summary_plot import summary_figure  # noqa: E402


@pytest.mark.parametrize(
    ("mathtext", "plain"),
    [
        (r"$\mathdefault{10^{-3}}$", "10⁻³"),
        (r"$\mathdefault{10^{12}}$", "10¹²"),
        (r"$\mathdefault{2\times10^{-1}}$", "2×10⁻¹"),
        (r"$\mathdefault{0}$", "0"),
        (r"$\mathdefault{-10^{2}}$", "\N{MINUS SIGN}10²"),
        (r"$\mathdefault{10^{0.50}}$", r"$\mathdefault{10^{0.50}}$"),  # not an integer power: kept
        ("", ""),
        ("step", "step"),
    ],
)
def test_plain_label_writes_powers_in_superscripts_and_keeps_what_it_does_not_know(mathtext, plain):
    assert plain_label(mathtext) == plain


def _labels(lo: float, hi: float, scale: str, plain: bool) -> list[tuple[float, str]]:
    """The (position, text) of every labelled tick, major and minor, of a drawn y axis."""
    fig = Figure(figsize=(4, 4))
    ax = fig.add_subplot()
    ax.plot([0, 1], [lo, hi])
    if scale == "symlog":
        ax.set_yscale("symlog", linthresh=lo or 1e-3)
    else:
        ax.set_yscale(scale)
    if plain:
        plain_log_labels(ax.yaxis)
    ax.set_ylim(lo, hi)
    fig.draw_without_rendering()
    ticks = [*ax.yaxis.get_major_ticks(), *ax.yaxis.get_minor_ticks()]
    return [(t.get_loc(), t.label1.get_text()) for t in ticks if t.label1.get_text()]


@pytest.mark.parametrize(
    ("lo", "hi", "scale"),
    [(1e-4, 1e-1, "log"), (1e-6, 1e4, "log"), (0.0, 1e-3, "symlog")],
)
def test_a_plain_axis_labels_the_ticks_matplotlib_labels_with_the_same_values(lo, hi, scale):
    ours, theirs = _labels(lo, hi, scale, plain=True), _labels(lo, hi, scale, plain=False)
    assert ours and [loc for loc, _ in ours] == [loc for loc, _ in theirs]
    assert [text for _, text in ours] == [plain_label(text) for _, text in theirs]
    assert not any("$" in text for _, text in ours)


@pytest.mark.parametrize(("lo", "hi"), [(0.3, 0.9), (1.2, 5.0), (0.01, 0.5), (1e-3, 1e-1)])
def test_a_narrow_log_axis_of_ordinary_numbers_labels_the_same_ticks_in_decimals(lo, hi):
    ours, theirs = _labels(lo, hi, "log", plain=True), _labels(lo, hi, "log", plain=False)
    assert ours and [loc for loc, _ in ours] == [loc for loc, _ in theirs]
    assert [text for _, text in ours] == [f"{loc:.6g}" for loc, _ in ours]


def test_a_narrow_log_axis_reads_2_3_4_and_a_symlog_zero_reads_0():
    narrow = [t for _, t in _labels(1.2, 5.0, "log", plain=True)]
    assert {"2", "3", "4"} <= set(narrow) and not any("×" in t for t in narrow)  # was 2×10⁰ ...
    assert "0.4" in [t for _, t in _labels(0.3, 0.9, "log", plain=True)]
    assert "10⁻²" in [t for _, t in _labels(1e-4, 1e-1, "log", plain=True)]  # 3 decades: powers
    assert "0" in [t for _, t in _labels(0.0, 1e-3, "symlog", plain=True)]


def test_plain_log_labels_refuses_a_linear_axis():
    ax = Figure().add_subplot()
    with pytest.raises(ValueError, match="log and symlog axes, not 'linear'"):
        plain_log_labels(ax.yaxis)


def test_the_summary_figures_log_axes_carry_no_mathtext():
    s = RunSeries(num_classes=10)
    s.initial_loss = 2.3
    s.step = [10, 20, 30, 40]
    s.loss = [2.0, 0.5, 0.05, 0.01]  # spans more than 50x: a log axis
    s.grad_norm = [3.0, 1.0, 0.3, 0.1]
    s.lr = [1e-3, 5e-4, 1e-4, 1e-5]
    fig = summary_figure(s, final_lr=0.0)  # a schedule ending at 0: the symlog LR axis
    fig.draw_without_rendering()
    scales = [ax.get_yscale() for ax in fig.axes[:3]]
    assert scales == ["log", "symlog", "log"]
    for ax in fig.axes[:3]:
        labels = [t.get_text() for t in ax.get_yticklabels(which="both")]
        assert any(labels) and not any("$" in t for t in labels), (ax.get_title(), labels)
